#!/usr/bin/env bash
# Worker scaling, run by hand (never by the test suite): small responses
# (GET /hello, 13 bytes, keep-alive) through Swiftiply with `workers: N` for
# each N given, and through HAProxy with `nbthread N` when it is installed,
# in alternating rounds.
#
#   benches/workers.sh [ROUNDS] [SECONDS] [WORKER COUNTS...]
#   benches/workers.sh 3 5 1 2 4 8
#
# CPU layout: on a machine with at least 8 CPUs the proxy gets the first
# max(N) CPUs, the backend (the example app, 8 connections per worker) the
# next half of what is left and wrk the rest; on smaller machines nothing is
# pinned and every process shares every CPU, so the figures say little about
# scaling. Load: 50 connections per worker, wrk threads = CPUs it has.
#
# Needs wrk (Debian: wrk); HAProxy (Debian: haproxy) is optional. Set
# SWIFTIPLY_BIN, APP_BIN, WRK or HAPROXY to use prebuilt programs instead of
# building them here.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}; secs=${2:-5}; shift $(( $# >= 2 ? 2 : $# ))
counts=("$@"); [ ${#counts[@]} -gt 0 ] || counts=(1 2)
wrk=${WRK:-wrk}; haproxy=${HAPROXY:-haproxy}
command -v "$wrk" >/dev/null || { echo "benches/workers.sh needs wrk (apt-get install wrk)" >&2; exit 1; }
command -v "$haproxy" >/dev/null || { echo "haproxy not found: Swiftiply only (apt-get install haproxy)"; haproxy=""; }
if [ -z "${SWIFTIPLY_BIN:-}" ] || [ -z "${APP_BIN:-}" ]; then
    cargo build --release --quiet --bin swiftiply --example app
fi
swiftiply=${SWIFTIPLY_BIN:-target/release/swiftiply}
app=${APP_BIN:-target/release/examples/app}

max=0; for n in "${counts[@]}"; do [ "$n" -gt "$max" ] && max=$n; done
cpus=$(nproc)
if [ "$cpus" -ge 8 ] && [ "$max" -lt $((cpus - 2)) ]; then
    left=$((cpus - max)); backend_n=$((left / 2)); wrk_n=$((left - backend_n))
    proxy_cpus="0-$((max - 1))"
    backend_cpus="$max-$((max + backend_n - 1))"
    wrk_cpus="$((max + backend_n))-$((cpus - 1))"
    pin() { exec taskset -c "$1" "${@:2}"; } # always run in a subshell (&, $(...))
else
    proxy_cpus="all"; backend_cpus="all"; wrk_cpus="all"; wrk_n=$cpus
    pin() { exec "${@:2}"; }
fi
echo "machine: $cpus CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
echo "CPUs: proxy $proxy_cpus, backend $backend_cpus, wrk $wrk_cpus; $rounds rounds of ${secs}s"

dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

wait_for() { # FILE PATTERN
    for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
    echo "timed out waiting for '$2' in $1:" >&2; cat "$1" >&2; exit 1
}
wait_http() { # HOST:PORT (bash's /dev/tcp, so curl is not needed)
    for _ in $(seq 200); do
        if exec 3<>"/dev/tcp/${1%:*}/${1##*:}" 2>/dev/null; then
            printf 'GET /hello HTTP/1.0\r\nHost: bench.test\r\n\r\n' >&3
            status=$(head -c 12 <&3 || true); exec 3<&-
            [ "$status" = "HTTP/1.1 200" ] && return 0
        fi
        sleep 0.05
    done
    echo "no answer from $1" >&2; exit 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# One Swiftiply and one HAProxy per worker count, all started up front.
declare -A target proc
for n in "${counts[@]}"; do
    cat > "$dir/s$n.yml" <<YAML
cluster_address: 127.0.0.1
cluster_port: 0
workers: $n
cpu_affinity: $([ "$proxy_cpus" = all ] && echo false || echo true)
logger: {log_level: 0}
map:
  - incoming: bench.test
    outgoing: 127.0.0.1:0
    default: true
YAML
    pin "$proxy_cpus" "$swiftiply" "$dir/s$n.yml" 2> "$dir/s$n.log" &
    pids+=($!); proc["swiftiply/$n"]=$!
    wait_for "$dir/s$n.log" "swiftiply: ready"
    client=$(sed -n 's/^swiftiply: clients listening on //p' "$dir/s$n.log")
    backend=$(sed -n 's/^swiftiply: section 0 backends listening on //p' "$dir/s$n.log")
    pin "$backend_cpus" "$app" --swiftiply "$backend" --connections $((8 * n)) 2>/dev/null &
    pids+=($!)
    wait_http "$client"
    target["swiftiply/$n"]=$client
done
if [ -n "$haproxy" ]; then
    pin "$backend_cpus" "$app" --listen 127.0.0.1:0 2> "$dir/direct.log" &
    pids+=($!)
    wait_for "$dir/direct.log" "serving plain HTTP on"
    direct=$(sed -n 's/^app: serving plain HTTP on //p' "$dir/direct.log")
    for n in "${counts[@]}"; do
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo $((41000 + n)))
        cat > "$dir/h$n.cfg" <<CFG
global
  nbthread $n
  maxconn 4000
  $([ "$proxy_cpus" = all ] || echo "cpu-map auto:1/1-$n 0-$((n - 1))")
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend f
  bind 127.0.0.1:$port
  default_backend b
backend b
  server app $direct maxconn $((8 * n))
CFG
        pin "$proxy_cpus" "$haproxy" -f "$dir/h$n.cfg" -db 2> "$dir/h$n.log" &
        pids+=($!); proc["haproxy/$n"]=$!
        wait_http "127.0.0.1:$port"
        target["haproxy/$n"]="127.0.0.1:$port"
    done
fi

names=()
for n in "${counts[@]}"; do
    names+=("swiftiply/$n")
    [ -n "$haproxy" ] && names+=("haproxy/$n")
done
for r in $(seq "$rounds"); do
    for name in "${names[@]}"; do
        n=${name#*/}
        threads=$(( wrk_n < 2 * n ? wrk_n : 2 * n ))
        before=$(cpu_ticks "${proc[$name]}")
        out=$(pin "$wrk_cpus" "$wrk" -t"$threads" -c$((50 * n)) -d"${secs}s" --latency "http://${target[$name]}/hello")
        used=$(( $(cpu_ticks "${proc[$name]}") - before ))
        rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
        p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
        bad=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print "errors"}' | head -1)
        cpu=$(awk -v t="$used" -v s="$secs" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.0f%%", 100 * t / hz / s}')
        echo "round $r $name $rps p99=$p99 proxy-cpu=$cpu $bad" | tee -a "$dir/results"
    done
done

echo
printf '%-14s %12s %12s %12s %10s\n' target "req/s median" min max "vs N=1"
declare -A med
for name in "${names[@]}"; do
    vals=$(awk -v n="$name" '$3 == n {print $4}' "$dir/results" | sort -n)
    count=$(echo "$vals" | wc -l)
    m=$(echo "$vals" | sed -n "$(( (count + 1) / 2 ))p")
    med[$name]=$m
    base=${med[${name%/*}/${counts[0]}]}
    printf '%-14s %12.0f %12.0f %12.0f %9.2fx\n' "$name" "$m" "$(echo "$vals" | head -1)" \
        "$(echo "$vals" | tail -1)" "$(awk -v a="$m" -v b="$base" 'BEGIN {print a / b}')"
done
