"""confluent-kafka (librdkafka) over TLS to shardlog's Kafka listener
(`shardlogd --tls-cert`): a producer and a consumer with security.protocol=SSL, which
verify the broker's certificate (for the advertised host) against the CA; with a client
certificate and key when the broker asks for one (mutual TLS).

Usage: confluent_tls.py BOOTSTRAP TOPIC CA_PEM [CLIENT_PEM CLIENT_KEY]
"""

import sys

from confluent_kafka import Consumer, Producer

from harness import expect, log, result, wait_until

BOOTSTRAP, TOPIC, CA = sys.argv[1:4]
CLIENT = sys.argv[4:6]
RECORDS = 50
TIMEOUT = 30

tls = {
    "bootstrap.servers": BOOTSTRAP,
    "security.protocol": "SSL",
    "ssl.ca.location": CA,
    # librdkafka checks the broker's certificate names the host it dials (the default
    # since 2.0; set so older builds check it too).
    "ssl.endpoint.identification.algorithm": "https",
}
if CLIENT:
    tls["ssl.certificate.location"], tls["ssl.key.location"] = CLIENT

errors = []
producer = Producer({**tls, "acks": "all", "enable.idempotence": True, "error_cb": errors.append})
delivered = []


def on_delivery(error, message):
    expect(error is None, f"delivery failed: {error}")
    delivered.append(message.offset())


for i in range(RECORDS):
    producer.produce(TOPIC, value=f"tls-{i}".encode(), key=f"k{i}".encode(), on_delivery=on_delivery)
left = producer.flush(TIMEOUT)
expect(left == 0 and len(delivered) == RECORDS, f"{left} undelivered, {len(delivered)} delivered, errors {errors}")
log(f"produced {RECORDS} over TLS")

consumer = Consumer({**tls, "group.id": f"tls-{TOPIC}", "auto.offset.reset": "earliest", "error_cb": errors.append})
consumer.subscribe([TOPIC])
values = []


def poll():
    message = consumer.poll(0.5)
    if message is not None:
        expect(message.error() is None, f"consume: {message.error()}")
        values.append(message.value().decode())
    return len(values) >= RECORDS


wait_until(f"{RECORDS} records consumed", TIMEOUT, poll, every=0)
consumer.close()
expect(values == [f"tls-{i}" for i in range(RECORDS)], f"read back {values}")
result({"produced": len(delivered), "consumed": len(values), "mutual": bool(CLIENT)})
