"""The table of bench/scripts/peers.sh: the median of each run's JSON over the rounds.

    python3 bench/scripts/peers_table.py RESULTS_DIR ROUNDS SHAPES

shardlog-bench and peers-bench write the same keys (produce.records_per_s,
produce.latency_us.p50, ...); fio its own. MiB/s is payload (records x 1 KiB) for every
system, so batch headers count for nobody. ratio = shardlog / peer.
"""

import json
import os
import statistics
import sys

results, rounds, shapes = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
RECORD = 1024

SHAPES = {
    "node-record": ("one node, 1 rec/request, 256 in flight", "rec/s"),
    "node-latency": ("one node, 1 in flight (unloaded)", "p50 us"),
    "node-batched": ("one node, batched 100 x 1 KiB", "MiB/s"),
    "rf3-1p": ("RF=3 acks=all, 1 partition, 256 in flight", "rec/s"),
    "rf3-3p": ("RF=3 acks=all, 3 partitions, 256 in flight", "rec/s"),
    "rf3-batched": ("RF=3 acks=all, 3 partitions, batched", "MiB/s"),
}
NODE_PEERS = [
    ("nats-always", "NATS R1 sync_interval always"),
    ("nats-default", "NATS R1 default (no fsync/ack)"),
    ("redis", "Redis XADD, AOF fsync always"),
]
CLUSTER_PEERS = [
    ("nats-always", "NATS R3 sync_interval always"),
    ("nats-default", "NATS R3 default (no fsync/ack)"),
]

# NATS (before 2.12) has no batch publish: the same records outstanding instead.
BATCHED = {"redis": "Redis MULTI 100 XADD EXEC, AOF always"}


def load(name):
    path = os.path.join(results, name + ".json")
    return json.load(open(path)) if os.path.exists(path) else None


def median_of(shape, system):
    """(rec/s, MiB/s, p50 us, p99 us) medians, or None if no run."""
    runs = [load(f"{shape}-{system}-{r}") for r in range(1, rounds + 1)]
    runs = [run["produce"] for run in runs if run]
    if not runs:
        return None
    columns = [
        [p["records_per_s"] for p in runs],
        [p["records_per_s"] * RECORD / 2**20 for p in runs],
        [p["latency_us"]["p50"] for p in runs],
        [p["latency_us"]["p99"] for p in runs],
    ]
    return [statistics.median(column) for column in columns]


def fio_median(kind):
    runs = [load(f"fio-{kind}-{r}") for r in range(1, rounds + 1)]
    runs = [run["jobs"][0]["write"] for run in runs if run]
    if not runs:
        return None
    return (
        statistics.median(w["bw_bytes"] / 2**20 for w in runs),
        statistics.median(w["iops"] for w in runs),
    )


def human(value):
    if value >= 10_000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def cell(metric, m):
    """The metric's value, with the other latency figure beside it."""
    rate, mib, p50, p99 = m
    if metric == "rec/s":
        return rate, f"{human(rate)} (p99 {p99 / 1000:.1f} ms)"
    if metric == "MiB/s":
        return mib, f"{human(mib)} (p99 {p99 / 1000:.1f} ms)"
    return p50, f"{p50:.0f} (p99 {p99:.0f})"


rows = []
for shape in shapes:
    if shape not in SHAPES:
        continue
    title, metric = SHAPES[shape]
    ours = median_of(shape, "shardlog")
    ours_value, ours_text = cell(metric, ours) if ours else (None, "-")
    peers = NODE_PEERS if shape.startswith("node") else CLUSTER_PEERS
    if shape.endswith("batched"):
        peers = [(system, BATCHED.get(system, name)) for system, name in peers]
    # The shape's first row carries shardlog's figure, whichever peers ran (none when
    # PEERS_SYSTEMS=shardlog).
    first = True
    for system, name in peers:
        theirs = median_of(shape, system)
        if theirs is None:
            continue
        value, text = cell(metric, theirs)
        ratio = f"{ours_value / value:.2f}" if ours_value and value else "-"
        rows.append((title if first else "", metric if first else "",
                     ours_text if first else "", name, text, ratio))
        first = False
    if first:
        rows.append((title, metric, ours_text, "-", "-", "-"))
    if shape.startswith("rf3"):
        rows.append(("", "", "", "Redis: no quorum-acked replication", "-", "-"))

if "fio" in shapes:
    seq, sync4k = fio_median("seq"), fio_median("sync4k")
    batched, latency = median_of("node-batched", "shardlog"), median_of("node-latency", "shardlog")
    if seq:
        ratio = f"{batched[1] / seq[0]:.2f}" if batched else "-"
        ours = f"{human(batched[1])} (node batched)" if batched else "-"
        rows.append(("disk: sequential 1 MiB O_DIRECT, qd 8", "MiB/s", ours,
                     "fio", human(seq[0]), ratio))
    if sync4k:
        ratio = f"{latency[0] / sync4k[1]:.2f}" if latency else "-"
        ours = f"{human(latency[0])} (1 in flight)" if latency else "-"
        rows.append(("disk: 4 KiB write+fdatasync, qd 1", "ops/s", ours,
                     "fio, fresh file", human(sync4k[1]), ratio))

versions = os.path.join(results, "versions.txt")
if os.path.exists(versions):
    print(open(versions).read().rstrip())
print(f"load average at the end: {' '.join(open('/proc/loadavg').read().split()[:3])}")
print()
header = ("shape", "metric", "shardlog", "peer", "peer's", "ratio")
widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
for row in [header] + rows:
    print("  ".join(str(col).ljust(width) for col, width in zip(row, widths)).rstrip())
print()
print("ratio = shardlog / peer (rates: above 1 is shardlog faster; p50: below 1 is shardlog"
      " faster). MiB/s = records x 1 KiB.")


def cost_of(shape, system):
    """(CPU us per record, disk bytes written per payload byte) medians, or None."""
    per_record, per_byte = [], []
    for r in range(1, rounds + 1):
        run, cost = load(f"{shape}-{system}-{r}"), load(f"{shape}-{system}-{r}.cost")
        if not run or not cost:
            continue
        records = run["produce"]["records_per_s"] * cost["window_s"]
        if records <= 0:
            continue
        per_record.append(cost["cpu_s"] * 1e6 / records)
        if cost["disk_bytes"] is not None:
            per_byte.append(cost["disk_bytes"] / (records * RECORD))
    if not per_record:
        return None
    return (statistics.median(per_record),
            statistics.median(per_byte) if per_byte else None)


costs = []
for shape in shapes:
    if shape not in SHAPES:
        continue
    systems = [("shardlog", "shardlog")]
    systems += NODE_PEERS if shape.startswith("node") else CLUSTER_PEERS
    for system, name in systems:
        cost = cost_of(shape, system)
        if cost is None:
            continue
        rate = median_of(shape, system)[0]
        disk = f"{cost[1]:.2f}" if cost[1] is not None else "-"
        costs.append((SHAPES[shape][0] if system == "shardlog" else "", name, human(rate),
                      f"{cost[0]:.1f}", disk))
if costs:
    print()
    print("What a record costs the machine (servers and client together, sampled while each")
    print("run measured): busy CPU time per record, and bytes written to the disk per byte of")
    print("payload (RF=3 on one disk writes every record three times: 3.0 at the least).")
    print()
    header = ("shape", "system", "rec/s", "CPU us/record", "disk bytes/payload byte")
    widths = [max(len(str(row[i])) for row in costs + [header]) for i in range(len(header))]
    for row in [header] + costs:
        print("  ".join(str(col).ljust(width) for col, width in zip(row, widths)).rstrip())
