"""One member of a consumer group (confluent-kafka), run as its own process by
confluent_group.py and cluster_failover.py, which may SIGKILL it.

Usage: confluent_worker.py BOOTSTRAP GROUP TOPIC NAME SESSION_TIMEOUT_MS [ASSIGNOR]

Prints one JSON object per line on stdout, each with `t` (CLOCK_MONOTONIC seconds, the
same clock in every process) and `ev`:
- `assigned` (`partitions`: the whole assignment after a rebalance),
- `record` (`p`, `o`, `v`: consumed, before its commit),
- `committed` (`p`, `o`: the next offset to read, after the synchronous commit succeeded),
- `commit_failed`, `error`.
Stops on SIGTERM: closes the consumer (commits nothing more, leaves the group).
"""

import json
import os
import signal
import sys
import time

from confluent_kafka import Consumer, KafkaException

bootstrap, group, topic, name, session_ms = sys.argv[1:6]
assignor = sys.argv[6] if len(sys.argv) > 6 else "range,roundrobin"
stopping = False


def emit(ev, **fields):
    fields.update(t=time.monotonic(), ev=ev, w=name)
    print(json.dumps(fields), flush=True)


def stop(*_):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, stop)
assignment = set()


def on_assign(consumer, partitions):
    assignment.update(p.partition for p in partitions)
    emit("assigned", partitions=sorted(assignment))


def on_revoke(consumer, partitions):
    assignment.difference_update(p.partition for p in partitions)
    emit("assigned", partitions=sorted(assignment))


# KAFKA_CLIENT_DEBUG=cgrp,protocol (say) turns librdkafka's debug logs on, on stderr.
debug = {"debug": os.environ["KAFKA_CLIENT_DEBUG"]} if os.environ.get("KAFKA_CLIENT_DEBUG") else {}
consumer = Consumer(
    {
        **debug,
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": name,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": int(session_ms),
        "heartbeat.interval.ms": max(int(session_ms) // 6, 100),
        "partition.assignment.strategy": assignor,
        "topic.metadata.refresh.interval.ms": 1000,
        "reconnect.backoff.max.ms": 500,
    }
)
consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke)
while not stopping:
    msg = consumer.poll(0.2)
    if msg is None:
        continue
    if msg.error() is not None:
        emit("error", error=str(msg.error()))
        continue
    emit("record", p=msg.partition(), o=msg.offset(), v=msg.value().decode())
    try:
        consumer.commit(message=msg, asynchronous=False)
        emit("committed", p=msg.partition(), o=msg.offset() + 1)
    except KafkaException as e:
        # A commit refused (a rebalance fenced this generation, the coordinator moved):
        # the record may be read again by whoever owns the partition next.
        emit("commit_failed", p=msg.partition(), o=msg.offset() + 1, error=str(e))
consumer.close()
emit("closed")
