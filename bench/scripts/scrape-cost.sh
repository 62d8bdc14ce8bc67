#!/usr/bin/env bash
# What a Prometheus scrape every second costs the data path: a release one-node shardlogd
# (--flush always), batched produce (4 partitions, 100 x 1 KiB per request, 4 producers x
# 8 in flight, acks=all, 10 s), rounds alternating no scrape and `curl /metrics` every
# second, a fresh data directory per run. Prints records/s per run.
#
#   bench/scripts/scrape-cost.sh [ROUNDS]    (SC_BIN: directory of release binaries)
set -euo pipefail
rounds="${1:-3}"
bin="${SC_BIN:-$(pwd)/target/release}"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
run() { # 0: no scrape, 1: scrape every second
  local dir log pid scraper="" native admin
  dir="$(mktemp -d)"; log="$dir.log"
  native="127.0.0.1:$(free_port)"; admin="127.0.0.1:$(free_port)"
  "$bin/shardlogd" --data-dir "$dir" --listen "$native" --kafka-listen "127.0.0.1:$(free_port)" \
    --admin-listen "$admin" --flush always 2> "$log" &
  pid=$!
  for _ in $(seq 300); do grep -qs "shardlogd ready" "$log" && break; sleep 0.1; done
  if [ "$1" = 1 ]; then
    (while true; do curl -s -o /dev/null "http://$admin/metrics"; sleep 1; done) &
    scraper=$!
  fi
  "$bin/shardlog-bench" produce --brokers "$native" --topic t --partitions 4 --record-size 1024 \
    --batch-records 100 --producers 4 --inflight 8 --acks all --duration 10 2>/dev/null \
    | sed -n 3p | awk -v s="$1" '{print (s == 1 ? "scrape every 1 s" : "no scrape       "), $5, "records/s"}'
  if [ -n "$scraper" ]; then kill "$scraper"; fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$dir" "$log"
}
for _ in $(seq "$rounds"); do run 0; run 1; done
