#!/usr/bin/env bash
# Static-file throughput, run by hand (never by the test suite): Swiftiply
# serving a `docroot` against nginx serving the same directory, one worker
# each (Swiftiply is one thread; nginx gets `worker_processes 1`), loaded by
# wrk over loopback with keep-alive, in the same run, in alternating rounds
# (odd rounds Swiftiply first, even rounds nginx first).
#
#   benches/static.sh [ROUNDS] [SECONDS] [CONNECTIONS] [BIG_CONNECTIONS]
#
# Measures small-file requests/s (a 2 KiB .html file) and GB/s (10^9 bytes/s)
# for a 1 MiB file; prints every round and a table of medians with the ratio
# Swiftiply / nginx. With 2+ CPUs and taskset, both servers run on CPU 0 and
# wrk on the others.
#
# Needs: wrk, nginx (Debian: apt-get install wrk nginx-light), curl.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
secs=${2:-5}
conns=${3:-50}
bigconns=${4:-10}

nginx_bin=$(command -v nginx || true)
[ -z "$nginx_bin" ] && [ -x /usr/sbin/nginx ] && nginx_bin=/usr/sbin/nginx
missing=()
command -v wrk >/dev/null || missing+=(wrk)
[ -n "$nginx_bin" ] || missing+=(nginx-light)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    echo "benches/static.sh needs: ${missing[*]} (Debian: apt-get install ${missing[*]})" >&2
    exit 1
fi

cargo build --release --quiet --bin swiftiply

dir=$(mktemp -d)
proxy_pid=""
nginx_pid=""
cleanup() {
    set +e
    for pid in "$proxy_pid" "$nginx_pid"; do
        [ -n "$pid" ] || continue
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The files: the same directory for both servers. nginx's worker may run as
# an unprivileged user when started by root: let everyone read.
www="$dir/www"
mkdir -p "$www"
head -c 1536 /dev/urandom | base64 -w 76 > "$www/small.html" # about 2 KiB
head -c $((1 << 20)) /dev/urandom > "$www/big.bin"
chmod 755 "$dir" "$www"
chmod 644 "$www"/*

# CPU placement.
ncpu=$(nproc)
server_cpu=()
client_cpu=()
wrk_threads=1
if [ "$ncpu" -ge 2 ] && command -v taskset >/dev/null; then
    server_cpu=(taskset -c 0)
    client_cpu=(taskset -c "1-$((ncpu - 1))")
    wrk_threads=$(( ncpu - 1 > 4 ? 4 : ncpu - 1 ))
fi

# Swiftiply.
cat > "$dir/swiftiply.yml" <<YAML
cluster_address: 127.0.0.1
cluster_port: 0
logger: {log_level: 1}
map:
  - incoming: bench.test
    outgoing: 127.0.0.1:0
    default: true
    docroot: $www
YAML
"${server_cpu[@]}" target/release/swiftiply "$dir/swiftiply.yml" 2> "$dir/swiftiply.log" &
proxy_pid=$!
for _ in $(seq 200); do grep -q "swiftiply: ready" "$dir/swiftiply.log" && break; sleep 0.05; done
grep -q "swiftiply: ready" "$dir/swiftiply.log" || { cat "$dir/swiftiply.log" >&2; exit 1; }
sw_addr=$(sed -n 's/^swiftiply: clients listening on //p' "$dir/swiftiply.log" | head -1)

# nginx, on a free port.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ng_port=18080
while ! port_free "$ng_port"; do ng_port=$((ng_port + 1)); done
mkdir -p "$dir/ngx"
cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 100000000;
    keepalive_timeout 65;
    etag on;
    client_body_temp_path $dir/ngx/body;
    proxy_temp_path $dir/ngx/proxy;
    fastcgi_temp_path $dir/ngx/fastcgi;
    uwsgi_temp_path $dir/ngx/uwsgi;
    scgi_temp_path $dir/ngx/scgi;
    types { text/html html; application/octet-stream bin; }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$ng_port;
        root $www;
    }
}
CONF
"${server_cpu[@]}" "$nginx_bin" -p "$dir/ngx" -e "$dir/nginx-error.log" -c "$dir/nginx.conf" \
    > "$dir/nginx.out" 2>&1 &
nginx_pid=$!
ng_addr="127.0.0.1:$ng_port"

# Both must serve the same bytes before anything is measured.
for addr in "$sw_addr" "$ng_addr"; do
    ok=""
    for _ in $(seq 100); do
        if curl -sf -o /dev/null "http://$addr/small.html"; then ok=1; break; fi
        sleep 0.05
    done
    [ -n "$ok" ] || { echo "no answer from $addr" >&2; cat "$dir"/*.log >&2; exit 1; }
    for f in small.html big.bin; do
        if ! curl -sf "http://$addr/$f" | cmp -s - "$www/$f"; then
            echo "$addr serves a different $f" >&2
            exit 1
        fi
    done
done

# One wrk run; prints requests/s. Complains about errors and non-2xx answers.
wrk_rps() { # ADDR PATH CONNECTIONS SECONDS
    local out
    out=$("${client_cpu[@]}" wrk -t"$wrk_threads" -c"$3" -d"$4s" "http://$1$2")
    if grep -qE "Non-2xx|Socket errors" <<<"$out"; then
        echo "warning: wrk against $1$2 reported: $(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr -s ' ')" >&2
    fi
    awk '/^Requests\/sec:/ {print $2}' <<<"$out"
}

median() {
    printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {
        if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

echo "== warm-up"
for addr in "$sw_addr" "$ng_addr"; do
    wrk_rps "$addr" /small.html "$conns" 1 >/dev/null
    wrk_rps "$addr" /big.bin "$bigconns" 1 >/dev/null
done

sw_small=(); ng_small=(); sw_big=(); ng_big=()
echo "== $rounds rounds of ${secs}s per measurement; $conns connections (small), $bigconns (1 MiB); wrk -t$wrk_threads"
printf '%-6s %-10s %14s %12s\n' round server "small req/s" "1 MiB GB/s"
for r in $(seq "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then order=(swiftiply nginx); else order=(nginx swiftiply); fi
    for who in "${order[@]}"; do
        if [ "$who" = swiftiply ]; then addr=$sw_addr; else addr=$ng_addr; fi
        small=$(wrk_rps "$addr" /small.html "$conns" "$secs")
        big_rps=$(wrk_rps "$addr" /big.bin "$bigconns" "$secs")
        gbs=$(awk -v r="$big_rps" 'BEGIN { printf "%.3f", r * 1048576 / 1e9 }')
        printf '%-6s %-10s %14s %12s\n' "$r" "$who" "$small" "$gbs"
        if [ "$who" = swiftiply ]; then sw_small+=("$small"); sw_big+=("$gbs")
        else ng_small+=("$small"); ng_big+=("$gbs"); fi
    done
done

ms=$(median "${sw_small[@]}"); mn=$(median "${ng_small[@]}")
bs=$(median "${sw_big[@]}"); bn=$(median "${ng_big[@]}")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo
echo "== medians over $rounds rounds ($(nproc) CPUs; servers pinned: ${server_cpu[*]:-no})"
printf '%-26s %12s %12s %10s\n' "" swiftiply nginx ratio
printf '%-26s %12.0f %12.0f %10s\n' "2 KiB file, requests/s" "$ms" "$mn" "$(ratio "$ms" "$mn")"
printf '%-26s %12.3f %12.3f %10s\n' "1 MiB file, GB/s" "$bs" "$bn" "$(ratio "$bs" "$bn")"
echo "swiftiply peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$proxy_pid/status)"
