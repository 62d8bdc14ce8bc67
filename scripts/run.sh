#!/usr/bin/env bash
# The README's "set up and run" command. Builds the release binaries and, until the
# network server lands (shardlogd, next issue), runs the storage engine on ./data: a
# 10-second engine benchmark that keeps its data, then the offline tools over it.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${SHARDLOG_DATA:-$PWD/data}"

cargo build --release -p shardlog-bench -p shardlog-tools
mkdir -p "$data"
./target/release/shardlog-bench engine --data-dir "$data" --duration 10 --keep
./target/release/shardlog stats "$data"
./target/release/shardlog verify "$data"
