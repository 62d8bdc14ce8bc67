"""confluent-kafka against a 3-node shardlog cluster while nodes are SIGKILLed: an
idempotent producer (acks=all) sends a record every few milliseconds and a consumer group
of two members (cooperative-sticky) reads and commits, while the test kills first the
group's coordinator, then the leader of a partition (another node where one is), each
restarted before the next kill. The clients must follow the new coordinator and leaders
(records acknowledged and consumed after each kill), and at the end every acknowledged
record was consumed, is in the log where its acknowledgement said, and nothing was read
again after a commit covered it.

Usage: cluster_failover.py BOOTSTRAP SESSION_TIMEOUT_MS
"""

import sys
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from groups import Workers, check_reads
from harness import ask, expect, log, result, wait_until

BOOTSTRAP = sys.argv[1]
SESSION_MS = int(sys.argv[2])
TOPIC = "cf-failover"
GROUP = "cf-failover-group"
PARTITIONS = [0, 1, 2]
TIMEOUT = 60
#: Records acknowledged, and consumed, after a kill before the next step.
PROGRESS = 100
#: One record every so often, at most this many in all.
EVERY_S = 0.01
RECORDS_MAX = 20000


class Load:
    """A producer thread: r0, r1, ... until stopped; what was acknowledged."""

    def __init__(self):
        self.producer = Producer(
            {
                "bootstrap.servers": BOOTSTRAP,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                # Retried through a failover, never given up on within the test.
                "message.timeout.ms": 120000,
                "topic.metadata.refresh.interval.ms": 1000,
                "reconnect.backoff.max.ms": 500,
            }
        )
        self.lock = threading.Lock()
        self.acked = set()
        self.failed = []
        self.sent = 0
        self.stopping = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def report(self, err, msg):
        with self.lock:
            if err is not None:
                self.failed.append((msg.value().decode(), str(err)))
            else:
                self.acked.add((msg.partition(), msg.offset(), msg.value().decode()))

    def run(self):
        while not self.stopping and self.sent < RECORDS_MAX:
            i = self.sent
            self.producer.produce(TOPIC, key=f"k{i}".encode(), value=f"r{i}".encode(), on_delivery=self.report)
            self.sent += 1
            self.producer.poll(EVERY_S)

    def stop(self):
        self.stopping = True
        self.thread.join()
        left = self.producer.flush(TIMEOUT * 2)
        expect(left == 0, f"{left} records neither delivered nor failed")

    def snapshot(self):
        with self.lock:
            return set(self.acked)


def progress(load, workers, what):
    """Waits until PROGRESS more records were acknowledged, and consumed, than now."""
    started = time.monotonic()
    before = load.snapshot()
    newer = wait_until(f"{PROGRESS} records acknowledged after {what}", TIMEOUT,
                       lambda: len(load.snapshot() - before) >= PROGRESS and load.snapshot() - before)
    acked_s = time.monotonic() - started
    wait_until(f"records acknowledged after {what} to be consumed", TIMEOUT,
               lambda: newer <= workers.consumed(), every=0.1)
    consumed_s = time.monotonic() - started
    log(f"after {what}: {PROGRESS} records acknowledged in {acked_s:.1f} s, consumed in {consumed_s:.1f} s")
    return {"acked_s": round(acked_s, 2), "consumed_s": round(consumed_s, 2)}


def coordinator(admin):
    """The group's coordinator node, asked again while a restarted node rejoins (one
    attempt may wait on a connection to a node that just went down)."""

    def ask_once():
        try:
            fresh = AdminClient({"bootstrap.servers": BOOTSTRAP})
            return fresh.describe_consumer_groups([GROUP], request_timeout=10)[GROUP].result(15)
        except Exception as e:  # noqa: BLE001 - any failure is retried until TIMEOUT
            log(f"describe_consumer_groups: {e!r}")
            return None

    return wait_until("a description of the group", TIMEOUT, ask_once, every=0.5).coordinator.id


def leaders(admin):
    meta = admin.list_topics(TOPIC, timeout=TIMEOUT).topics[TOPIC]
    return {p: part.leader for p, part in meta.partitions.items()}


def fully_replicated(admin):
    meta = admin.list_topics(TOPIC, timeout=TIMEOUT).topics[TOPIC]
    return all(len(part.isrs) == 3 and part.leader >= 0 for part in meta.partitions.values())


def read_log(acked):
    """Every record of the topic from offset 0 up to what was acknowledged, as a
    consumer without a group reads it."""
    reader = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "cf-failover-reader",
                       "enable.auto.commit": False})
    reader.assign([TopicPartition(TOPIC, p, 0) for p in PARTITIONS])
    got = set()

    def more():
        for msg in reader.consume(500, 0.5):
            expect(msg.error() is None, f"reading the log: {msg.error()}")
            got.add((msg.partition(), msg.offset(), msg.value().decode()))
        return acked <= got

    try:
        wait_until("the log to hold every acknowledged record", TIMEOUT, more, every=0)
    finally:
        reader.close()
    return got


def kill_and_follow(admin, load, workers, node, what):
    ask(f"kill {node}")
    step = progress(load, workers, f"SIGKILL of node {node} ({what})")
    ask(f"restart {node}")
    wait_until(f"node {node} back in every ISR", TIMEOUT, lambda: fully_replicated(admin), every=0.5)
    return step


def main():
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=3)])[TOPIC].result(TIMEOUT)
    wait_until("every partition led and fully replicated", TIMEOUT, lambda: fully_replicated(admin), every=0.5)
    workers = Workers(BOOTSTRAP, GROUP, TOPIC, SESSION_MS, "cooperative-sticky")
    load = Load()
    summary = {}
    try:
        workers.start("w1")
        workers.start("w2")
        wait_until("w1 and w2 to split the partitions", TIMEOUT, lambda: workers.split(["w1", "w2"], PARTITIONS))
        summary["start"] = progress(load, workers, "the start")

        first = coordinator(admin)
        log(f"group coordinator: node {first}; leaders {leaders(admin)}")
        summary["coordinator_killed"] = first
        summary["after_coordinator_kill"] = kill_and_follow(admin, load, workers, first, "the group coordinator")
        now = coordinator(admin)
        led = leaders(admin)
        others = [node for p, node in sorted(led.items()) if node != now]
        leader = others[0] if others else led[0]
        log(f"group coordinator: node {now}; leaders {led}; killing leader {leader}")
        summary["leader_killed"] = leader
        summary["after_leader_kill"] = kill_and_follow(admin, load, workers, leader, "a partition leader")
    finally:
        load.stop()
    try:
        acked = load.snapshot()
        wait_until("every acknowledged record consumed", TIMEOUT, lambda: acked <= workers.consumed(), every=0.1)
    finally:
        workers.stop_all()
    consumed = workers.consumed()
    failed_values = {value for value, _ in load.failed}
    extra = {r for r in consumed - acked if r[2] not in failed_values}
    expect(not extra, f"consumed records never produced: {sorted(extra)[:5]}")
    positions = {}
    for p, o, v in consumed:
        expect(positions.setdefault((p, o), v) == v, f"partition {p} offset {o} read as two values")
    violations, again = check_reads(workers.snapshot())
    expect(not violations, f"read again after a commit covered them: {violations[:5]}")
    in_log = read_log(acked)
    summary.update(
        sent=load.sent,
        acked=len(acked),
        failed=len(load.failed),
        consumed=len(consumed),
        in_log=len(in_log),
        read_again_uncommitted=again,
    )
    if load.failed:
        log(f"delivery failures: {load.failed[:5]}")
    result(summary)


if __name__ == "__main__":
    main()
