"""confluent-kafka (librdkafka) against a shardlogd running with --authorization on,
where User:ANONYMOUS may read topic `a` and group `readers` and nothing else: producing to
`a` fails with TOPIC_AUTHORIZATION_FAILED, creating a topic too, a consumer in group
`readers` reads `a`, one in group `others` gets GROUP_AUTHORIZATION_FAILED.

Usage: confluent_acl.py BOOTSTRAP
"""

import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from harness import expect, log, result

BOOTSTRAP = sys.argv[1]
TIMEOUT = 30


def produce_refused():
    """The delivery report's error code for a record sent to `a`."""
    errors = []
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "message.timeout.ms": 10000})
    producer.produce("a", b"three", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(TIMEOUT)
    expect(len(errors) == 1 and errors[0] is not None, f"delivery reports: {errors}")
    return errors[0].name()


def create_refused():
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    future = admin.create_topics([NewTopic("c", num_partitions=1)])["c"]
    try:
        future.result(TIMEOUT)
    except KafkaException as e:
        return e.args[0].name()
    raise AssertionError("creating topic c succeeded")


def consume(group):
    """What a consumer in `group` reads of `a` (values), or the error that stopped it."""
    consumer = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    consumer.subscribe(["a"])
    values = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    return {"values": values}
                log(f"{group}: {msg.error()}")
                return {"error": msg.error().name()}
            values.append(msg.value().decode())
    finally:
        consumer.close()
    return {"values": values, "timed_out": True}


result(
    {
        "produce": produce_refused(),
        "create": create_refused(),
        "readers": consume("readers"),
        "others": consume("others"),
    }
)
