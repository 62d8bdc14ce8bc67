//! Consumer groups through the shipped binaries: `shardlog consume --group` processes
//! against a real `shardlogd` share a topic's partitions, rebalance when a member joins,
//! take over a SIGKILLed member's partitions after its session timeout, and resume after
//! the last commit when restarted; `shardlog group list|describe|reset-offsets` show and
//! change what the group committed. Records are produced with `shardlog produce` (keyed,
//! so they spread over the partitions; its other settings the defaults).
#![cfg(test)]
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, describe};

const TOPIC: &str = "orders";
const GROUP: &str = "g";
/// Short, so a killed member's partitions move within seconds.
const SESSION_TIMEOUT_MS: &str = "4000";
/// A commit interval no step waits for: these members commit only when the group
/// rebalances and when they exit, so the test sees those commits alone.
const COMMIT_ONLY_ON_REBALANCE_AND_EXIT: &[&str] = &["--commit-interval-ms", "600000"];
/// How long any step may take on a loaded machine before the test fails.
const STEP_MAX: Duration = Duration::from_secs(90);

/// A record as `consume --format full` prints it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Printed {
    partition: u32,
    offset: u64,
    value: String,
}

/// A `shardlog consume --group` child and what it printed so far.
struct Consumer {
    child: Child,
    printed: Arc<Mutex<Vec<Printed>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Consumer {
    fn start(server: &Server, extra: &[&str]) -> Consumer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardlog"))
            .args(["consume", "--brokers", &server.brokers(), "--topic", TOPIC])
            .args(["--group", GROUP, "--format", "full"])
            .args(["--session-timeout-ms", SESSION_TIMEOUT_MS])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let printed = Arc::new(Mutex::new(Vec::new()));
        let sink = printed.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let fields: Vec<&str> = line.split('\t').collect();
                assert_eq!(fields.len(), 5, "{line}");
                sink.lock().unwrap().push(Printed {
                    partition: fields[0].parse().unwrap(),
                    offset: fields[1].parse().unwrap(),
                    value: fields[4].to_owned(),
                });
            }
        });
        Consumer {
            child,
            printed,
            reader: Some(reader),
        }
    }

    fn printed(&self) -> Vec<Printed> {
        self.printed.lock().unwrap().clone()
    }

    fn partitions(&self) -> BTreeSet<u32> {
        self.printed().iter().map(|p| p.partition).collect()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for it to exit (after a signal or `--count`); returns what it printed.
    fn wait(mut self) -> (Option<i32>, Vec<Printed>) {
        let status = self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        (status.code(), self.printed())
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Produces `values` keyed by themselves (so they spread over the partitions).
fn produce(server: &Server, values: &[String]) {
    let input: String = values.iter().map(|v| format!("{v}\t{v}\n")).collect();
    server.ok(&["produce", "--topic", TOPIC, "--keyed"], &input);
}

fn batch(name: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{name}-{i}")).collect()
}

/// Polls `done` until it holds; fails naming `what` after [`STEP_MAX`].
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP_MAX;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every value printed by `consumers`.
fn union(consumers: &[&Consumer]) -> BTreeSet<String> {
    consumers
        .iter()
        .flat_map(|c| c.printed())
        .map(|p| p.value)
        .collect()
}

/// `group describe`: the title line and the table rows by column name.
fn group_describe(server: &Server) -> (String, Vec<BTreeMap<String, String>>) {
    parse_describe(&server.ok(&["group", "describe", GROUP], ""))
}

/// The title line and the table rows of `group describe`'s output.
fn parse_describe(out: &str) -> (String, Vec<BTreeMap<String, String>>) {
    let mut lines = out.lines();
    let title = lines.next().unwrap().to_owned();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let rows = lines
        .map(|line| {
            header
                .iter()
                .map(|h| (*h).to_owned())
                .zip(line.split('\t').map(str::to_owned))
                .collect()
        })
        .collect();
    (title, rows)
}

/// Waits until the group is stable with `members` members that read all 4 partitions.
fn wait_stable(server: &Server, members: usize) {
    wait_until(&format!("a stable group of {members}"), || {
        // Before its first member has joined, the group does not exist (exit 1).
        let described = server.run(&["group", "describe", GROUP], "");
        if !described.status.success() {
            return false;
        }
        let (title, rows) = parse_describe(&String::from_utf8_lossy(&described.stdout));
        let readers: BTreeSet<&String> = rows
            .iter()
            .filter(|r| r["partition"] != "-" && r["member"] != "-")
            .map(|r| &r["member"])
            .collect();
        let plural = if members == 1 { "" } else { "s" };
        title.contains("state Stable")
            && title.ends_with(&format!(" {members} member{plural}"))
            && readers.len() == members.min(4)
            && rows.iter().filter(|r| r["member"] != "-").count() == 4
    });
}

/// Values printed more than once across `printed`.
fn duplicates(printed: &[Printed]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    printed
        .iter()
        .filter(|p| !seen.insert(p.value.clone()))
        .map(|p| p.value.clone())
        .collect()
}

#[test]
fn group_members_share_rebalance_take_over_and_resume() {
    let server = Server::start();
    server.create(TOPIC, 4);
    let mut produced: BTreeSet<String> = BTreeSet::new();
    let (a, b) = two_split_the_partitions(&server, &mut produced);
    let c = a_third_joins(&server, &mut produced, [&a, &b]);
    let killed_printed = one_is_killed(&server, &mut produced, [&a, &b], c);

    // Both stop (SIGTERM): each commits what it printed and leaves.
    for consumer in [&a, &b] {
        consumer.signal("-TERM");
    }
    let mut survivors = Vec::new();
    for consumer in [a, b] {
        let (code, printed) = consumer.wait();
        assert_eq!(code, Some(0));
        survivors.extend(printed);
    }
    let everything_before: BTreeSet<String> = survivors
        .iter()
        .map(|p| p.value.clone())
        .chain(killed_printed)
        .collect();
    assert_eq!(everything_before, produced, "the union of what was printed");

    // A consumer started afterwards resumes after the last commit: exactly the new
    // records, none of the earlier ones again.
    let fourth = batch("fourth", 100);
    produce(&server, &fourth);
    produced.extend(fourth.iter().cloned());
    let (code, printed) = Consumer::start(&server, &["--count", "100"]).wait();
    assert_eq!(code, Some(0));
    let values: BTreeSet<String> = printed.iter().map(|p| p.value.clone()).collect();
    assert_eq!(values, fourth.iter().cloned().collect::<BTreeSet<_>>());
    assert_eq!(printed.len(), fourth.len());

    reset_offsets(&server, produced);
}

/// Two members split the four partitions: each record printed by exactly one; nothing is
/// committed before a rebalance or an exit.
fn two_split_the_partitions(
    server: &Server,
    produced: &mut BTreeSet<String>,
) -> (Consumer, Consumer) {
    let a = Consumer::start(server, COMMIT_ONLY_ON_REBALANCE_AND_EXIT);
    let b = Consumer::start(server, COMMIT_ONLY_ON_REBALANCE_AND_EXIT);
    wait_stable(server, 2);
    let first = batch("first", 200);
    produce(server, &first);
    produced.extend(first.iter().cloned());
    wait_until("the first batch printed", || union(&[&a, &b]) == *produced);
    let (pa, pb) = (a.partitions(), b.partitions());
    assert_eq!(pa.len(), 2, "a read {pa:?}, b read {pb:?}");
    assert_eq!(pb.len(), 2, "a read {pa:?}, b read {pb:?}");
    assert!(pa.is_disjoint(&pb), "a read {pa:?}, b read {pb:?}");
    let mut all = a.printed();
    all.extend(b.printed());
    assert_eq!(all.len(), first.len(), "{:?}", duplicates(&all));

    // Nothing of it committed yet (no rebalance or exit since it was printed).
    let (_, rows) = group_describe(server);
    let uncommitted = |r: &BTreeMap<String, String>| r["committed"] == "-" || r["committed"] == "0";
    assert!(rows.iter().all(uncommitted), "{rows:?}");
    let list = server.ok(&["group", "list"], "");
    let listed = format!("{GROUP}\tStable\tconsumer");
    assert!(list.lines().any(|l| l == listed), "{list}");
    (a, b)
}

/// A third member joins: the group rebalances over the three, and the members commit
/// what they printed before they give partitions up (no lag left), so nothing is printed
/// twice.
fn a_third_joins(
    server: &Server,
    produced: &mut BTreeSet<String>,
    [a, b]: [&Consumer; 2],
) -> Consumer {
    let c = Consumer::start(server, COMMIT_ONLY_ON_REBALANCE_AND_EXIT);
    wait_stable(server, 3);
    let (_, rows) = group_describe(server);
    assert!(rows.iter().all(|r| r["lag"] == "0"), "{rows:?}");
    let second = batch("second", 200);
    produce(server, &second);
    produced.extend(second.iter().cloned());
    wait_until("the second batch printed", || {
        union(&[a, b, &c]) == *produced
    });
    assert!(!c.partitions().is_empty(), "the new member read nothing");
    let all: Vec<Printed> = [a, b, &c].iter().flat_map(|c| c.printed()).collect();
    assert_eq!(duplicates(&all), BTreeSet::new());
    c
}

/// One member is SIGKILLed: after its session timeout the others take its partitions
/// from its last commit (it committed nothing, so everything it printed is printed
/// again, by them), and the survivors print nothing twice themselves. Returns what the
/// killed one printed.
fn one_is_killed(
    server: &Server,
    produced: &mut BTreeSet<String>,
    [a, b]: [&Consumer; 2],
    mut c: Consumer,
) -> BTreeSet<String> {
    c.child.kill().unwrap();
    c.child.wait().unwrap();
    let killed_printed: BTreeSet<String> = c.printed().into_iter().map(|p| p.value).collect();
    let third = batch("third", 200);
    produce(server, &third);
    produced.extend(third.iter().cloned());
    wait_until("the third batch printed by the survivors", || {
        let seen = union(&[a, b]);
        third.iter().all(|v| seen.contains(v))
    });
    wait_stable(server, 2);
    let mut all = a.printed();
    all.extend(b.printed());
    let twice = duplicates(&all);
    assert!(twice.is_empty(), "the survivors printed twice: {twice:?}");
    let again: BTreeSet<String> = all.iter().map(|p| p.value.clone()).collect();
    let lost: Vec<&String> = killed_printed.difference(&again).collect();
    assert!(
        lost.is_empty(),
        "not taken over from the killed member: {lost:?}"
    );
    killed_printed
}

/// A member commits every `--commit-interval-ms` while it runs. `group reset-offsets` is
/// refused while the group has a member; afterwards every partition is back at 0 and a
/// consumer reads everything again.
fn reset_offsets(server: &Server, mut produced: BTreeSet<String>) {
    let (title, rows) = group_describe(server);
    assert!(title.contains("state Empty"), "{title}");
    assert!(rows.iter().all(|r| r["lag"] == "0"), "{rows:?}");

    let member = Consumer::start(server, &["--commit-interval-ms", "200"]);
    wait_stable(server, 1);
    let fifth = batch("fifth", 50);
    produce(server, &fifth);
    produced.extend(fifth.iter().cloned());
    wait_until("the fifth batch committed while the member runs", || {
        let (_, rows) = group_describe(server);
        rows.iter().all(|r| r["lag"] == "0")
    });
    let produced = produced.len();
    let refused = server.run(
        &[
            "group",
            "reset-offsets",
            GROUP,
            "--topic",
            TOPIC,
            "--to",
            "earliest",
        ],
        "",
    );
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    assert!(
        common::stderr(&refused).contains("member"),
        "{}",
        describe(&refused)
    );
    member.signal("-TERM");
    assert_eq!(member.wait().0, Some(0));

    let out = server.ok(
        &[
            "group",
            "reset-offsets",
            GROUP,
            "--topic",
            TOPIC,
            "--to",
            "earliest",
        ],
        "",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[1], "topic\tpartition\toffset");
    assert_eq!(
        &lines[2..],
        (0..4)
            .map(|p| format!("{TOPIC}\t{p}\t0"))
            .collect::<Vec<_>>()
    );
    let (_, rows) = group_describe(server);
    let lag: u64 = rows.iter().map(|r| r["lag"].parse::<u64>().unwrap()).sum();
    assert_eq!(lag, produced as u64, "{rows:?}");
    assert!(rows.iter().all(|r| r["committed"] == "0"), "{rows:?}");

    let again = Consumer::start(server, &["--count", &produced.to_string()]);
    let (code, printed) = again.wait();
    assert_eq!(code, Some(0));
    assert_eq!(printed.len(), produced);
}
