#!/usr/bin/env bash
# The connection bounds of a release permsync (protocol §5), from a second process
# on loopback: how long the server takes to shed COUNT silent sockets (default
# 10,000; the header timeout, 10 s by default, closes them) and whether /healthz
# answers meanwhile; then SIGTERM-to-exit while clients hold a half-sent head, a
# half-sent POST body and two stalled event streams.
#   bench/scripts/connection_bounds.sh [COUNT]
set -euo pipefail
cd "$(dirname "$0")/../.."
count=${1:-10000}
cargo build --release -q -p permsync -p permsync-bench --bin permsync --bin conn_bounds
bin=target/release/permsync
dir=$(mktemp -d)
port=${PORT:-17081}
"$bin" serve --demo --db "sqlite://$dir/bench.db" --addr "127.0.0.1:$port" >"$dir/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
target/release/conn_bounds shed "127.0.0.1:$port" "$count"
kill $server; wait $server 2>/dev/null || true
target/release/conn_bounds sigterm "$bin"
