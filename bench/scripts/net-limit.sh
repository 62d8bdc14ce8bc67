#!/usr/bin/env bash
# Measures the loopback network's limit with iperf3, then a one-node shardlogd (release,
# --flush always) under shardlog-bench in the shapes that matter, and prints the figures
# with their ratios.
#
#   bench/scripts/net-limit.sh [DIR] [--json FILE]
#
#   (a) iperf3: one TCP stream on 127.0.0.1
#   (b) produce, batched: 1 KiB records, 100 per batch, acks=leader, several producers
#   (c) produce, per record: 1 record per request, 256 in flight, one producer
#   (d) consume from the tail cache: e2e closed loop (consumers read what producers just
#       wrote, still in memory)
#   (e) consume from disk: the server restarted (nothing cached), the topic of (b) from
#       its beginning
#   (f) e2e, open loop at NET_LIMIT_RATE records/s: end-to-end latency per record
#
# Environment: NET_LIMIT_SECONDS (per shape, default 10), NET_LIMIT_RATE (default 20000),
# NET_LIMIT_PRODUCERS (default 4), CARGO_TARGET_DIR (default target). Installs iperf3 on
# Debian when it is missing. Everything lands in DIR (default target/bench-net); the data
# directory is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."

dir="target/bench-net"
json=""
while [ $# -gt 0 ]; do
  case "$1" in
    --json) json="$2"; shift 2 ;;
    *) dir="$1"; shift ;;
  esac
done
seconds="${NET_LIMIT_SECONDS:-10}"
rate="${NET_LIMIT_RATE:-20000}"
producers="${NET_LIMIT_PRODUCERS:-4}"
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
out="$dir/net-limit"
data="$out/data"
rm -rf "$data"
mkdir -p "$out" "$data"

server_pid=""
iperf_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  if [ -n "$iperf_pid" ]; then kill "$iperf_pid" 2>/dev/null || true; wait "$iperf_pid" 2>/dev/null || true; fi
  rm -rf "$data"
}
trap cleanup EXIT

if ! command -v iperf3 >/dev/null 2>&1; then
  echo "== installing iperf3" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq iperf3 >/dev/null
fi
cargo build --release -q -p shardlog-bench -p shardlog-net
bench="$target/release/shardlog-bench"
shardlogd="$target/release/shardlogd"

echo "== iperf3: loopback, one stream, ${seconds} s" >&2
iperf_port=5299
iperf3 -s -p "$iperf_port" >"$out/iperf3-server.log" 2>&1 &
iperf_pid=$!
iperf_ok=""
for _ in $(seq 50); do
  # iperf3 -J may exit 0 on "connection refused" (server not up yet): check the JSON.
  if timeout $((seconds + 30)) iperf3 -c 127.0.0.1 -p "$iperf_port" -t "$seconds" -J \
      > "$out/iperf3.json" 2>/dev/null && ! grep -q '"error"' "$out/iperf3.json"; then
    iperf_ok=1; break
  fi
  sleep 0.2
done
kill "$iperf_pid" 2>/dev/null || true
wait "$iperf_pid" 2>/dev/null || true
iperf_pid=""
if [ -z "$iperf_ok" ]; then
  echo "iperf3 failed; see $out/iperf3.json and $out/iperf3-server.log" >&2
  exit 1
fi

starts=0
start_server() { # waits for the ready line, sets $server_pid and $brokers
  starts=$((starts + 1))
  local log="$out/shardlogd-$starts.log"
  "$shardlogd" --data-dir "$data" --listen 127.0.0.1:0 --kafka-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --flush always 2> "$log" &
  server_pid=$!
  brokers=""
  for _ in $(seq 300); do
    brokers="$(sed -n 's/.*shardlogd ready: listening on \([^ "]*\).*/\1/p' "$log" | tail -n 1)"
    [ -n "$brokers" ] && return 0
    kill -0 "$server_pid" 2>/dev/null || { echo "shardlogd exited; see $log" >&2; exit 1; }
    sleep 0.1
  done
  echo "shardlogd not ready after 30 s; see $log" >&2
  exit 1
}

stop_server() {
  kill -TERM "$server_pid"
  wait "$server_pid" || true
  server_pid=""
}

run() { # name, shardlog-bench args...
  local name="$1"; shift
  echo "== $name: shardlog-bench $*" >&2
  "$bench" "$@" --brokers "$brokers" --json "$out/$name.json" --plot "$out/$name.svg" \
    > "$out/$name.txt" 2> "$out/$name.err"
  cat "$out/$name.txt" >&2
}

