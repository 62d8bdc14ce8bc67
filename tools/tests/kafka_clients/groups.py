"""Consumer-group bookkeeping shared by confluent_group.py and cluster_failover.py:
worker processes (confluent_worker.py) started, watched and killed, their events
gathered, and the checks on what they read and committed."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

from harness import expect, log

HERE = os.path.dirname(os.path.abspath(__file__))


class Workers:
    """The group's member processes and every event they printed."""

    def __init__(self, bootstrap, group, topic, session_ms, assignor):
        self.args = [bootstrap, group, topic]
        self.session_ms = session_ms
        self.assignor = assignor
        self.lock = threading.Lock()
        self.events = []
        self.assignment = {}
        self.procs = {}

    def start(self, name):
        proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "confluent_worker.py"), *self.args, name,
             str(self.session_ms), self.assignor],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.procs[name] = proc
        self.assignment[name] = []
        threading.Thread(target=self._read, args=(name, proc), daemon=True).start()
        log(f"worker {name} started (pid {proc.pid})")

    def _read(self, name, proc):
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                log(f"{name}: {line.rstrip()}")
                continue
            with self.lock:
                self.events.append(event)
                if event["ev"] == "assigned":
                    self.assignment[name] = event["partitions"]
                    log(f"{name} assigned {event['partitions']}")
                elif event["ev"] in ("error", "commit_failed"):
                    log(f"{name}: {event}")

    def kill(self, name):
        """SIGKILL: no leave, no last commit; the coordinator finds out by the session
        timeout."""
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()
        with self.lock:
            self.assignment[name] = []
        log(f"worker {name} SIGKILLed")

    def stop_all(self):
        for name, proc in self.procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def alive(self):
        return [name for name, proc in self.procs.items() if proc.poll() is None]

    def assignments(self):
        with self.lock:
            return {name: list(self.assignment[name]) for name in self.alive()}

    def split(self, names, partitions):
        """Whether `names` (the live members) hold every partition, each exactly once,
        and each member at least one."""
        now = self.assignments()
        held = [p for name in names for p in now.get(name, [])]
        return (
            set(now) == set(names)
            and sorted(held) == sorted(partitions)
            and all(now[name] for name in names)
        )

    def snapshot(self):
        with self.lock:
            return sorted(self.events, key=lambda e: e["t"])

    def consumed(self):
        return {(e["p"], e["o"], e["v"]) for e in self.snapshot() if e["ev"] == "record"}

    def committed(self):
        """The highest next-offset committed per partition."""
        out = {}
        for e in self.snapshot():
            if e["ev"] == "committed":
                out[e["p"]] = max(out.get(e["p"], 0), e["o"])
        return out


def check_reads(events):
    """Nothing read again once a commit covered it: in time order, a record of
    partition p at offset o after a successful commit of p at an offset above o is a
    violation. Returns (violations, records read twice that no commit covered)."""
    committed = {}
    seen = set()
    violations = []
    again = 0
    for e in events:
        if e["ev"] == "committed":
            committed[e["p"]] = max(committed.get(e["p"], 0), e["o"])
        elif e["ev"] == "record":
            if e["o"] < committed.get(e["p"], 0):
                violations.append(e)
            if (e["p"], e["o"]) in seen:
                again += 1
            seen.add((e["p"], e["o"]))
    return violations, again


def expect_consumed_exactly(workers, acked):
    """Every acknowledged record was consumed and nothing else, and nothing was read
    again after a commit."""
    consumed = workers.consumed()
    missing = acked - consumed
    extra = consumed - acked
    expect(not missing, f"{len(missing)} acknowledged records never consumed: {sorted(missing)[:10]}")
    expect(not extra, f"{len(extra)} consumed records were never acknowledged: {sorted(extra)[:10]}")
    violations, again = check_reads(workers.snapshot())
    expect(not violations, f"read again after a commit covered them: {violations[:5]}")
    return again


def wait_consumed(workers, acked, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        missing = acked - workers.consumed()
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {len(missing)} of {len(acked)} records not consumed "
                               f"after {timeout} s (e.g. {sorted(missing)[:5]}); "
                               f"assignments {workers.assignments()}")
        time.sleep(0.1)
