#!/usr/bin/env bash
# What authorization costs the hot path: one node (2 shards, --flush interval=50; 64 MiB
# segments and 256 MiB retention per partition, so what the runs write at ~1 GB/s does
# not pile up on disk), topic `bench` (4 partitions), User:ANONYMOUS allowed to write and read it by ACLs; then, in
# ROUNDS alternating rounds, the node restarted with --authorization off and on, and
# shardlog-bench produce (4 producers, 100 x 1 KiB batches, DURATION s) and consume
# (5 s) against it. Prints each run's summary.
#
#   bench/scripts/authorization-cost.sh [DURATION] [ROUNDS]    defaults: 10 s, 2
#   AC_BIN: directory of the binaries (default target/release, built if missing)
set -euo pipefail
duration="${1:-10}"
rounds="${2:-2}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${AC_BIN:-$root/target/release}"
if [[ ! -x "$bin/shardlogd" || ! -x "$bin/shardlog-bench" ]]; then
    (cd "$root" && cargo build --release --bins)
fi
dir="$(mktemp -d "${SHARDLOG_TEST_DIR:-$root/target}/authorization-cost.XXXXXX")"
brokers=127.0.0.1:29095
pid=
stop() { if [[ -n "$pid" ]]; then kill "$pid"; wait "$pid" || true; pid=; fi; }
trap 'stop; rm -rf "$dir"' EXIT
start() {
    "$bin/shardlogd" --data-dir "$dir/data" --listen "$brokers" --kafka-listen 127.0.0.1:29092 \
        --admin-listen off --shards 2 --flush interval=50 --segment-bytes 67108864 \
        --retention-bytes 268435456 "$@" >>"$dir/shardlogd.log" 2>&1 &
    pid=$!
    sleep 2
}
start
"$bin/shardlog" topic create bench --partitions 4 --brokers "$brokers"
for op in write read; do
    "$bin/shardlog" acl add --principal User:ANONYMOUS --operation "$op" --topic bench \
        --brokers "$brokers"
done
stop
summary() { grep -vE '^ +[0-9.]+ s +\|'; }
for round in $(seq "$rounds"); do
    for mode in off on; do
        start --authorization "$mode"
        echo "== round $round, authorization $mode"
        "$bin/shardlog-bench" produce --brokers "$brokers" --topic bench --record-size 1024 \
            --batch-records 100 --producers 4 --duration "$duration" --warmup 2 2>&1 | summary
        "$bin/shardlog-bench" consume --brokers "$brokers" --topic bench --duration 5 2>&1 |
            summary
        stop
    done
done
