#!/usr/bin/env bash
# What TLS on the client listener costs batched produce and consume: two release
# shardlogd nodes side by side (one plain, one with --tls-cert/--tls-key; default settings
# otherwise: flush always, one shard per core), certificates made with openssl in the run
# directory. Per round, alternating plain then TLS: `shardlog-bench produce` of COUNT
# records (1 KiB x 100 per batch, 4 partitions, acks=all, idempotent) to a fresh topic,
# then `shardlog-bench consume` of them from the beginning (CONSUMERS consumers). Prints
# each run's records/s and MiB/s, the CPU seconds the server and the bench used for it
# (client and server share the machine's cores), and the TLS/plain ratio of each round.
#
#   bench/scripts/tls-cost.sh [COUNT] [ROUNDS] [CONSUMERS]
#     defaults: 500000 records, 2 rounds, 1 consumer
#   TC_BIN: directory of release binaries (default target/release, built if missing)
set -euo pipefail
count="${1:-500000}"
rounds="${2:-2}"
consumers="${3:-1}"
repo_root="$(cd "$(dirname "$0")/../.." && pwd -P)"
bin="${TC_BIN:-$repo_root/target/release}"
if [ ! -x "$bin/shardlogd" ] || [ ! -x "$bin/shardlog-bench" ]; then
  (cd "$repo_root" && cargo build --release -p shardlog-net -p shardlog-bench)
fi
dir="$repo_root/target/tls-cost"
rm -rf "$dir"
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
  -keyout ca.key -out ca.pem -days 30 -subj "/CN=tls-cost CA" 2>/dev/null
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
  -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
printf '%s\n' 'subjectAltName = DNS:localhost, IP:127.0.0.1' 'extendedKeyUsage = serverAuth' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
  -out server.pem -days 30 -sha256 -extfile server.ext 2>/dev/null
chmod 600 server.key

pids=()
# The servers stop, and their data goes (a run writes COUNT KiB twice per round).
trap 'kill "${pids[@]}" 2>/dev/null || true; sleep 1; rm -rf "$dir/plain" "$dir/tls"' EXIT
start() { # name port kafka-port extra...
  local name=$1 port=$2 kafka=$3
  shift 3
  "$bin/shardlogd" --data-dir "$dir/$name" --listen "127.0.0.1:$port" \
    --kafka-listen "127.0.0.1:$kafka" --admin-listen off "$@" >"$dir/$name.log" 2>&1 &
  pids+=($!)
}
start plain 24295 24292
start tls 24395 24392 --tls-cert server.pem --tls-key server.key
for log in plain tls; do
  for _ in $(seq 100); do grep -q "ready" "$dir/$log.log" && break; sleep 0.1; done
done

# CPU seconds (user + system) a process has used so far.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
# Prints "records/s MiB/s server-cpu-s client-cpu-s" of one bench run against node
# `index` (0 plain, 1 TLS).
rate() { # workload index topic extra...
  local workload=$1 index=$2 topic=$3
  shift 3
  local port=$((index == 0 ? 24295 : 24395))
  local args=(--brokers "127.0.0.1:$port" --topic "$topic" --count "$count")
  if [ "$workload" = produce ]; then
    args+=(--partitions 4 --record-size 1024 --batch-records 100)
  else
    args+=(--from beginning --consumers "$consumers" --threads "$consumers")
  fi
  local before after
  before="$(cpu_of "${pids[$index]}")"
  /usr/bin/time -o "$dir/time" -f "%U %S" "$bin/shardlog-bench" "$workload" "${args[@]}" "$@" \
    2>/dev/null >"$dir/out"
  after="$(cpu_of "${pids[$index]}")"
  awk -v w="$workload" '$1 == w && $4 ~ /^[0-9]+$/ { printf "%s %s ", $5, $6; exit }' "$dir/out"
  awk -v b="$before" -v a="$after" '{ printf "%.2f %.2f\n", a - b, $1 + $2 }' "$dir/time"
}
printf '%-6s %-8s %-6s %10s %8s %10s %10s\n' round workload mode records/s MiB/s server-cpu client-cpu
for round in $(seq "$rounds"); do
  for workload in produce consume; do
    read -r p_rate p_mib p_server p_client < <(rate "$workload" 0 "r$round")
    read -r t_rate t_mib t_server t_client < <(rate "$workload" 1 "r$round" --tls-ca ca.pem)
    printf '%-6s %-8s %-6s %10s %8s %9ss %9ss\n' "$round" "$workload" plain "$p_rate" "$p_mib" \
      "$p_server" "$p_client"
    printf '%-6s %-8s %-6s %10s %8s %9ss %9ss   tls/plain %s\n' "$round" "$workload" tls \
      "$t_rate" "$t_mib" "$t_server" "$t_client" \
      "$(awk -v a="$t_rate" -v b="$p_rate" 'BEGIN { printf "%.2f", a / b }')"
  done
done
