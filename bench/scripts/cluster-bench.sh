#!/usr/bin/env bash
# Replication measured on a local 3-node cluster (bench/scripts/cluster.sh), all in one run:
# acks=all produce into a topic with replication factor 1 and one with 3 (min_insync 2),
# per record (1 KiB records, one per request, 256 in flight) and batched (100 records per
# request, 4 producers x 8 in flight), then leader failover time over KILLS kills.
#
#   bench/scripts/cluster-bench.sh
#
# Environment: SECONDS_EACH (8) per produce run, KILLS (20), SHARDS (2) per node, FLUSH
# (always), CLUSTER_DIR (target/cluster-bench), CLUSTER_BASE_PORT (19500). The cluster is
# started fresh and stopped at the end. Results: the bench tables on stdout, JSON files in
# $CLUSTER_DIR/results/.
set -euo pipefail

cd "$(dirname "$0")/../.."
SECONDS_EACH=${SECONDS_EACH:-8}
KILLS=${KILLS:-20}
export CLUSTER_DIR=${CLUSTER_DIR:-$PWD/target/cluster-bench}
export CLUSTER_BASE_PORT=${CLUSTER_BASE_PORT:-19500}
export CLUSTER_ARGS="--flush ${FLUSH:-always} --shards ${SHARDS:-2}"

cargo build --release --quiet -p shardlog-net -p shardlog-tools -p shardlog-bench
bin=$PWD/target/release
bench/scripts/cluster.sh stop >/dev/null 2>&1 || true
rm -rf "$CLUSTER_DIR"
brokers=$(bench/scripts/cluster.sh start 3)
trap 'bench/scripts/cluster.sh stop >/dev/null 2>&1 || true' EXIT
results=$CLUSTER_DIR/results
mkdir -p "$results"

"$bin/shardlog" topic create rf1 --brokers "$brokers" --partitions 3 --replication-factor 1 --min-insync 1
"$bin/shardlog" topic create rf3 --brokers "$brokers" --partitions 3 --replication-factor 3 --min-insync 2

for topic in rf1 rf3; do
    echo "== $topic, per record: 1 x 1 KiB per request, 256 in flight, acks=all"
    "$bin/shardlog-bench" produce --brokers "$brokers" --topic "$topic" --acks all \
        --batch-records 1 --record-size 1024 --inflight 256 --producers 1 \
        --duration "$SECONDS_EACH" --json "$results/$topic-per-record.json" 2>/dev/null | tail -4
    echo "== $topic, batched: 100 x 1 KiB per request, 4 producers x 8 in flight, acks=all"
    "$bin/shardlog-bench" produce --brokers "$brokers" --topic "$topic" --acks all \
        --batch-records 100 --record-size 1024 --inflight 8 --producers 4 \
        --duration "$SECONDS_EACH" --json "$results/$topic-batched.json" 2>/dev/null | tail -4
done

echo "== failover: $KILLS leaders killed (SIGKILL), time to the first acks=all ack on the new leader"
"$bin/shardlog-bench" failover --brokers "$brokers" --kills "$KILLS" \
    --kill-cmd "bench/scripts/cluster.sh kill {node} >/dev/null" \
    --restart-cmd "bench/scripts/cluster.sh restart {node} >/dev/null" \
    --json "$results/failover.json" 2>/dev/null | tail -1
