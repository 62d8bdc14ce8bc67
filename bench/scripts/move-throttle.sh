#!/usr/bin/env bash
# What a replica move costs producers, throttled and not: a local 4-node release cluster
# (bench/scripts/cluster.sh, --flush always, 2 shards each), a one-partition topic `moving`
# (RF 3) filled with FILL_MB of 1 KiB records, and producers on another topic (`load`,
# 3 partitions, RF 3, batched 100 x 1 KiB, acks=all) for DURATION seconds in three phases:
#
#   none         no move
#   throttled    a follower of `moving` replaced by the spare node, --throttle-bytes THROTTLE
#   unthrottled  moved back (the old follower catches up from empty), --throttle-bytes 0
#
# Each move starts 1 s into its phase and is waited for (`--wait`). Prints per phase the
# move's time and catch-up rate (the partition's bytes / time) and the producers'
# records/s and their ratio to the phase without a move.
#
#   bench/scripts/move-throttle.sh [FILL_MB] [THROTTLE_BYTES] [DURATION]
#     defaults: 512 MiB, 67108864 (64 MiB/s, the --move-throttle-bytes default), 15 s
#   MT_BIN: directory of release binaries (default target/release, built if missing)
set -euo pipefail
fill_mb="${1:-512}"
throttle="${2:-67108864}"
duration="${3:-15}"
repo_root="$(cd "$(dirname "$0")/../.." && pwd -P)"
bin="${MT_BIN:-$repo_root/target/release}"
if [ ! -x "$bin/shardlogd" ]; then
  (cd "$repo_root" && cargo build --release --workspace --bins)
fi
export CLUSTER_DIR="$repo_root/target/move-throttle"
export CLUSTER_BASE_PORT="${MT_BASE_PORT:-24100}"
export SHARDLOGD="$bin/shardlogd"
export CLUSTER_ARGS="--flush always --shards 2"
cluster="$repo_root/bench/scripts/cluster.sh"
rm -rf "$CLUSTER_DIR"
brokers="$("$cluster" start 4 2>/dev/null)"
trap '"$cluster" stop >/dev/null 2>&1 || true' EXIT

"$bin/shardlog" topic create moving --partitions 1 --replication-factor 3 --brokers "$brokers" >/dev/null
"$bin/shardlog" topic create load --partitions 3 --replication-factor 3 --brokers "$brokers" >/dev/null
"$bin/shardlog-bench" produce --brokers "$brokers" --topic moving --partitions 1 --record-size 1024 \
  --batch-records 100 --count $((fill_mb * 1024)) --acks all >/dev/null 2>&1
# leader, replicas (comma-separated) of moving/0
read -r leader replicas < <("$bin/shardlog" topic describe moving --brokers "$brokers" | awk -F'\t' '$1 == "0" {print $2, $4}')
IFS=, read -r -a nodes <<<"$replicas"
followers=()
for n in "${nodes[@]}"; do [ "$n" = "$leader" ] || followers+=("$n"); done
spare=""
for n in 0 1 2 3; do [[ ",$replicas," == *",$n,"* ]] || spare="$n"; done
# Bytes of record batches in the partition, as the leader's /metrics says.
bytes="$(curl -sf "http://127.0.0.1:$((CLUSTER_BASE_PORT + 300 + leader))/metrics" \
  | awk '/^shardlog_partition_size_bytes\{/ && /topic="moving"/ {print $2}')"
bytes="${bytes%.*}"
echo "moving/0: $((bytes / 1048576)) MiB of batches, replicas $replicas (leader $leader), spare node $spare"

# Producers on `load` for $duration s, records/s on stdout.
producers() {
  "$bin/shardlog-bench" produce --brokers "$brokers" --topic load --partitions 3 --record-size 1024 \
    --batch-records 100 --producers 3 --inflight 8 --acks all --duration "$duration" 2>/dev/null \
    | sed -n 3p | awk '{print $5}'
}

# phase NAME [TARGET THROTTLE]: producers, and the move to TARGET 1 s in.
phase() {
  local name="$1" out move_s="-" rate="-" rec ratio=""
  out="$(mktemp)"
  producers >"$out" &
  local producing=$!
  if [ $# -gt 1 ]; then
    sleep 1
    local started
    started="$(date +%s.%N)"
    "$bin/shardlog" partition reassign --brokers "$brokers" --topic moving --partition 0 \
      --replicas "$2" --throttle-bytes "$3" --wait --timeout 600 >/dev/null
    read -r move_s rate < <(awk -v s="$started" -v e="$(date +%s.%N)" -v b="$bytes" \
      'BEGIN { printf "%.1f %.0f\n", e - s, b / 1048576 / (e - s) }')
  fi
  wait "$producing"
  rec="$(cat "$out")"
  rm -f "$out"
  if [ -n "$baseline" ]; then
    ratio="$(awk -v r="$rec" -v b="$baseline" 'BEGIN { printf "  (%.3f of none)", r / b }')"
  else
    baseline="$rec"
  fi
  printf '%-12s move %8s s  catch-up %8s MiB/s  producers %10s records/s%s\n' \
    "$name" "$move_s" "$rate" "$rec" "$ratio"
}

baseline=""
phase none
phase throttled "$leader,${followers[0]},$spare" "$throttle"
phase unthrottled "$leader,${followers[0]},${followers[1]}" 0
