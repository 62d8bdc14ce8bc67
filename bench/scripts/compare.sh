#!/usr/bin/env bash
# Compares two builds of shardlogd in one sitting: one node, --flush always, 1 KiB
# records, one partition, in three shapes, each run COMPARE_ROUNDS times alternating
# between the builds, the pair's order swapped every round (A B, B A, ...), so that the
# disk's drift hits both alike.
#
#   bench/scripts/compare.sh BEFORE_BIN_DIR AFTER_BIN_DIR [OUT_DIR]
#
#   record-256: 1 record per request, 256 in flight, one producer
#   record-1:   1 record per request, 1 in flight (unloaded latency)
#   batched:    100 records per request, 4 producers x 8 in flight
#
# Each BIN_DIR holds shardlogd and shardlog-bench. The load comes from AFTER's
# shardlog-bench for both servers, so that only the server differs (a 2x gap at 1 in
# flight once came from which client ran, not from the server);
# COMPARE_CLIENT=own gives each server its own build's client instead (for a BEFORE
# whose protocol the newer client no longer speaks). Environment: COMPARE_SECONDS (per
# run, default 10), COMPARE_ROUNDS (default 3), COMPARE_CLIENT (after). Prints the
# median of each shape per build and the ratio AFTER / BEFORE.
set -euo pipefail

before="$(cd "$1" && pwd)"
after="$(cd "$2" && pwd)"
out="${3:-target/bench-compare}"
seconds="${COMPARE_SECONDS:-10}"
rounds="${COMPARE_ROUNDS:-3}"
client_from="${COMPARE_CLIENT:-after}"
case "$client_from" in after | own) ;; *) echo "COMPARE_CLIENT: after or own" >&2; exit 2 ;; esac
mkdir -p "$out"
out="$(cd "$out" && pwd)"

server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$out/data"
}
trap cleanup EXIT

start_server() { # bin_dir, log; sets $server_pid and $brokers
  rm -rf "$out/data"
  mkdir -p "$out/data"
  # Builds with a Kafka listener get a free port for it (older ones have no such flag).
  local kafka=()
  if "$1/shardlogd" --help | grep -q -- --kafka-listen; then kafka=(--kafka-listen 127.0.0.1:0); fi
  if "$1/shardlogd" --help | grep -q -- --admin-listen; then kafka+=(--admin-listen 127.0.0.1:0); fi
  "$1/shardlogd" --data-dir "$out/data" --listen 127.0.0.1:0 "${kafka[@]}" --flush always 2> "$2" &
  server_pid=$!
  brokers=""
  for _ in $(seq 300); do
    brokers="$(sed -n 's/.*shardlogd ready: listening on \([^ "]*\).*/\1/p' "$2" | tail -n 1)"
    [ -n "$brokers" ] && return 0
    kill -0 "$server_pid" 2>/dev/null || { echo "shardlogd exited; see $2" >&2; exit 1; }
    sleep 0.1
  done
  echo "shardlogd not ready after 30 s; see $2" >&2
  exit 1
}

stop_server() {
  kill -TERM "$server_pid"
  wait "$server_pid" || true
  server_pid=""
}

shape_args() {
  case "$1" in
    record-256) echo "--batch-records 1 --producers 1 --inflight 256" ;;
    record-1) echo "--batch-records 1 --producers 1 --inflight 1" ;;
    batched) echo "--batch-records 100 --producers 4 --inflight 8" ;;
  esac
}

for round in $(seq "$rounds"); do
  # Odd rounds run the before build first, even rounds the after build: whichever runs
  # second in a pair met a disk the first had just written to (A B B A ...).
  order="before after"; [ $((round % 2)) -eq 0 ] && order="after before"
  for shape in record-256 record-1 batched; do
    for side in $order; do
      bin="$before"; [ "$side" = after ] && bin="$after"
      client="$after"; [ "$client_from" = own ] && client="$bin"
      name="$shape-$side-$round"
      start_server "$bin" "$out/$name.log"
      # shellcheck disable=SC2046
      "$client/shardlog-bench" produce --brokers "$brokers" --topic compare --partitions 1 \
        --record-size 1024 --duration "$seconds" $(shape_args "$shape") \
        --json "$out/$name.json" > "$out/$name.txt" 2> "$out/$name.err"
      stop_server
      echo "== $name: $(sed -n 3p "$out/$name.txt")" >&2
    done
  done
done

python3 - "$out" "$rounds" <<'PY'
import json, os, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def runs(shape, side):
    found = []
    for r in range(1, rounds + 1):
        p = json.load(open(os.path.join(out, f"{shape}-{side}-{r}.json")))["produce"]
        found.append((p["records_per_s"], p["mib_per_s"], p["latency_us"]["p50"], p["latency_us"]["p99"]))
    return found
print(f"{'shape':<11} {'side':<7} {'rec/s':>10} {'MiB/s':>8} {'p50 us':>8} {'p99 us':>8}   (median of {rounds})")
for shape in ["record-256", "record-1", "batched"]:
    med = {}
    for side in ["before", "after"]:
        rs = runs(shape, side)
        med[side] = [statistics.median(col) for col in zip(*rs)]
        rate, mib, p50, p99 = med[side]
        print(f"{shape:<11} {side:<7} {rate:>10.0f} {mib:>8.1f} {p50:>8.0f} {p99:>8.0f}")
    print(f"{shape:<11} {'ratio':<7} {med['after'][0] / med['before'][0]:>10.3f} "
          f"{'':>8} {med['after'][2] / med['before'][2]:>8.3f} {med['after'][3] / med['before'][3]:>8.3f}")
PY
