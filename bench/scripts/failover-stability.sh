#!/usr/bin/env bash
# No failover without a fault: a 3-node cluster (via cluster.sh) under full acks=all produce
# load for DURATION seconds, with nothing killed or paused. A faster failure detector that
# fences busy nodes is worse than a slow one, so this counts what the controller did
# meanwhile, from every node's /metrics before and after the load:
#
#   leader changes       shardlog_leader_changes_total (partition leaders the controller moved)
#   node fences          shardlog_node_fences_total (sessions that ran out)
#   controller changes   shardlog_controller_leader_changes_total (Raft leader or term)
#
# Every voter applies the same changes, so each node counts the cluster's; the script prints
# the largest difference over the nodes. It also prints ISR shrinks/expands (the leaders'
# counters, summed), how long shard 0s ran the controller's timers late (left out of the
# controller's clock, shardlog_controller_stall_seconds_sum) and how many
# heartbeats reached the controller leader more than 100 and 250 ms after the one before
# (shardlog_heartbeat_gap_seconds), which says how close a session came to running out. Exit 0 only if leader changes, fences and controller changes
# are all 0.
#
#   bench/scripts/failover-stability.sh
#
# Environment: DURATION (600) seconds of load; LOAD (both): batched (100 x 1 KiB per
# request, 4 producers x 8 in flight), per-record (1 x 1 KiB, 256 in flight) or both at once;
# PARTITIONS (6) of one RF=3 topic with min_insync 2, 16 MiB segments and 48 MiB retained per
# partition (disk use stays near 1.5 GB); SHARDS (2) per node; FLUSH (always);
# SESSION_TIMEOUT_MS (shardlogd's default if unset); CLUSTER_DIR
# (target/failover-stability, removed at the end unless KEEP=1); CLUSTER_BASE_PORT (19600);
# BIN (target/release, built with cargo if shardlogd is missing there).
set -euo pipefail

cd "$(dirname "$0")/../.."
DURATION=${DURATION:-600}
LOAD=${LOAD:-both}
PARTITIONS=${PARTITIONS:-6}
BIN=${BIN:-$PWD/target/release}
TOPIC=stability
export CLUSTER_DIR=${CLUSTER_DIR:-$PWD/target/failover-stability}
export CLUSTER_BASE_PORT=${CLUSTER_BASE_PORT:-19600}
CLUSTER_ARGS="--flush ${FLUSH:-always} --shards ${SHARDS:-2}"
if [[ -n "${SESSION_TIMEOUT_MS:-}" ]]; then
    CLUSTER_ARGS="$CLUSTER_ARGS --session-timeout-ms $SESSION_TIMEOUT_MS"
fi
export CLUSTER_ARGS
export SHARDLOGD=$BIN/shardlogd

case "$LOAD" in
    batched | per-record | both) ;;
    *) echo "failover-stability.sh: LOAD must be batched, per-record or both" >&2; exit 2 ;;
esac
if [[ ! -x "$BIN/shardlogd" ]]; then
    cargo build --release --quiet -p shardlog-net -p shardlog-tools -p shardlog-bench
fi

admin_port() { echo $((CLUSTER_BASE_PORT + 300 + $1)); }

# The value of one un-labelled sample (or the sum of a labelled family) on node $1's page.
metric() {
    curl -fsS --max-time 5 "http://127.0.0.1:$(admin_port "$1")/metrics" |
        awk -v name="$2" '$1 == name || index($1, name "{") == 1 { sum += $2 } END { printf "%.3f\n", sum }'
}

# Heartbeat gaps above $2 seconds on node $1: all of them minus those within the bucket.
gaps_over() {
    local page
    page=$(curl -fsS --max-time 5 "http://127.0.0.1:$(admin_port "$1")/metrics")
    awk -v le="$2" '
        $1 == "shardlog_heartbeat_gap_seconds_count" { count = $2 }
        index($1, "shardlog_heartbeat_gap_seconds_bucket{le=\"" le "\"}") == 1 { within = $2 }
        END { printf "%d\n", count - within }' <<<"$page"
}

readonly COUNTED=(shardlog_leader_changes_total shardlog_node_fences_total
    shardlog_controller_leader_changes_total)
