#!/usr/bin/env bash
# Measures the disk's physical limits with fio and the engine in matching shapes, on the
# same filesystem and in the same run, and prints engine/fio ratios.
#
#   bench/scripts/disk-limit.sh [DIR] [--json FILE]
#
#   (a) fio: sequential 1 MiB O_DIRECT writes, io_uring, iodepth 8
#       engine: flush=never, 1 MiB appends, 8 appenders
#   (b) fio: 4 KiB write + fdatasync, iodepth 1
#       engine: flush=always, 16 appenders of 16 KiB batches (group commit)
#
# Installs fio on Debian when it is missing. Each run starts after `sync` and a pause,
# so one run's dirty data does not slow the next one's syncs.
set -euo pipefail
cd "$(dirname "$0")/../.."

dir="target/bench-disk"
json=""
while [ $# -gt 0 ]; do
  case "$1" in
    --json) json="$2"; shift 2 ;;
    *) dir="$1"; shift ;;
  esac
done
seconds="${DISK_LIMIT_SECONDS:-15}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
out="$dir/disk-limit"
mkdir -p "$out"

if ! command -v fio >/dev/null 2>&1; then
  echo "== installing fio" >&2
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq fio >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq fio >/dev/null; fi
fi
cargo build --release -q -p shardlog-bench
bench="target/release/shardlog-bench"

settle() { sync; sleep 2; }

fio_run() { # name, extra args...
  local name="$1"; shift
  rm -f "$out/$name".*.0 "$out/$name.json"
  settle
  fio --name="$name" --directory="$out" --direct=1 --ioengine=io_uring \
      --runtime="$seconds" --output-format=json --output="$out/$name.json" "$@" >/dev/null
  rm -f "$out/$name".*.0
}

engine_run() { # name, engine args...
  local name="$1"; shift
  settle
  "$bench" engine --data-dir "$out/engine" --duration "$seconds" --json "$out/$name.json" "$@" \
    > "$out/$name.txt" 2> "$out/$name.err"
}

echo "== fio: sequential 1 MiB writes, iodepth 8" >&2
fio_run seq --rw=write --bs=1M --iodepth=8 --size=4G
echo "== fio: 4 KiB write+fdatasync, iodepth 1" >&2
fio_run sync4k --rw=write --bs=4k --iodepth=1 --fdatasync=1 --size=1G --time_based
echo "== engine: flush=never, 1 MiB appends, 8 appenders" >&2
engine_run engine-never --flush never --appenders 8 --record-size 1048000 --batch-records 1
echo "== engine: flush=always, 16 appenders x 16 KiB batches" >&2
engine_run engine-always --flush always --appenders 16 --record-size 16300 --batch-records 1

python3 - "$out" "$json" <<'PY'
import json, sys, os
out, dest = sys.argv[1], sys.argv[2]
def load(name): return json.load(open(os.path.join(out, name + ".json")))
def fio(name):
    job = load(name)["jobs"][0]["write"]
    return {"mib_per_s": job["bw_bytes"] / 2**20, "iops": job["iops"],
            "clat_p99_us": job["clat_ns"]["percentile"].get("99.000000", 0) / 1000}
seq, sync4k = fio("seq"), fio("sync4k")
never, always = load("engine-never")["results"], load("engine-always")["results"]
summary = {
  "fio_seq_1m_qd8": seq, "fio_4k_fdatasync_qd1": sync4k,
  "engine_never_1m": never, "engine_always_16k_x16": always,
  "ratio_never_vs_fio_seq_bandwidth": never["mib_per_s"] / seq["mib_per_s"],
  "ratio_always_batches_vs_fio_sync_iops": always["batches_per_s"] / sync4k["iops"],
  "ratio_always_syncs_vs_fio_sync_iops": always["syncs_per_s"] / sync4k["iops"],
}
print()
print(f"{'shape':<44}{'MiB/s':>9}{'ops/s':>10}{'syncs/s':>9}{'p99':>11}")
print(f"{'fio seq 1 MiB O_DIRECT, io_uring, qd 8':<44}{seq['mib_per_s']:>9.1f}{seq['iops']:>10.0f}{'':>9}{seq['clat_p99_us']/1000:>9.2f}ms")
print(f"{'engine flush=never, 1 MiB appends, 8 tasks':<44}{never['mib_per_s']:>9.1f}{never['batches_per_s']:>10.0f}{never['syncs_per_s']:>9.0f}{never['append_latency_us']['p99']/1000:>9.2f}ms")
print(f"{'fio 4 KiB write+fdatasync, qd 1':<44}{sync4k['mib_per_s']:>9.1f}{sync4k['iops']:>10.0f}{sync4k['iops']:>9.0f}{sync4k['clat_p99_us']/1000:>9.2f}ms")
print(f"{'engine flush=always, 16 x 16 KiB batches':<44}{always['mib_per_s']:>9.1f}{always['batches_per_s']:>10.0f}{always['syncs_per_s']:>9.0f}{always['append_latency_us']['p99']/1000:>9.2f}ms")
print()
print(f"engine never / fio seq bandwidth:       {summary['ratio_never_vs_fio_seq_bandwidth']:.2f}")
print(f"engine always batches/s / fio sync ops: {summary['ratio_always_batches_vs_fio_sync_iops']:.2f}"
      f"  ({always['batches_per_sync']:.1f} batches per fdatasync)")
path = dest or os.path.join(out, "summary.json")
json.dump(summary, open(path, "w"), indent=2)
print(f"summary: {path}")
PY
rm -rf "$out/engine"
