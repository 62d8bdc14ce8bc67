//! The nemesis: a schedule of faults drawn from a seed (the same seed gives the same
//! faults, targets and durations, whatever the timing), applied one at a time to the
//! cluster: each fault begins, holds for its time, ends, and the next one follows after a
//! pause. Every begin and end is an event of the history.

use std::time::Duration;

use clap::ValueEnum;

use super::history::{Event, History};
use super::nodes::Nodes;

/// The kinds of fault, for `--faults`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FaultKind {
    /// SIGKILL a node; restart it after the hold.
    Kill,
    /// SIGSTOP a node; SIGCONT after the hold.
    Stop,
    /// SIGTERM a node (a clean stop) and start it again at once.
    Restart,
    /// Cut the links between two nodes both ways.
    Partition,
    /// Cut the link from one node to another only (its connections to the other).
    Oneway,
    /// Isolate a node: cut every link to and from it.
    Isolate,
    /// Fill a node's disk (its loop mount); free it after the hold.
    Disk,
    /// Not a fault the nemesis injects: the topic gets small segments and short
    /// retention, so segments roll and are deleted during the run.
    Retention,
}

impl FaultKind {
    /// The name used in the history and the summary.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Stop => "stop",
            FaultKind::Restart => "restart",
            FaultKind::Partition => "partition",
            FaultKind::Oneway => "oneway",
            FaultKind::Isolate => "isolate",
            FaultKind::Disk => "disk",
            FaultKind::Retention => "retention",
        }
    }
}

/// One planned fault.
#[derive(Debug, Clone, Copy)]
pub struct Fault {
    /// What.
    pub kind: FaultKind,
    /// The node (for links: the first end).
    pub node: usize,
    /// The other end of a link.
    pub other: usize,
    /// How long it holds.
    pub hold: Duration,
    /// Pause after it ends.
    pub gap: Duration,
}

impl Fault {
    fn target(&self) -> String {
        match self.kind {
            FaultKind::Partition => format!("{}<->{}", self.node, self.other),
            FaultKind::Oneway => format!("{}->{}", self.node, self.other),
            _ => format!("node {}", self.node),
        }
    }
}

/// splitmix64: small, seedable, the same on every platform.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn millis(&mut self, range: std::ops::Range<u64>) -> Duration {
        Duration::from_millis(range.start + self.below(range.end - range.start))
    }
}

/// The schedule: an endless sequence of faults drawn from the seed.
pub struct Schedule {
    rng: Rng,
    kinds: Vec<FaultKind>,
    nodes: usize,
    hold_ms: std::ops::Range<u64>,
    gap_ms: std::ops::Range<u64>,
}

impl Schedule {
    /// Faults of `kinds` (`Retention` is left out: it is no action) on `nodes` nodes.
    pub fn new(
        seed: u64,
        kinds: &[FaultKind],
        nodes: usize,
        hold_ms: std::ops::Range<u64>,
        gap_ms: std::ops::Range<u64>,
    ) -> Schedule {
        let kinds = kinds
            .iter()
            .copied()
            .filter(|k| *k != FaultKind::Retention)
            .collect();
        Schedule {
            rng: Rng::new(seed),
            kinds,
            nodes,
            hold_ms,
            gap_ms,
        }
    }

    /// The next fault; `None` when no kind is enabled.
    pub fn next_fault(&mut self) -> Option<Fault> {
        let kinds = self.kinds.len() as u64;
        if kinds == 0 || self.nodes < 2 {
            return None;
        }
        let kind = self.kinds[usize::try_from(self.rng.below(kinds)).ok()?];
        let nodes = self.nodes as u64;
        let node = usize::try_from(self.rng.below(nodes)).ok()?;
        let other = (node + 1 + usize::try_from(self.rng.below(nodes - 1)).ok()?) % self.nodes;
        let hold = self.rng.millis(self.hold_ms.clone());
        let gap = self.rng.millis(self.gap_ms.clone());
        Some(Fault {
            kind,
            node,
            other,
            hold,
            gap,
        })
    }
}

/// Applies `fault` (number `n`): begins it, sleeps its hold (in steps, returning early
/// when `stop` says so), ends it. Errors doing either are recorded in the history and
/// returned.
pub fn apply(
    nodes: &mut Nodes,
    history: &History,
    n: u64,
    fault: &Fault,
    stop: &dyn Fn() -> bool,
) -> anyhow::Result<()> {
    let record = |phase: &str, error: Option<String>| {
        history.push(&Event::Fault {
            t: history.now(),
            n,
            kind: fault.kind.name().to_owned(),
            target: fault.target(),
            phase: phase.to_owned(),
            error,
        });
    };
    record("begin", None);
    let began = begin(nodes, fault);
    if let Err(e) = &began {
        record("begin-failed", Some(format!("{e:#}")));
    }
    sleep_unless(fault.hold, stop);
    let ended = end(nodes, fault);
    record("end", ended.as_ref().err().map(|e| format!("{e:#}")));
    began.and(ended)
}

fn begin(nodes: &mut Nodes, fault: &Fault) -> anyhow::Result<()> {
    let (a, b) = (fault.node, fault.other);
    match fault.kind {
        FaultKind::Kill => nodes.kill(a),
        FaultKind::Stop => nodes.pause(a),
        FaultKind::Restart => {
            // A node that hung on SIGTERM was SIGKILLed: it starts again all the same.
            let stopped = nodes.terminate(a);
            nodes.start(&[a])?;
            stopped
        }
        FaultKind::Partition => {
            nodes.set_link(a, b, true);
            nodes.set_link(b, a, true);
            Ok(())
        }
        FaultKind::Oneway => {
            nodes.set_link(a, b, true);
            Ok(())
        }
        FaultKind::Isolate => {
            for other in (0..nodes.len()).filter(|&o| o != a) {
                nodes.set_link(a, other, true);
                nodes.set_link(other, a, true);
            }
            Ok(())
        }
        FaultKind::Disk => nodes.fill_disk(a).map(drop),
        FaultKind::Retention => Ok(()),
    }
}

fn end(nodes: &mut Nodes, fault: &Fault) -> anyhow::Result<()> {
    let a = fault.node;
    match fault.kind {
        FaultKind::Kill => nodes.start(&[a]),
        FaultKind::Stop => nodes.resume(a),
        FaultKind::Partition | FaultKind::Oneway | FaultKind::Isolate => {
            nodes.heal_all_links();
            Ok(())
        }
        FaultKind::Disk => nodes.free_disk(a),
        FaultKind::Restart | FaultKind::Retention => Ok(()),
    }
}

/// Sleeps `total` in steps of 50 ms, returning early once `stop()`.
pub fn sleep_unless(total: Duration, stop: &dyn Fn() -> bool) {
    let step = Duration::from_millis(50);
    let deadline = std::time::Instant::now() + total;
    while !stop() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(step));
    }
}
