"""confluent-kafka consumer groups on one shardlogd: two members on four partitions split
them; a third joins and a rebalance follows; one is SIGKILLed and the survivors take its
partitions within the session timeout (plus the rebalance); commits survive a SIGKILL
and restart of the broker; a member that starts after every other one died resumes at
the committed offsets; the union of what was consumed equals what was produced, and
nothing is read again after a commit covered it.

Usage: confluent_group.py BOOTSTRAP SESSION_TIMEOUT_MS ASSIGNOR
"""

import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from groups import Workers, expect_consumed_exactly, wait_consumed
from harness import ask, expect, log, result, wait_until

BOOTSTRAP = sys.argv[1]
SESSION_MS = int(sys.argv[2])
ASSIGNOR = sys.argv[3]
TOPIC = "cf-group"
GROUP = "cf-group-members"
PARTITIONS = list(range(4))
TIMEOUT = 60
#: How long the survivors may take to own a dead member's partitions: the session
#: timeout, then a rebalance (members rejoin at their next heartbeat), with headroom for
#: a loaded two-core machine.
TAKEOVER_MAX = 2 * SESSION_MS / 1000 + 5


def produce(first, count):
    """Records r<first>..r<first+count-1>, idempotent with acks=all; the acknowledged
    ones as (partition, offset, value)."""
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True, "acks": "all"})
    acked = set()

    def report(err, msg):
        expect(err is None, f"delivery failed: {err}")
        acked.add((msg.partition(), msg.offset(), msg.value().decode()))

    for i in range(first, first + count):
        producer.produce(TOPIC, key=f"k{i}".encode(), value=f"r{i}".encode(), on_delivery=report)
        producer.poll(0)
    expect(producer.flush(TIMEOUT) == 0, "records still undelivered")
    expect(len(acked) == count, f"{len(acked)} of {count} acknowledged")
    return acked


def committed_now():
    """The group's committed offsets as a fresh client (not a member) fetches them."""
    reader = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": GROUP, "enable.auto.commit": False})
    try:
        parts = reader.committed([TopicPartition(TOPIC, p) for p in PARTITIONS], timeout=TIMEOUT)
    finally:
        reader.close()
    return {tp.partition: tp.offset for tp in parts if tp.offset >= 0}


def main():
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    admin.create_topics([NewTopic(TOPIC, num_partitions=len(PARTITIONS))])[TOPIC].result(TIMEOUT)
    acked = produce(0, 120)
    workers = Workers(BOOTSTRAP, GROUP, TOPIC, SESSION_MS, ASSIGNOR)
    summary = {}
    try:
        workers.start("w1")
        workers.start("w2")
        wait_until("w1 and w2 to split the 4 partitions", TIMEOUT, lambda: workers.split(["w1", "w2"], PARTITIONS))
        summary["two"] = workers.assignments()
        workers.start("w3")
        wait_until("a rebalance giving w3 partitions", TIMEOUT, lambda: workers.split(["w1", "w2", "w3"], PARTITIONS))
        summary["three"] = workers.assignments()
        wait_consumed(workers, acked, TIMEOUT, "the first 120 records")

        # One dies without leaving: the survivors take its partitions once its session
        # expires.
        victim = max(workers.assignments().items(), key=lambda kv: len(kv[1]))[0]
        survivors = [w for w in ("w1", "w2", "w3") if w != victim]
        killed = time.monotonic()
        workers.kill(victim)
        wait_until(f"{survivors} to take {victim}'s partitions", TIMEOUT, lambda: workers.split(survivors, PARTITIONS))
        takeover = time.monotonic() - killed
        log(f"survivors own every partition {takeover:.1f} s after {victim} was SIGKILLed")
        expect(takeover < TAKEOVER_MAX, f"takeover took {takeover:.1f} s (session {SESSION_MS} ms)")
        summary["takeover_s"] = round(takeover, 2)
        acked |= produce(120, 60)
        wait_consumed(workers, acked, TIMEOUT, "records produced after the death")

        # Commits survive the broker's SIGKILL and restart.
        ends = {}
        for p, o, _ in acked:
            ends[p] = max(ends.get(p, 0), o + 1)
        wait_until("every record committed", TIMEOUT, lambda: workers.committed() == ends)
        expect(committed_now() == ends, f"committed {committed_now()}, expected {ends}")
        ask("kill-restart 0")
        after = wait_until("the committed offsets after the restart", TIMEOUT, lambda: committed_now() or None, every=0.5)
        expect(after == ends, f"after the broker's restart the group's offsets are {after}, were {ends}")
        summary["committed_after_restart"] = {str(p): o for p, o in sorted(after.items())}
        acked |= produce(180, 60)
        wait_consumed(workers, acked, TIMEOUT, "records produced after the broker's restart")

        # Every member dies; a new one resumes where the commits say.
        for name in workers.alive():
            workers.kill(name)
        acked |= produce(240, 40)
        workers.start("w4")
        wait_consumed(workers, acked, TIMEOUT, "records produced for the last member")
        again = expect_consumed_exactly(workers, acked)
        summary["read_again_uncommitted"] = again
        summary["records"] = len(acked)
        summary["consumed"] = len(workers.consumed())
    finally:
        workers.stop_all()
    result(summary)


if __name__ == "__main__":
    main()
