"""aiokafka against shardlog's Kafka listener: AIOKafkaAdminClient creates a topic, an
AIOKafkaProducer (acks=all) sends keyed records, an AIOKafkaConsumer in a group reads
them all and commits; after more records, a new consumer of the group reads exactly the
new ones (it resumed at the commit).

Usage: aiokafka_client.py BOOTSTRAP
"""

import asyncio
import sys
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from harness import expect, log, result

BOOTSTRAP = sys.argv[1]
TOPIC = "aio-topic"
GROUP = "aio-group"
TIMEOUT = 30


async def produce(first, count):
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    await producer.start()
    try:
        sent = [
            (f"r{i}", await producer.send(TOPIC, key=f"k{i}".encode(), value=f"r{i}".encode()))
            for i in range(first, first + count)
        ]
        acked = set()
        for value, future in sent:
            meta = await asyncio.wait_for(future, TIMEOUT)
            acked.add((meta.partition, meta.offset, value))
    finally:
        await producer.stop()
    return acked


async def consume_group(expected):
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=BOOTSTRAP,
        group_id=GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    await consumer.start()
    got = []
    try:
        deadline = time.monotonic() + TIMEOUT
        settle = None
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                got.extend((r.partition, r.offset, r.value.decode()) for r in records)
            if len(got) >= len(expected) and settle is None:
                settle = time.monotonic() + 1
            if settle is not None and time.monotonic() > settle:
                break
        await consumer.commit()
        partitions = consumer.partitions_for_topic(TOPIC)
        committed = {p: await consumer.committed(TopicPartition(TOPIC, p)) for p in partitions}
    finally:
        await consumer.stop()
    log(f"read {len(got)}, committed {committed}")
    expect(sorted(got) == sorted(expected), f"read {sorted(got)[:5]}... ({len(got)}), expected {len(expected)}")
    return committed


async def main():
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    first = await produce(0, 50)
    await consume_group(first)
    second = await produce(50, 10)
    committed = await consume_group(second)
    ends = {}
    for p, o, _ in first | second:
        ends[p] = max(ends.get(p, 0), o + 1)
    expect(committed == ends, f"committed {committed}, expected {ends}")
    result({"produced": len(first | second), "committed": {str(p): o for p, o in committed.items()}})


if __name__ == "__main__":
    asyncio.run(main())
