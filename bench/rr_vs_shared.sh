#!/usr/bin/env bash
# rr against shared on the Starlette sample app: keep-alive and a new connection per request,
# five alternating rounds, so that drift of the machine falls on both. Needs wrk and clusterrun on PATH.
# Usage: bash bench/rr_vs_shared.sh [ROUNDS] [SECONDS]
set -euo pipefail
rounds=${1:-5}
seconds=${2:-5}
cd "$(dirname "$0")/../sample_apps"
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
for round in $(seq "$rounds"); do
  for policy in rr shared; do
    log="$logs/$policy.log"
    clusterrun starlette_app:app --workers 2 --port 0 --policy "$policy" >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do grep -q "ready:" "$log" && break; sleep 0.1; done  # bounded: 10 s
    url=$(grep -o 'http://127.0.0.1:[0-9]*' "$log" | head -1)
    keep_alive=$(wrk -t1 -c64 -d"${seconds}s" "$url/" | awk '/Requests\/sec/{print $2}')
    close=$(wrk -t1 -c64 -d"${seconds}s" -H "Connection: close" "$url/" | awk '/Requests\/sec/{print $2}')
    echo "round $round $policy keep-alive $keep_alive close $close"
    kill -TERM "$pid"
    wait "$pid" || true
  done
done
