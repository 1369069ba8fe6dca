#!/usr/bin/env bash
# POST /v1/check throughput over loopback: a release permsync with the demo data,
# loaded by wrk (Debian's package) with an admin token. Both share this machine.
#   bench/scripts/check_throughput.sh [DURATION] [CONNECTIONS]
# PIN=1 gives each its own core: the server on CPU 0, wrk (one thread) on CPU 1, so
# neither preempts the other (their sharing both cores is what makes the p99 tail).
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-20s}
connections=${2:-32}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cargo build --release -q -p permsync
bin=target/release/permsync
dir=$(mktemp -d)
db="sqlite://$dir/bench.db"
port=${PORT:-17080}
server_cpu=() load_cpu=() threads=2
if [ "${PIN:-0}" = 1 ]; then server_cpu=(taskset -c 0) load_cpu=(taskset -c 1) threads=1; fi
"${server_cpu[@]}" "$bin" serve --demo --db "$db" --addr "127.0.0.1:$port" >"$dir/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
TOKEN=$("$bin" token admin --ttl 3600 --db "$db") \
  "${load_cpu[@]}" wrk -t"$threads" -c"$connections" -d"$duration" --latency -s bench/scripts/check.lua "http://127.0.0.1:$port/v1/check"
