#!/usr/bin/env bash
# Quick throughput check, run by hand (never by the test suite): the example
# app served directly as a plain HTTP server, then the same app as a
# Swiftiply backend behind the proxy, both loaded by wrk over loopback.
#
#   benches/smoke.sh [SECONDS] [CONNECTIONS] [BACKEND_CONNECTIONS]
#
# Needs wrk (Debian: apt-get install wrk). Prints wrk's summary for each and
# the proxy's resident memory at rest and after its run.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}; conns=${2:-50}; backends=${3:-8}
command -v wrk >/dev/null || { echo "benches/smoke.sh needs wrk (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet --bin swiftiply --example app

dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT

echo "== the example app directly (plain HTTP, a thread per connection)"
target/release/examples/app --listen 127.0.0.1:0 2> "$dir/direct.log" &
direct=$!
for _ in $(seq 100); do grep -q "serving plain HTTP on" "$dir/direct.log" && break; sleep 0.05; done
addr=$(sed -n 's/^app: serving plain HTTP on //p' "$dir/direct.log")
wrk -t1 -c"$conns" -d"${secs}s" --latency "http://$addr/hello"
kill $direct; wait $direct 2>/dev/null || true

echo "== through swiftiply ($backends backend connections)"
cat > "$dir/bench.yml" <<YAML
cluster_address: 127.0.0.1
cluster_port: 0
logger: {log_level: 1}
map:
  - incoming: bench.test
    outgoing: 127.0.0.1:0
    default: true
YAML
target/release/swiftiply "$dir/bench.yml" 2> "$dir/proxy.log" &
proxy=$!
for _ in $(seq 100); do grep -q "swiftiply: ready" "$dir/proxy.log" && break; sleep 0.05; done
client=$(sed -n 's/^swiftiply: clients listening on //p' "$dir/proxy.log")
backend=$(sed -n 's/^swiftiply: section 0 backends listening on //p' "$dir/proxy.log")
SWIFTIPLY=$backend target/release/examples/app --connections "$backends" 2>/dev/null &
for _ in $(seq 100); do curl -sf "http://$client/hello" >/dev/null 2>&1 && break; sleep 0.05; done
echo "proxy RSS at rest: $(awk '/VmRSS/ {print $2, $3}' /proc/$proxy/status)"
wrk -t1 -c"$conns" -d"${secs}s" --latency "http://$client/hello"
echo "proxy RSS after:   $(awk '/VmRSS/ {print $2, $3}' /proc/$proxy/status)"
echo "proxy peak RSS:    $(awk '/VmHWM/ {print $2, $3}' /proc/$proxy/status)"
