#!/usr/bin/env bash
# What spooling request bodies costs: uploads of SIZE_MB through the proxy
# with bodies spooled to disk (the default) and streamed to the backend
# (request_spool_limit: 0), alternating, ROUNDS times each; medians and
# their ratio. Run by hand: benches/upload.sh [SIZE_MB] [ROUNDS]
# Needs curl; builds the release proxy and the example app.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${1:-64}
ROUNDS=${2:-5}
cargo build --release --bin swiftiply --example app >/dev/null 2>&1
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
head -c $((SIZE_MB << 20)) /dev/urandom >"$work/body"

start() { # name, extra config line -> sets PORT_<name>
  local name=$1 extra=$2
  cat >"$work/$name.yml" <<EOF
cluster_address: 127.0.0.1
cluster_port: 0
request_spool_directory: $work
$extra
map:
  - incoming: a
    default: true
    outgoing: 127.0.0.1:0
EOF
  target/release/swiftiply "$work/$name.yml" 2>"$work/$name.log" &
  pids+=($!)
  for _ in $(seq 100); do grep -q ready "$work/$name.log" && break; sleep 0.05; done
  local client backend
  client=$(sed -n 's/.*clients listening on //p' "$work/$name.log")
  backend=$(sed -n 's/.*backends listening on //p' "$work/$name.log")
  SWIFTIPLY=$backend target/release/examples/app --connections 4 >/dev/null 2>&1 &
  pids+=($!)
  eval "ADDR_$name=$client"
}
start spooled ""
start streamed "request_spool_limit: 0"
sleep 0.5

declare -a t_spooled t_streamed
for r in $(seq "$ROUNDS"); do
  for name in spooled streamed; do
    addr_var=ADDR_$name
    t=$(curl -s -o /dev/null -w '%{time_total}' --data-binary @"$work/body" \
      -H 'Expect:' "http://${!addr_var}/echo")
    eval "t_$name+=($t)"
  done
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ms=$(median "${t_spooled[@]}")
mt=$(median "${t_streamed[@]}")
echo "upload of $SIZE_MB MiB to /echo (and back), median of $ROUNDS:"
echo "  spooled:  ${ms} s  (all: ${t_spooled[*]})"
echo "  streamed: ${mt} s  (all: ${t_streamed[*]})"
awk -v a="$ms" -v b="$mt" 'BEGIN { printf "  spooled / streamed: %.2f\n", a / b }'
