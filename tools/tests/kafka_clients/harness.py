"""Shared by the client scripts of the real-client compatibility suite
(tools/tests/kafka_clients.rs runs them against a real shardlogd).

The Rust test reads a script's stdout line by line: a line `@kill NODE`, `@restart NODE`
or `@kill-restart NODE` asks it to SIGKILL (and/or start again) a shardlogd node, and it
answers `ok` (or `error ...`) on the script's stdin; the last line `@result JSON` is the
script's summary, which the test checks too. Anything else is a log line. A script that
finds a client misbehaving raises, and exits non-zero with the reason on stderr.
"""

import json
import sys
import time


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ask(command):
    """Asks the test for `command` (kill/restart a node) and waits until it is done."""
    print(f"@{command}", flush=True)
    answer = sys.stdin.readline().strip()
    if answer != "ok":
        raise RuntimeError(f"the test could not {command}: {answer!r}")
    log(f"done: {command}")


def result(summary):
    print("@result " + json.dumps(summary, sort_keys=True), flush=True)


def wait_until(what, timeout, check, every=0.05):
    """Polls `check` until it returns a true value, which is returned; raises naming
    `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(every)


def expect(condition, message):
    if not condition:
        raise AssertionError(message)
