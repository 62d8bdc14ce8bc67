"""confluent-kafka (librdkafka) against shardlog's Kafka listener: AdminClient create,
describe and delete; an idempotent producer with acks=all sending keyed records with
headers; every compression codec; everything read back by a consumer and compared.

Usage: confluent_produce.py BOOTSTRAP
"""

import sys

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from harness import expect, log, result, wait_until

BOOTSTRAP = sys.argv[1]
RECORDS = 400
KEYS = 20
CODECS = ["gzip", "snappy", "lz4", "zstd"]
CODEC_RECORDS = 60
TIMEOUT = 30


def admin_checks(admin):
    """Create, describe (metadata, DescribeTopics, DescribeConfigs), create again
    (refused), delete."""
    topic = "cf-admin"
    admin.create_topics([NewTopic(topic, num_partitions=3)])[topic].result(TIMEOUT)
    meta = admin.list_topics(topic, timeout=TIMEOUT)
    expect(meta.topics[topic].error is None, f"metadata of {topic}: {meta.topics[topic].error}")
    expect(sorted(meta.topics[topic].partitions) == [0, 1, 2], f"partitions {meta.topics[topic].partitions}")
    described = {}
    if hasattr(admin, "describe_topics"):
        from confluent_kafka import TopicCollection

        description = admin.describe_topics(TopicCollection([topic]))[topic].result(TIMEOUT)
        described["describe_topics_partitions"] = len(description.partitions)
        expect(len(description.partitions) == 3, f"describe_topics: {description}")
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(TIMEOUT)
    described["configs"] = len(configs)
    log(f"describe_configs({topic}): {sorted(configs)[:8]}...")
    again = admin.create_topics([NewTopic(topic, num_partitions=3)])[topic]
    try:
        again.result(TIMEOUT)
        raise AssertionError(f"creating {topic} twice succeeded")
    except KafkaException as e:
        code = e.args[0].code()
        expect(code == KafkaError.TOPIC_ALREADY_EXISTS, f"second create: {e}")
    admin.delete_topics([topic])[topic].result(TIMEOUT)
    wait_until(
        f"{topic} gone from metadata",
        TIMEOUT,
        lambda: topic not in admin.list_topics(timeout=TIMEOUT).topics,
        every=0.2,
    )
    return described


def produce(config, topic, records):
    """Sends `records` (key, value, headers); returns each one's (partition, offset) in
    input order, from the delivery reports."""
    producer = Producer(config)
    reports = [None] * len(records)
    errors = []

    def delivered(i):
        def report(err, msg):
            if err is not None:
                errors.append((i, err))
            else:
                reports[i] = (msg.partition(), msg.offset())

        return report

    for i, (key, value, headers) in enumerate(records):
        producer.produce(topic, value=value, key=key, headers=headers, on_delivery=delivered(i))
        producer.poll(0)
    left = producer.flush(TIMEOUT)
    expect(left == 0, f"{left} records still undelivered after {TIMEOUT} s")
    expect(not errors, f"delivery errors: {errors[:5]}")
    return reports


def consume_all(topic, partitions, count):
    """Reads `count` records from the start of `partitions` (assigned, no group)."""
    consumer = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": "cf-reader-unused",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    got = []

    def more():
        for msg in consumer.consume(100, 0.5):
            expect(msg.error() is None, f"consume error: {msg.error()}")
            got.append(msg)
        return len(got) >= count

    wait_until(f"{count} records of {topic}", TIMEOUT, more, every=0)
    consumer.close()
    expect(len(got) == count, f"read {len(got)} records of {topic}, expected {count}")
    return got


def keyed_idempotent(admin):
    topic = "cf-idempotent"
    admin.create_topics([NewTopic(topic, num_partitions=4)])[topic].result(TIMEOUT)
    records = [
        (f"k{i % KEYS}".encode(), f"v{i}".encode(), [("seq", str(i).encode()), ("src", b"cf")])
        for i in range(RECORDS)
    ]
    config = {
        "bootstrap.servers": BOOTSTRAP,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
    }
    reports = produce(config, topic, records)
    by_key = {}
    for (key, _, _), (partition, _) in zip(records, reports):
        expect(by_key.setdefault(key, partition) == partition, f"key {key} went to two partitions")
    per_partition = {}
    for partition, offset in reports:
        per_partition.setdefault(partition, []).append(offset)
    for partition, offsets in per_partition.items():
        expect(
            offsets == list(range(len(offsets))),
            f"partition {partition}: offsets {offsets[:10]}... are not 0, 1, 2, ... in send order",
        )
    where = {report: i for i, report in enumerate(reports)}
    for msg in consume_all(topic, range(4), RECORDS):
        i = where[(msg.partition(), msg.offset())]
        key, value, headers = records[i]
        expect(msg.key() == key and msg.value() == value, f"record {i}: {msg.key()} {msg.value()}")
        expect(msg.headers() == headers, f"record {i}: headers {msg.headers()}, sent {headers}")
    return {"partitions_used": len(per_partition), "records": RECORDS}


def codecs(admin):
    done = {}
    for codec in CODECS:
        topic = f"cf-codec-{codec}"
        admin.create_topics([NewTopic(topic, num_partitions=1)])[topic].result(TIMEOUT)
        records = [
            (f"k{i}".encode(), (f"{codec}-{i}-" * 20).encode(), [("codec", codec.encode())])
            for i in range(CODEC_RECORDS)
        ]
        config = {
            "bootstrap.servers": BOOTSTRAP,
            "compression.type": codec,
            "enable.idempotence": True,
            "acks": "all",
            # Several records per batch: the batch is what is compressed.
            "linger.ms": 50,
        }
        reports = produce(config, topic, records)
        expect(
            [offset for _, offset in reports] == list(range(CODEC_RECORDS)),
            f"{codec}: offsets {reports[:5]}...",
        )
        got = consume_all(topic, [0], CODEC_RECORDS)
        for msg, (key, value, headers) in zip(got, records):
            expect(
                (msg.key(), msg.value(), msg.headers()) == (key, value, headers),
                f"{codec}: offset {msg.offset()} read back as {msg.key()} {msg.value()[:20]}",
            )
        log(f"{codec}: {CODEC_RECORDS} records round-tripped")
        done[codec] = CODEC_RECORDS
    return done


def main():
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    summary = {"admin": admin_checks(admin)}
    log("admin: create, describe, create again (refused), delete: ok")
    summary["idempotent"] = keyed_idempotent(admin)
    log("idempotent keyed producer with headers: ok")
    summary["codecs"] = codecs(admin)
    result(summary)


if __name__ == "__main__":
    main()
