"""kcat (Debian's, librdkafka 2.0) against shardlog's Kafka listener: -L lists the
broker, -P produces keyed records (the topic is created on first use), -C reads them
back, -Q finds an offset by timestamp, and -G consumes as a group member that commits:
a second run reads nothing, a third only what was produced since.

Usage: kcat_client.py BOOTSTRAP
"""

import json
import subprocess
import sys
import time

from harness import expect, log, result

BOOTSTRAP = sys.argv[1]
TOPIC = "kc-topic"
GROUP = "kc-group"
TIMEOUT = 30


def kcat(*args, stdin=None):
    cmd = ["kcat", "-b", BOOTSTRAP, *args]
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=TIMEOUT)
    expect(done.returncode == 0, f"{cmd} exited {done.returncode}: {done.stderr}")
    return done.stdout


def produce(first, count):
    lines = "".join(f"k{i}:v{i}\n" for i in range(first, first + count))
    kcat("-P", "-t", TOPIC, "-K:", "-p", "0", stdin=lines)


def group_run():
    """One `kcat -G` member until the end of the partition; the values it read."""
    # -o would force the start offset over the commit: a new group starts at the
    # beginning through auto.offset.reset instead.
    out = kcat("-G", GROUP, "-X", "auto.offset.reset=earliest", "-e", "-f", "%s\n", "-X", "session.timeout.ms=6000", TOPIC)
    return out.split()


def main():
    produce(0, 20)
    meta = json.loads(kcat("-L", "-J", "-t", TOPIC))
    expect(len(meta["brokers"]) >= 1, f"-L names no broker: {meta}")
    expect([t["topic"] for t in meta["topics"]] == [TOPIC], f"-L topics: {meta['topics']}")
    read = kcat("-C", "-t", TOPIC, "-p", "0", "-o", "beginning", "-e", "-f", "%k %s %o\n").splitlines()
    expect(read == [f"k{i} v{i} {i}" for i in range(20)], f"-C read {read}")
    # -Q: the first offset whose timestamp is at or after a time between two batches.
    time.sleep(0.05)
    between = int(time.time() * 1000)
    time.sleep(0.05)
    produce(20, 10)
    found = kcat("-Q", "-t", f"{TOPIC}:0:{between}").strip()
    log(f"-Q {between}: {found}")
    expect(found.endswith("offset 20"), f"-Q answered {found!r}, expected offset 20")
    first = group_run()
    expect(first == [f"v{i}" for i in range(30)], f"-G read {first}")
    again = group_run()
    expect(again == [], f"-G after its commit read {again} again")
    produce(30, 5)
    last = group_run()
    expect(last == [f"v{i}" for i in range(30, 35)], f"-G after new records read {last}")
    result({"brokers": len(meta["brokers"]), "group_reads": [len(first), len(again), len(last)], "query": found})


if __name__ == "__main__":
    main()
