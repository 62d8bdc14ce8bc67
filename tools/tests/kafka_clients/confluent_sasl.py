"""confluent-kafka (librdkafka) against a shardlogd run with `--authentication sasl`:
with SCRAM-SHA-256 and with SCRAM-SHA-512 a producer writes records and a consumer reads
them all back; a wrong password and no credentials at all are refused (an authentication
error, not a hang), and nothing is served to them.

Usage: confluent_sasl.py BOOTSTRAP SECURITY_PROTOCOL USER PASSWORD [CA_PEM]
(SECURITY_PROTOCOL: SASL_PLAINTEXT, or SASL_SSL with the CA that signed the listener's
certificate.)
"""

import sys

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from harness import expect, log, result

BOOTSTRAP, PROTOCOL, USER, PASSWORD = sys.argv[1:5]
TLS = {"ssl.ca.location": sys.argv[5]} if len(sys.argv) > 5 else {}
RECORDS = 50
TIMEOUT = 30


def config(mechanism, user=USER, password=PASSWORD):
    return {
        "bootstrap.servers": BOOTSTRAP,
        "security.protocol": PROTOCOL,
        "sasl.mechanisms": mechanism,
        "sasl.username": user,
        "sasl.password": password,
        **TLS,
    }


def produce_and_consume(mechanism):
    topic = "sasl-" + mechanism.lower()
    producer = Producer({**config(mechanism), "acks": "all", "enable.idempotence": True})
    delivered = []

    def on_delivery(error, message):
        expect(error is None, f"{mechanism}: delivery failed: {error}")
        delivered.append(message.offset())

    for i in range(RECORDS):
        producer.produce(topic, key=f"k{i}", value=f"{mechanism} {i}", on_delivery=on_delivery)
    left = producer.flush(TIMEOUT)
    expect(left == 0 and len(delivered) == RECORDS, f"{mechanism}: {len(delivered)} delivered, {left} left")
    consumer = Consumer(
        {
            **config(mechanism),
            "group.id": "sasl-" + mechanism.lower(),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    values = []
    import time

    deadline = time.monotonic() + TIMEOUT
    while len(values) < RECORDS and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is None:
            continue
        expect(message.error() is None, f"{mechanism}: consume error {message.error()}")
        values.append(message.value().decode())
    consumer.close()
    expect(values == [f"{mechanism} {i}" for i in range(RECORDS)], f"{mechanism}: read back {values[:5]}...")
    log(f"{mechanism}: {RECORDS} records produced and read back")
    return len(values)


def refused(conf, what):
    """An admin client with `conf` gets an authentication error (or, without SASL, no
    answer at all: the broker closes the connection), never topics."""
    errors = []
    admin = AdminClient({**conf, "error_cb": errors.append, "reconnect.backoff.ms": 1000})
    try:
        admin.list_topics(timeout=8)
        raise AssertionError(f"{what}: list_topics succeeded")
    except KafkaException as e:
        log(f"{what}: list_topics refused: {e}")
    # Error callbacks are served by poll.
    for _ in range(5):
        admin.poll(0.2)
    log(f"{what}: errors seen: {[str(x) for x in errors]}")
    codes = [e.code() for e in errors]
    authentication = KafkaError._AUTHENTICATION in codes
    return {"authentication_error": authentication, "errors": [str(e) for e in errors][:3]}


summary = {}
for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"]:
    summary[mechanism] = produce_and_consume(mechanism)
summary["wrong_password"] = refused(config("SCRAM-SHA-256", password=PASSWORD + "x"), "wrong password")
summary["unknown_user"] = refused(config("SCRAM-SHA-512", user="nobody"), "unknown user")
plain_protocol = "SSL" if PROTOCOL == "SASL_SSL" else "PLAINTEXT"
summary["no_credentials"] = refused(
    {"bootstrap.servers": BOOTSTRAP, "security.protocol": plain_protocol, **TLS}, "no credentials"
)
result(summary)
