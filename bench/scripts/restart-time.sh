#!/usr/bin/env bash
# Restart time of a node holding one big replicated partition: how long from starting
# `shardlogd` until the partition's last record is served again.
#
#   bench/scripts/restart-time.sh [BIN_DIR ...]
#
# For each BIN_DIR (holding shardlogd, shardlog and shardlog-bench; default: this
# checkout's release build, built first), on a fresh one-node cluster:
#   1. topic `big` with one partition (128 MiB segments, no retention), filled with
#      `shardlog-bench produce --partitions 1` to GIB GiB (1 KiB records, 100 a batch,
#      acks=all, flush=always);
#   2. SIGKILL the node, start it again, time until the last record is served
#      (`shardlog consume --from LAST --count 1` answers; polled every 50 ms);
#   3. SIGTERM (a clean stop), start it again, time the same.
# Each start also reports when the log said `replica opened` (its line names the
# snapshot used and the batches replayed). Segment reads are O_DIRECT: no page cache
# helps a restart. The data is removed at the end (it is GIB GiB per binary set).
#
# Environment: GIB (5), RESTART_DIR (target/restart-time), PORT (random in
# 20000-60000), SHARDS (1).
set -euo pipefail

cd "$(dirname "$0")/../.."
GIB=${GIB:-5}
RESTART_DIR=${RESTART_DIR:-$PWD/target/restart-time}
PORT=${PORT:-$((20000 + RANDOM % 40000))}
SHARDS=${SHARDS:-1}
if [ $# -eq 0 ]; then
  cargo build --release --quiet -p shardlog-net -p shardlog-tools -p shardlog-bench
  set -- "$PWD/target/release"
fi

server_pid=
stop_server() { # signal
  if [ -n "$server_pid" ]; then
    kill "-$1" "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
trap 'stop_server KILL; rm -rf "$RESTART_DIR"/data' EXIT

now_ms() { date +%s%3N; }

start_server() { # bin log
  # Builds with a Kafka listener get a free port for it (older ones have no such flag).
  local kafka=()
  if "$1/shardlogd" --help | grep -q -- --kafka-listen; then kafka=(--kafka-listen 127.0.0.1:0); fi
  if "$1/shardlogd" --help | grep -q -- --admin-listen; then kafka+=(--admin-listen 127.0.0.1:0); fi
  "$1/shardlogd" --data-dir "$RESTART_DIR/data" --listen "127.0.0.1:$PORT" "${kafka[@]}" \
    --shards "$SHARDS" --flush always >"$2" 2>&1 &
  server_pid=$!
}

# Starts the node and sets `served_ms`: from the start until the last record is served.
timed_restart() { # bin last label
  local bin=$1 last=$2 label=$3
  local log="$RESTART_DIR/$label.log" start opened
  start=$(now_ms)
  start_server "$bin" "$log"
  while :; do
    if out=$(timeout 5 "$bin/shardlog" consume --brokers "127.0.0.1:$PORT" --topic big \
      --partition 0 --from "$last" --count 1 2>/dev/null | tr -d '\0') && [ -n "$out" ]; then
      served_ms=$(($(now_ms) - start))
      break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "shardlogd exited; see $log" >&2
      exit 1
    fi
    sleep 0.05
  done
  # The line names the snapshot used and the batches and bytes replayed.
  opened=$(grep -m1 'replica opened' "$log" || true)
  echo "$label: serving after $served_ms ms" >&2
  echo "$label: ${opened:-no 'replica opened' line}" | sed 's/\x1b\[[0-9;]*m//g' >&2
}

for bin in "$@"; do
  name=$(basename "$(dirname "$bin")")-$(basename "$bin")
  rm -rf "$RESTART_DIR/data"
  mkdir -p "$RESTART_DIR"
  start_server "$bin" "$RESTART_DIR/$name-fill.log"
  until grep -q 'ready' "$RESTART_DIR/$name-fill.log" 2>/dev/null; do sleep 0.1; done
  "$bin/shardlog" topic create big --brokers "127.0.0.1:$PORT" --partitions 1 \
    --replication-factor 1 --min-insync 1 --segment-bytes $((128 << 20)) >/dev/null
  records=$((GIB << 20))
  fill_start=$(now_ms)
  "$bin/shardlog-bench" produce --brokers "127.0.0.1:$PORT" --topic big --partitions 1 \
    --record-size 1024 --batch-records 100 --producers 2 --inflight 8 --acks all \
    --count "$records" --json "$RESTART_DIR/$name-fill.json" >/dev/null 2>&1
  produced=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["produce"]["records"])' \
    "$RESTART_DIR/$name-fill.json")
  bytes=$(du -sb "$RESTART_DIR/data" | cut -f1)
  echo "$name: $produced records, $((bytes >> 20)) MiB on disk, filled in $(( ($(now_ms) - fill_start) / 1000 )) s" >&2
  last=$((produced - 1))

  stop_server KILL
  sync; sleep 2
  timed_restart "$bin" "$last" "$name-after-sigkill"
  kill_ms=$served_ms
  stop_server TERM
  sync; sleep 2
  timed_restart "$bin" "$last" "$name-after-sigterm"
  term_ms=$served_ms
  stop_server TERM
  printf '%s\t%s MiB\tafter SIGKILL %s ms\tafter SIGTERM %s ms\n' \
    "$name" "$((bytes >> 20))" "$kill_ms" "$term_ms"
  rm -rf "$RESTART_DIR/data"
done
