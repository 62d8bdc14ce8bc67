"""kafka-python against shardlog's Kafka listener: KafkaAdminClient creates a topic, a
KafkaProducer (acks=all) sends keyed records, a KafkaConsumer in a group reads them all
and commits; after more records, a new consumer of the group reads exactly the new
ones (it resumed at the commit).

Usage: kafka_python_client.py BOOTSTRAP
"""

import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from harness import expect, log, result

BOOTSTRAP = sys.argv[1]
TOPIC = "kp-topic"
GROUP = "kp-group"
TIMEOUT = 30


def produce(first, count):
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    futures = [
        (f"r{i}", producer.send(TOPIC, key=f"k{i}".encode(), value=f"r{i}".encode()))
        for i in range(first, first + count)
    ]
    producer.flush(TIMEOUT)
    acked = set()
    for value, future in futures:
        meta = future.get(TIMEOUT)
        acked.add((meta.partition, meta.offset, value))
    producer.close()
    return acked


def consume_group(expected):
    """A new member of GROUP reads until it has `expected`, then a second longer, commits
    and closes; returns what it read."""
    consumer = KafkaConsumer(
        TOPIC,
        bootstrap_servers=BOOTSTRAP,
        group_id=GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    got = []
    deadline = time.monotonic() + TIMEOUT
    settle = None
    while time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            got.extend((r.partition, r.offset, r.value.decode()) for r in records)
        if len(got) >= len(expected) and settle is None:
            # Anything read past what was expected would be read twice.
            settle = time.monotonic() + 1
        if settle is not None and time.monotonic() > settle:
            break
    consumer.commit()
    committed = {p: consumer.committed(TopicPartition(TOPIC, p)) for p in consumer.partitions_for_topic(TOPIC)}
    consumer.close()
    log(f"read {len(got)}, committed {committed}")
    expect(sorted(got) == sorted(expected), f"read {sorted(got)[:5]}... ({len(got)}), expected {len(expected)}")
    return committed


def main():
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    admin.create_topics([NewTopic(TOPIC, num_partitions=2, replication_factor=1)])
    admin.close()
    first = produce(0, 50)
    consume_group(first)
    second = produce(50, 10)
    committed = consume_group(second)
    ends = {}
    for p, o, _ in first | second:
        ends[p] = max(ends.get(p, 0), o + 1)
    expect(committed == ends, f"committed {committed}, expected {ends}")
    result({"produced": len(first | second), "committed": {str(p): o for p, o in committed.items()}})


if __name__ == "__main__":
    main()
