#!/usr/bin/env bash
# The primary's hop against the shared socket, on the Starlette sample app, 2 workers: rr, least-conn and shared
# with keep-alive and with a new connection per request, in alternating rounds so that drift of the machine falls
# on all three; then the medians and each round's ratio to shared. Needs wrk and clusterrun on PATH.
# Usage: bash bench/rr_vs_shared.sh [ROUNDS] [SECONDS]
set -euo pipefail
rounds=${1:-5}
seconds=${2:-5}
cd "$(dirname "$0")/../sample_apps"
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
for round in $(seq "$rounds"); do
  for policy in rr least-conn shared; do
    log="$logs/$policy.log"
    clusterrun starlette_app:app --workers 2 --port 0 --policy "$policy" >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do grep -q "ready:" "$log" && break; sleep 0.1; done  # bounded: 10 s
    url=$(grep -o 'http://127.0.0.1:[0-9]*' "$log" | head -1)
    keep_alive=$(wrk -t1 -c64 -d"${seconds}s" "$url/" | awk '/Requests\/sec/{print $2}')
    close=$(wrk -t1 -c64 -d"${seconds}s" -H "Connection: close" "$url/" | awk '/Requests\/sec/{print $2}')
    echo "round $round $policy keep-alive $keep_alive close $close" | tee -a "$logs/rounds"
    kill -TERM "$pid"
    wait "$pid" || true
  done
done
python3 - "$logs/rounds" <<'PY'
import statistics, sys
runs = {}  # (policy, load) -> req/s per round
for line in open(sys.argv[1]):
    _, _, policy, _, keep_alive, _, close = line.split()
    runs.setdefault((policy, "keep-alive"), []).append(float(keep_alive))
    runs.setdefault((policy, "close"), []).append(float(close))
for load in ("keep-alive", "close"):
    shared = runs["shared", load]
    for policy in ("rr", "least-conn"):
        mine = runs[policy, load]
        rounds = " ".join(f"{a / b:.2f}" for a, b in zip(mine, shared))
        print(f"{load:10} {policy:10} median {statistics.median(mine):8,.0f} req/s, shared {statistics.median(shared):8,.0f}:"
              f" {statistics.median(mine) / statistics.median(shared):.2f}  (each round: {rounds})")
PY
