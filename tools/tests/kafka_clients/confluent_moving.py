"""confluent-kafka (librdkafka) producing one record at a time, acks=all, to the two
partitions of a topic in turn on a node of two shards: its connection moves to each
partition's shard as it switches (the test counts the moves on the node), and every
record is read back in order by a consumer.

Usage: confluent_moving.py BOOTSTRAP
"""

import sys

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from harness import expect, log, result

BOOTSTRAP = sys.argv[1]
TOPIC = "moving"
IN_A_ROW = 40
TIMEOUT = 30


def produce_in_turns():
    """IN_A_ROW records to partition 0, then 1, then 0, then 1, each flushed (acknowledged)
    before the next is sent: what was sent to each partition, in order."""
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all", "linger.ms": 0})
    sent = {0: [], 1: []}
    failed = []

    def delivered(err, msg):
        if err is not None:
            failed.append(f"partition {msg.partition()}: {err}")

    for turn in range(2):
        for partition in (0, 1):
            for i in range(IN_A_ROW):
                value = f"turn {turn} partition {partition} record {i}".encode()
                producer.produce(TOPIC, value=value, partition=partition, on_delivery=delivered)
                expect(producer.flush(TIMEOUT) == 0, f"record {i} of turn {turn} not delivered")
                sent[partition].append(value)
    expect(not failed, f"delivery failed: {failed[:5]}")
    return sent


def read_back(partition, count):
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "moving", "enable.auto.commit": False})
    consumer.assign([TopicPartition(TOPIC, partition, 0)])
    got = []
    while len(got) < count:
        msg = consumer.poll(TIMEOUT)
        expect(msg is not None, f"partition {partition}: {len(got)} of {count} records read")
        if msg.error() is None:
            got.append(msg.value())
    consumer.close()
    return got


def main():
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    admin.create_topics([NewTopic(TOPIC, num_partitions=2)])[TOPIC].result(TIMEOUT)
    sent = produce_in_turns()
    summary = {}
    for partition, values in sent.items():
        got = read_back(partition, len(values))
        expect(got == values, f"partition {partition}: read back differs from what was sent")
        summary[f"partition {partition}"] = len(got)
    log(f"read back in order: {summary}")
    result(summary)


if __name__ == "__main__":
    main()
