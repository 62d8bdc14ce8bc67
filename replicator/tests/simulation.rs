//! The seed sweep: a fixed range of seeds through the deterministic simulation, every
//! checker after every step. A failure prints its seed; `SHARDLOG_SEED=<n> cargo test
//! -p shardlog-replicator --features simulation --test simulation` replays exactly it.
//! `SHARDLOG_SIM_SEEDS=<count>` widens the sweep (a soak).

use std::panic::{AssertUnwindSafe, catch_unwind};

use shardlog_replicator::sim::{Report, SimConfig, run};

const SEEDS_CI: u64 = 200;

fn run_seed(seed: u64, config: &SimConfig) -> Report {
    match catch_unwind(AssertUnwindSafe(|| run(seed, config))) {
        Ok(Ok(report)) => report,
        Ok(Err(failure)) => panic!("{failure}"),
        Err(_) => {
            panic!("seed {seed} panicked (assertion above); replay with SHARDLOG_SEED={seed}")
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn seed_sweep() {
    let config = SimConfig::default();
    let seeds: Vec<u64> = match env_u64("SHARDLOG_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("SHARDLOG_SIM_SEEDS").unwrap_or(SEEDS_CI)).collect(),
    };
    let mut total = Report::default();
    for &seed in &seeds {
        let report = run_seed(seed, &config);
        if seeds.len() == 1 {
            eprintln!("{report:?}");
        }
        total.steps += report.steps;
        total.committed_end += report.committed_end;
        total.elections += report.elections;
        for i in 0..3 {
            total.checked[i] += report.checked[i];
            total.faults[i] += report.faults[i];
            total.messages[i] += report.messages[i];
        }
        total.answers[0] += report.answers[0];
        total.answers[1] += report.answers[1];
    }
    eprintln!(
        "{} seeds: {} steps, {} committed offsets, acks=all acked {} batches, consumer read {}, \
         {} leaders fully checked, {} elections, crashes {} partitions {} leader moves {}, \
         messages {} dropped {} duplicated {}, answers ok {} failed {}",
        seeds.len(),
        total.steps,
        total.committed_end,
        total.checked[0],
        total.checked[1],
        total.checked[2],
        total.elections,
        total.faults[0],
        total.faults[1],
        total.faults[2],
        total.messages[0],
        total.messages[1],
        total.messages[2],
        total.answers[0],
        total.answers[1],
    );
    // Liveness of the sweep as a whole: the faults must not have stopped all progress.
    assert!(
        total.checked[0] > 0,
        "nothing was acknowledged under acks=all"
    );
    assert!(total.checked[1] > 0, "the consumer read nothing");
}

#[test]
fn same_seed_same_run() {
    let config = SimConfig {
        duration_ms: 1_500,
        ..SimConfig::default()
    };
    let a = run_seed(7, &config);
    let b = run_seed(7, &config);
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    // With moves too: a failing seed of the moves sweep replays.
    let moves = SimConfig {
        nodes: 4,
        replication_factor: Some(3),
        moves: true,
        ..SimConfig::default()
    };
    let a = run_seed(12, &moves);
    let b = run_seed(12, &moves);
    assert!(a.moves[0] > 0, "no move asked: {a:?}");
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

/// Retention on every node (by size, 0 bytes: every sealed segment the high watermark
/// has passed goes), so a follower that was down or cut off falls below its leader's log
/// start and must reset to it; every checker holds and, after the calm, every replica
/// holds the leader's log to its end (issue 11). Before followers could reset, a lagging
/// follower was shipped nothing for good and the calm ended stuck.
#[test]
fn retention_seed_sweep() {
    let config = SimConfig {
        retention_bytes: Some(0),
        ..SimConfig::default()
    };
    let seeds: Vec<u64> = match env_u64("SHARDLOG_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("SHARDLOG_SIM_SEEDS").unwrap_or(SEEDS_CI / 2)).collect(),
    };
    let (mut resets, mut retained, mut acked, mut committed) = (0, 0, 0, 0);
    for &seed in &seeds {
        let report = run_seed(seed, &config);
        resets += report.resets;
        retained += report.retained;
        acked += report.checked[0];
        committed += report.committed_end;
    }
    eprintln!(
        "{} seeds with retention: {retained} retention passes deleted segments, {resets} \
         followers reset to their leader's log start, {acked} batches acked under \
         acks=all, {committed} committed offsets",
        seeds.len()
    );
    if seeds.len() > 1 {
        assert!(retained > 0, "retention deleted nothing");
        assert!(resets > 0, "no follower fell behind its leader's log start");
        assert!(acked > 0, "nothing was acknowledged under acks=all");
    }
}

/// Moves: four nodes, the partition on three, reassigned now and then to a random three
/// (the leader's node among those replaced, or a move in progress replaced) under the
/// usual faults. The checkers hold throughout; after the calm no move is stuck and every
/// replica holds the whole log.
#[test]
fn moves_seed_sweep() {
    let config = SimConfig {
        nodes: 4,
        replication_factor: Some(3),
        moves: true,
        ..SimConfig::default()
    };
    let seeds: Vec<u64> = match env_u64("SHARDLOG_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("SHARDLOG_SIM_SEEDS").unwrap_or(SEEDS_CI / 2)).collect(),
    };
    let (mut asked, mut committed, mut acked, mut offsets) = (0, 0, 0, 0);
    for &seed in &seeds {
        let report = run_seed(seed, &config);
        if seeds.len() == 1 {
            eprintln!("{report:?}");
        }
        asked += report.moves[0];
        committed += report.moves[1];
        acked += report.checked[0];
        offsets += report.committed_end;
    }
    eprintln!(
        "{} seeds with moves: {asked} reassignments asked, {committed} replica-set changes \
         committed, {acked} batches acked under acks=all, {offsets} committed offsets",
        seeds.len()
    );
    if seeds.len() > 1 {
        assert!(committed > 0, "no move committed");
        assert!(acked > 0, "nothing was acknowledged under acks=all");
    }
}