readonly SUMMED=(shardlog_isr_shrinks_total shardlog_isr_expands_total
    shardlog_controller_stall_seconds_sum)

# One line per node: the counters of COUNTED and SUMMED, then the gaps over 0.1 and 0.25 s.
snapshot() {
    for node in 0 1 2; do
        local line=()
        for name in "${COUNTED[@]}" "${SUMMED[@]}"; do
            line+=("$(metric "$node" "$name")")
        done
        line+=("$(gaps_over "$node" 0.1)" "$(gaps_over "$node" 0.25)")
        echo "${line[*]}"
    done
}

bench/scripts/cluster.sh stop >/dev/null 2>&1 || true
rm -rf "$CLUSTER_DIR"
brokers=$(bench/scripts/cluster.sh start 3)
cleanup() {
    bench/scripts/cluster.sh stop >/dev/null 2>&1 || true
    if [[ "${KEEP:-0}" != 1 ]]; then rm -rf "$CLUSTER_DIR"; fi
}
trap cleanup EXIT

"$BIN/shardlog" topic create "$TOPIC" --brokers "$brokers" --partitions "$PARTITIONS" \
    --replication-factor 3 --min-insync 2 --segment-bytes $((16 << 20)) \
    --retention-bytes $((48 << 20)) >/dev/null
# Settled: every partition led and its ISR (column 5) as long as its replicas (column 4).
settled=0
for _ in $(seq 1 300); do
    unsettled=$("$BIN/shardlog" topic describe "$TOPIC" --brokers "$brokers" | awk -F'\t' '
        $1 ~ /^[0-9]+$/ { rows++; if ($2 !~ /^[0-9]+$/ || split($4, r, ",") != split($5, i, ",")) n++ }
        END { print (rows == 0 ? 1 : n + 0) }')
    if [[ "$unsettled" == 0 ]]; then settled=1; break; fi
    sleep 0.2
done
if [[ "$settled" != 1 ]]; then echo "failover-stability.sh: the topic did not settle" >&2; exit 1; fi
"$BIN/shardlog" topic describe "$TOPIC" --brokers "$brokers"
before=$(snapshot)

echo "== $DURATION s of acks=all produce load ($LOAD) on $PARTITIONS partitions, no faults"
pids=()
if [[ "$LOAD" != per-record ]]; then
    "$BIN/shardlog-bench" produce --brokers "$brokers" --topic "$TOPIC" --acks all \
        --partitions "$PARTITIONS" --batch-records 100 --record-size 1024 --inflight 8 \
        --producers 4 --duration "$DURATION" 2>/dev/null | tail -3 &
    pids+=($!)
fi
if [[ "$LOAD" != batched ]]; then
    "$BIN/shardlog-bench" produce --brokers "$brokers" --topic "$TOPIC" --acks all \
        --partitions "$PARTITIONS" --batch-records 1 --record-size 1024 --inflight 256 \
        --producers 1 --duration "$DURATION" 2>/dev/null | tail -3 &
    pids+=($!)
fi
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
after=$(snapshot)
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

# The largest difference over the nodes for COUNTED, the sums for SUMMED, the gaps summed.
paste -d' ' <(echo "$before") <(echo "$after") | awk -v counted=${#COUNTED[@]} -v summed=${#SUMMED[@]} '
    {
        half = NF / 2
        for (i = 1; i <= half; i++) {
            d = $(i + half) - $i
            if (i <= counted) { if (d > worst[i]) worst[i] = d } else { total[i] += d }
        }
    }
    END {
        printf "leader changes: %d\nnode fences: %d\ncontroller leader changes: %d\n", worst[1], worst[2], worst[3]
        printf "ISR shrinks: %d, expands: %d\n", total[counted + 1], total[counted + 2]
        printf "controller stalls left out of its clock: %.3f s (all nodes)\n", total[counted + 3]
        printf "heartbeat gaps over 100 ms: %d, over 250 ms: %d\n", total[counted + summed + 1], total[counted + summed + 2]
        exit (worst[1] + worst[2] + worst[3] > 0)
    }' || { echo "FAIL: the controller moved leaders without a fault"; exit 1; }
if [[ "$failed" != 0 ]]; then
    echo "FAIL: a produce run failed"
    exit 1
fi
echo "OK: no leader change, fence or controller change in $DURATION s"
