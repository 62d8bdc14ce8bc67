#!/usr/bin/env bash
# Replicated throughput by partition count, one build against another, interleaved:
# a fresh 3-node cluster (bench/scripts/cluster.sh) per run, a topic of N partitions with
# replication factor 3 and min_insync 2 (leaders spread), and one producer of 1 KiB
# records, one per request, 256 in flight, acks=all. More partitions should never mean
# less throughput (issue 15).
#
#   bench/scripts/partitions.sh [BIN_DIR...]      (default: target/release)
#
# Each BIN_DIR holds a shardlogd; the client (shardlog, shardlog-bench) is this checkout's
# release build. Environment: PARTITIONS ("1 3"), ROUNDS (3), SECONDS_EACH (14), FLUSH
# (always), SHARDS (2) per node, CLUSTER_DIR (target/partitions-bench), CLUSTER_BASE_PORT
# (19700). Prints one line per run, then the median records/s per build and count.
set -euo pipefail

cd "$(dirname "$0")/../.."
PARTITIONS=${PARTITIONS:-"1 3"}
ROUNDS=${ROUNDS:-3}
SECONDS_EACH=${SECONDS_EACH:-14}
export CLUSTER_DIR=${CLUSTER_DIR:-$PWD/target/partitions-bench}
export CLUSTER_BASE_PORT=${CLUSTER_BASE_PORT:-19700}
export CLUSTER_ARGS="--flush ${FLUSH:-always} --shards ${SHARDS:-2}"
[ $# -gt 0 ] || set -- target/release

cargo build --release --quiet -p shardlog-tools -p shardlog-bench
client=$PWD/target/release
results=$(mktemp)
trap 'bench/scripts/cluster.sh stop >/dev/null 2>&1 || true; rm -f "$results"' EXIT

run() { # $1 build dir, $2 partitions: prints records/s and p50
    local brokers out
    bench/scripts/cluster.sh stop >/dev/null 2>&1 || true
    rm -rf "$CLUSTER_DIR"
    brokers=$(SHARDLOGD="$1/shardlogd" bench/scripts/cluster.sh start 3 2>/dev/null)
    "$client/shardlog" topic create rf3 --brokers "$brokers" --partitions "$2" \
        --replication-factor 3 --min-insync 2 >/dev/null
    out=$("$client/shardlog-bench" produce --brokers "$brokers" --topic rf3 --acks all \
        --batch-records 1 --record-size 1024 --inflight 256 --producers 1 \
        --duration "$SECONDS_EACH" 2>/dev/null)
    bench/scripts/cluster.sh stop >/dev/null 2>&1 || true
    # The header line starts with "produce (" too; the throughput line has "s" third.
    echo "$out" | awk '$1 == "produce" && $3 == "s" && !rate { rate = $5; next }
                       $1 == "produce" && rate { print rate, $2, $3; exit }'
}

for ((round = 1; round <= ROUNDS; round++)); do
    for dir in "$@"; do
        for n in $PARTITIONS; do
            read -r rate p50 unit < <(run "$dir" "$n")
            echo "round $round  $dir  partitions=$n  $rate records/s  p50 $p50 $unit"
            echo "$dir $n $rate" >>"$results"
        done
    done
done

echo "median records/s of $ROUNDS rounds:"
for dir in "$@"; do
    for n in $PARTITIONS; do
        median=$(awk -v d="$dir" -v n="$n" '$1 == d && $2 == n { print $3 }' "$results" |
            sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
        echo "  $dir  partitions=$n  $median"
    done
done
