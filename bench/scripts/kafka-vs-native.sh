#!/usr/bin/env bash
# The Kafka front end against the native one, in one sitting: a release one-node
# shardlogd (--flush always, both listeners), and `shardlog-bench produce` with the same
# workload over each protocol (--protocol shardlog | kafka: same batches, records per
# request, in-flight window, 1 KiB records, acks=all, idempotent), alternating
# native/kafka each round so the disk's drift hits both alike; a fresh data directory
# per run.
#
#   bench/scripts/kafka-vs-native.sh [OUT_DIR]
#
#   record-256: 1 record per request, 256 in flight, one producer
#   batched:    100 records of 1 KiB per request, 4 producers x 8 in flight
#
# Environment: KVN_SECONDS (per run, default 10), KVN_ROUNDS (default 3), KVN_BIN (a
# directory holding release shardlogd and shardlog-bench; default: builds them into
# target/release), KVN_CONFLUENT=1 adds a real-client figure: confluent-kafka (librdkafka,
# installed with pip if missing) producing 1 KiB records with acks=all to the same
# listener (its own batching, so a figure beside the table, not a ratio).
# Prints the median of each shape per protocol and the ratio kafka / native.
set -euo pipefail

out="${1:-target/kafka-vs-native}"
seconds="${KVN_SECONDS:-10}"
rounds="${KVN_ROUNDS:-3}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if [ -n "${KVN_BIN:-}" ]; then
  bin="$(cd "$KVN_BIN" && pwd)"
else
  cargo build --release -p shardlog-net -p shardlog-bench --bins >&2
  bin="$(pwd)/target/release"
fi

server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$out/data"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_server() { # log; sets $server_pid, $native and $kafka
  rm -rf "$out/data"
  mkdir -p "$out/data"
  native="127.0.0.1:$(free_port)"
  kafka="127.0.0.1:$(free_port)"
  "$bin/shardlogd" --data-dir "$out/data" --listen "$native" --kafka-listen "$kafka" \
    --admin-listen 127.0.0.1:0 --flush always 2> "$1" &
  server_pid=$!
  for _ in $(seq 300); do
    if grep -q "shardlogd ready" "$1"; then return 0; fi
    kill -0 "$server_pid" 2>/dev/null || { echo "shardlogd exited; see $1" >&2; exit 1; }
    sleep 0.1
  done
  echo "shardlogd not ready after 30 s; see $1" >&2
  exit 1
}

stop_server() {
  kill -TERM "$server_pid"
  wait "$server_pid" || true
  server_pid=""
}

shape_args() {
  case "$1" in
    record-256) echo "--batch-records 1 --producers 1 --inflight 256" ;;
    batched) echo "--batch-records 100 --producers 4 --inflight 8" ;;
  esac
}

for round in $(seq "$rounds"); do
  for shape in record-256 batched; do
    for protocol in shardlog kafka; do
      name="$shape-$protocol-$round"
      start_server "$out/$name.log"
      brokers="$native"; [ "$protocol" = kafka ] && brokers="$kafka"
      # shellcheck disable=SC2046
      "$bin/shardlog-bench" produce --protocol "$protocol" --brokers "$brokers" \
        --topic kvn --partitions 1 --record-size 1024 --acks all --duration "$seconds" \
        $(shape_args "$shape") --json "$out/$name.json" > "$out/$name.txt" 2> "$out/$name.err" \
        || { echo "$name failed:" >&2; cat "$out/$name.err" >&2; exit 1; }
      stop_server
      echo "== $name: $(sed -n 3p "$out/$name.txt")" >&2
    done
  done
done

if [ "${KVN_CONFLUENT:-0}" = 1 ]; then
  python3 -c 'import confluent_kafka' 2>/dev/null || pip install --quiet confluent-kafka >&2
  start_server "$out/confluent.log"
  python3 - "$kafka" "$seconds" > "$out/confluent.json" <<'PY'
import json, sys, time
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
broker, seconds = sys.argv[1], float(sys.argv[2])
admin = AdminClient({"bootstrap.servers": broker})  # kept: a dropped client cancels its futures
admin.create_topics([NewTopic("kvn", 1, 1)])["kvn"].result(30)
producer = Producer({"bootstrap.servers": broker, "acks": "all", "enable.idempotence": True,
                     "linger.ms": 5, "queue.buffering.max.messages": 200000})
value = bytes((i * 31) % 251 for i in range(1024))
acked = 0
def done(err, msg):
    global acked
    if err is not None:
        raise SystemExit(f"delivery failed: {err}")
    acked += 1
start = time.monotonic()
while time.monotonic() - start < seconds:
    try:
        producer.produce("kvn", value, partition=0, on_delivery=done)
    except BufferError:
        producer.poll(0.01)
    producer.poll(0)
producer.flush(60)
elapsed = time.monotonic() - start
print(json.dumps({"records": acked, "elapsed_s": elapsed, "records_per_s": acked / elapsed,
                  "mib_per_s": acked * 1024 / elapsed / 2**20}))
PY
  stop_server
fi

python3 - "$out" "$rounds" "${KVN_CONFLUENT:-0}" <<'PY'
import json, os, statistics, sys
out, rounds, confluent = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
def runs(shape, protocol):
    found = []
    for r in range(1, rounds + 1):
        p = json.load(open(os.path.join(out, f"{shape}-{protocol}-{r}.json")))["produce"]
        found.append((p["records_per_s"], p["mib_per_s"], p["latency_us"]["p50"], p["latency_us"]["p99"]))
    return found
print(f"{'shape':<11} {'protocol':<9} {'rec/s':>10} {'MiB/s':>8} {'p50 us':>8} {'p99 us':>8}   (median of {rounds})")
for shape in ["record-256", "batched"]:
    med = {}
    for protocol in ["shardlog", "kafka"]:
        med[protocol] = [statistics.median(col) for col in zip(*runs(shape, protocol))]
        rate, mib, p50, p99 = med[protocol]
        print(f"{shape:<11} {protocol:<9} {rate:>10.0f} {mib:>8.1f} {p50:>8.0f} {p99:>8.0f}")
    k, n = med["kafka"], med["shardlog"]
    print(f"{shape:<11} {'ratio':<9} {k[0] / n[0]:>10.3f} {k[1] / n[1]:>8.3f} {k[2] / n[2]:>8.3f} {k[3] / n[3]:>8.3f}")
if confluent:
    c = json.load(open(os.path.join(out, "confluent.json")))
    print(f"confluent-kafka (librdkafka, its own batching, linger 5 ms, acks=all, idempotent): "
          f"{c['records_per_s']:.0f} rec/s, {c['mib_per_s']:.1f} MiB/s")
PY
