"""Drives the console in Debian's chromium (headless, through Playwright) for
tools/tests/console.rs, reading what the page shows (the state and ISR cells' text). Usage: browser.py URL VICTIM_NODE TOPIC PARTITIONS SCREENSHOT.

Speaks with the test over stdin/stdout, one line each way:
  1. opens URL, waits until the page shows every node live and every partition of TOPIC
     with a leader and an ISR of all its replicas, then prints "RENDERED <summary>";
  2. reads a line (the test SIGKILLed VICTIM_NODE meanwhile), then waits, without
     reloading, until the page shows VICTIM_NODE down and no partition of TOPIC with it in
     its ISR; saves a screenshot and prints "DOWN <summary>".
Exits non-zero, naming what it waited for, when a deadline passes.
"""

import json
import sys

from playwright.sync_api import sync_playwright

RENDER_DEADLINE_MS = 60_000
DOWN_DEADLINE_MS = 90_000


def summary(page):
    """What the page shows, read from its tables (the test prints it)."""
    return page.evaluate(
        """() => ({
            nodes: [...document.querySelectorAll('#nodes tbody tr[data-node]')]
                .map(r => [r.dataset.node, r.querySelector('.state').innerText]),
            partitions: [...document.querySelectorAll('#partitions tbody tr[data-topic]')]
                .map(r => [r.dataset.topic, r.dataset.partition, r.dataset.leader,
                           r.querySelector('.isr').innerText]),
            marker: window.__consoleTestMarker || null,
        })"""
    )


def main():
    url, victim, topic, partitions, screenshot = sys.argv[1:6]
    partitions = int(partitions)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        # Every node live, every partition led with a full ISR, as the page renders them.
        page.wait_for_function(
            """([topic, partitions]) => {
                const nodes = [...document.querySelectorAll('#nodes tbody tr[data-node]')];
                const rows = [...document.querySelectorAll('#partitions tbody tr')]
                    .filter(r => r.dataset.topic === topic);
                const isr = r => r.querySelector('.isr').innerText.split(',').map(s => s.trim());
                return nodes.length === 3
                    && nodes.every(r => r.querySelector('.state').innerText.trim() === 'live')
                    && rows.length === partitions
                    && rows.every(r => r.dataset.leader !== '–' && isr(r).length === 3);
            }""",
            arg=[topic, partitions],
            timeout=RENDER_DEADLINE_MS,
        )
        # A reload would lose this: the DOWN check proves the page updated by itself.
        page.evaluate("() => { window.__consoleTestMarker = 'same page'; }")
        print("RENDERED " + json.dumps(summary(page)), flush=True)

        sys.stdin.readline()
        page.wait_for_function(
            """([victim, topic]) => {
                const row = document.querySelector(`#nodes tbody tr[data-node="${victim}"]`);
                const rows = [...document.querySelectorAll('#partitions tbody tr')]
                    .filter(r => r.dataset.topic === topic);
                const isr = r => r.querySelector('.isr').innerText.split(',').map(s => s.trim());
                return row !== null
                    && row.querySelector('.state').innerText.trim().startsWith('down')
                    && rows.length > 0
                    && rows.every(r => !isr(r).includes(victim));
            }""",
            arg=[victim, topic],
            timeout=DOWN_DEADLINE_MS,
        )
        shown = summary(page)
        if shown["marker"] != "same page":
            sys.exit("the page was reloaded: the marker set before the kill is gone")
        # Let the charts get a few samples in before the picture.
        page.wait_for_timeout(4000)
        page.screenshot(path=screenshot, full_page=True)
        print("DOWN " + json.dumps(shown), flush=True)
        browser.close()


if __name__ == "__main__":
    main()
