#!/usr/bin/env bash
# The cost of idempotent produce, on a local 3-node cluster (bench/scripts/cluster.sh):
# acks=all produce with `--idempotence true` and `false`, alternating (true false true
# false ...) so that drift hits both alike, into a topic with replication factor 1 and
# one with 3 (min_insync 2), each of 3 partitions (64 MiB segments, 192 MiB retained per
# partition, so that the disk holds out), in two shapes:
#
#   per-record: 1 x 1 KiB record per request, 256 in flight, 1 producer
#   batched:    100 x 1 KiB records per request, 4 producers x 8 in flight
#
#   bench/scripts/idempotence-cost.sh
#
# Environment: SECONDS_EACH (8) per run, ROUNDS (3) runs of each mode per shape, MODES
# (the order within a round: "true false", or "false true"), SHARDS (2) per node,
# CLUSTER_DIR (target/idempotence-cost), CLUSTER_BASE_PORT (19600). The cluster is
# started fresh, and stopped at the end with its data removed. Prints, per shape, the
# median records/s and p50/p99 of each mode and the cost (1 - true/false); JSON files of
# every run in $CLUSTER_DIR/results/.
set -euo pipefail

cd "$(dirname "$0")/../.."
SECONDS_EACH=${SECONDS_EACH:-8}
ROUNDS=${ROUNDS:-3}
MODES=${MODES:-true false}
export CLUSTER_DIR=${CLUSTER_DIR:-$PWD/target/idempotence-cost}
export CLUSTER_BASE_PORT=${CLUSTER_BASE_PORT:-19600}
export CLUSTER_ARGS="--flush always --shards ${SHARDS:-2}"

cargo build --release --quiet -p shardlog-net -p shardlog-tools -p shardlog-bench
bin=$PWD/target/release
bench/scripts/cluster.sh stop >/dev/null 2>&1 || true
rm -rf "$CLUSTER_DIR"
brokers=$(bench/scripts/cluster.sh start 3)
# At the end the nodes stop and their data goes (gigabytes); the results stay.
trap 'bench/scripts/cluster.sh stop >/dev/null 2>&1 || true; rm -rf "$CLUSTER_DIR"/node-*/data' EXIT
results=$CLUSTER_DIR/results
mkdir -p "$results"

# 64 MiB segments, 192 MiB kept per partition: the runs write tens of GB in all.
keep=(--segment-bytes $((64 << 20)) --retention-bytes $((192 << 20)))
"$bin/shardlog" topic create rf1 --brokers "$brokers" --partitions 3 --replication-factor 1 \
  --min-insync 1 "${keep[@]}" >/dev/null
"$bin/shardlog" topic create rf3 --brokers "$brokers" --partitions 3 --replication-factor 3 \
  --min-insync 2 "${keep[@]}" >/dev/null

run() { # topic shape idempotence round
  local args
  case "$2" in
    per-record) args=(--batch-records 1 --inflight 256 --producers 1) ;;
    batched) args=(--batch-records 100 --inflight 8 --producers 4) ;;
  esac
  "$bin/shardlog-bench" produce --brokers "$brokers" --topic "$1" --acks all --record-size 1024 \
    "${args[@]}" --idempotence "$3" --duration "$SECONDS_EACH" \
    --json "$results/$1-$2-$3-$4.json" >/dev/null 2>&1
}

for topic in rf1 rf3; do
  for shape in per-record batched; do
    for round in $(seq "$ROUNDS"); do
      for idempotence in $MODES; do
        run "$topic" "$shape" "$idempotence" "$round"
        python3 - "$results/$topic-$shape-$idempotence-$round.json" \
          "$topic $shape idempotence=$idempotence round $round" <<'EOF' >&2
import json, sys
r = json.load(open(sys.argv[1]))["produce"]
p50, p99 = r["latency_us"]["p50"] / 1000, r["latency_us"]["p99"] / 1000
print(f"{sys.argv[2]}: {r['records_per_s']:.0f} records/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms")
EOF
      done
    done
  done
done

python3 - "$results" "$ROUNDS" <<'EOF'
import json, statistics, sys
results, rounds = sys.argv[1], int(sys.argv[2])
print("| topic | shape | idempotence | records/s (median) | p50 ms | p99 ms | runs (records/s) |")
print("|---|---|---|---|---|---|---|")
for topic in ("rf1", "rf3"):
    for shape in ("per-record", "batched"):
        medians = {}
        for mode in ("true", "false"):
            runs = [json.load(open(f"{results}/{topic}-{shape}-{mode}-{r}.json"))["produce"]
                    for r in range(1, rounds + 1)]
            rate = statistics.median(r["records_per_s"] for r in runs)
            p50 = statistics.median(r["latency_us"]["p50"] for r in runs) / 1000
            p99 = statistics.median(r["latency_us"]["p99"] for r in runs) / 1000
            medians[mode] = rate
            each = ", ".join(f"{r['records_per_s']:.0f}" for r in runs)
            print(f"| {topic} | {shape} | {mode} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {each} |")
        cost = 1 - medians["true"] / medians["false"]
        print(f"| {topic} | {shape} | cost | {cost:+.1%} of the non-idempotent rate | | | |")
EOF
