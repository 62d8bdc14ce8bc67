#!/usr/bin/env bash
# The README's "set up and run" command: builds the release binaries and runs a one-node
# shardlogd in the foreground on ./data, listening on 127.0.0.1:9095 for the shardlog
# protocol and on 127.0.0.1:9092 for Kafka clients (override with SHARDLOG_DATA,
# SHARDLOG_LISTEN and SHARDLOG_KAFKA_LISTEN). Stop it with Ctrl-C; it flushes and closes
# its logs.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${SHARDLOG_DATA:-$PWD/data}"
listen="${SHARDLOG_LISTEN:-127.0.0.1:9095}"
kafka_listen="${SHARDLOG_KAFKA_LISTEN:-127.0.0.1:9092}"

cargo build --release -p shardlog-net -p shardlog-tools -p shardlog-bench
mkdir -p "$data"
exec ./target/release/shardlogd --data-dir "$data" --listen "$listen" --kafka-listen "$kafka_listen" "$@"