start_server
common=(--duration "$seconds" --record-size 1024 --acks leader)
run produce-batch produce --topic limit-batch --partitions 4 "${common[@]}" \
  --batch-records 100 --producers "$producers" --inflight 4
run produce-record produce --topic limit-record --partitions 4 "${common[@]}" \
  --batch-records 1 --producers 1 --inflight 256
run consume-tail e2e --topic limit-tail --partitions 4 "${common[@]}" \
  --batch-records 100 --producers "$producers" --inflight 4 --consumers 2
stop_server
start_server
disk_records="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["produce"]["records"])' \
  "$out/produce-batch.json")"
run consume-disk consume --topic limit-batch --from beginning --count "$disk_records" --consumers 2
run e2e-open e2e --topic limit-open --partitions 4 "${common[@]}" \
  --batch-records 100 --producers "$producers" --inflight 4 --consumers 2 --rate "$rate"
stop_server

python3 - "$out" "$json" "$rate" <<'PY'
import json, sys, os
out, dest, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
def load(name): return json.load(open(os.path.join(out, name + ".json")))
iperf = load("iperf3")["end"]["sum_received"]
iperf_mib = iperf["bits_per_second"] / 8 / 2**20
batch, record = load("produce-batch"), load("produce-record")
tail, disk, e2e = load("consume-tail"), load("consume-disk"), load("e2e-open")
ms = lambda us: us / 1000
rows = [
  ("produce 1 KiB x 100/batch, acks=leader", batch["produce"]),
  ("produce 1 KiB x 1/request, 256 in flight", record["produce"]),
  ("consume from the tail cache (e2e closed)", tail["consume"]),
  ("consume from disk (after restart)", disk["consume"]),
  (f"e2e open loop {rate:.0f} rec/s: produce", e2e["produce"]),
]
print()
print(f"{'shape':<44}{'MiB/s':>9}{'records/s':>12}{'p50':>10}{'p99':>10}{'p99.9':>10}")
print(f"{'iperf3 loopback, one stream':<44}{iperf_mib:>9.1f}")
for name, side in rows:
    l = side["latency_us"]
    print(f"{name:<44}{side['mib_per_s']:>9.1f}{side['records_per_s']:>12.0f}"
          f"{ms(l['p50']):>8.2f}ms{ms(l['p99']):>8.2f}ms{ms(l['p999']):>8.2f}ms")
l = e2e["e2e_latency_us"]
print(f"{'e2e open loop: end to end per record':<44}{'':>9}{'':>12}"
      f"{ms(l['p50']):>8.2f}ms{ms(l['p99']):>8.2f}ms{ms(l['p999']):>8.2f}ms")
summary = {
  "iperf3_loopback_mib_per_s": iperf_mib,
  "produce_batch": batch["produce"], "produce_record": record["produce"],
  "consume_tail": tail["consume"], "consume_disk": disk["consume"],
  "e2e_open": {"rate": rate, "produce": e2e["produce"], "consume": e2e["consume"],
               "e2e_latency_us": l, "missing_records": e2e["e2e_missing_records"]},
  "ratio_produce_batch_vs_loopback": batch["produce"]["mib_per_s"] / iperf_mib,
  "ratio_produce_record_vs_batch_records": record["produce"]["records_per_s"] / batch["produce"]["records_per_s"],
  "ratio_consume_tail_vs_loopback": tail["consume"]["mib_per_s"] / iperf_mib,
  "ratio_consume_disk_vs_loopback": disk["consume"]["mib_per_s"] / iperf_mib,
  "ratio_e2e_achieved_vs_rate": e2e["produce"]["records_per_s"] / rate,
}
print()
print(f"produce batched / loopback bandwidth:     {summary['ratio_produce_batch_vs_loopback']:.2f}")
print(f"produce per record / batched, records/s:  {summary['ratio_produce_record_vs_batch_records']:.3f}")
print(f"consume tail / loopback bandwidth:        {summary['ratio_consume_tail_vs_loopback']:.2f}")
print(f"consume disk / loopback bandwidth:        {summary['ratio_consume_disk_vs_loopback']:.2f}")
print(f"e2e achieved / asked rate:                {summary['ratio_e2e_achieved_vs_rate']:.2f}")
path = dest or os.path.join(out, "summary.json")
json.dump(summary, open(path, "w"), indent=2)
print(f"summary: {path}")
PY
