//! Proves that a SIGKILL loses nothing an append acknowledged (sled-style crash test).
//!
//! `crash_kill_recover` runs this test binary again as a child (`crash_child`, ignored, and
//! inert unless `SHARDLOG_CRASH_CHILD` names a directory). The child opens the log with
//! `flush = always`, a 256 KiB segment size and several concurrent appenders (so group
//! commit and segment rolls are under way when the kill lands), and prints one
//! `ACK <base> <next> <seed> <crc>` line per acknowledged batch. After a seeded random
//! delay the parent SIGKILLs it, copies the directory as the kill left it, opens the copy
//! with `DmaStorage` and checks: offsets are contiguous from 0 to the log end; every batch
//! served is byte for byte the batch its seed rebuilds (only the base offset and leader
//! epoch are patched, and both are checked too); every acknowledged batch is there at its
//! offset with its CRC; reading at the log end returns nothing; the file is zero after the
//! last batch. The next child appends to the original directory, so each round recovers
//! what earlier rounds recovered and appended. A final round verifies the original in place.
//!
//! A SIGKILL loses no page cache, so this proves the engine's own ordering and recovery,
//! not the device's flushes. Replay a failure with the printed `SHARDLOG_SEED=<n>`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use glommio::{LocalExecutorBuilder, Placement};
use shardlog_engine::batch::{self, BatchHeader};
use shardlog_engine::record::{BatchBuilder, RecordIter};
use shardlog_engine::{
    DmaStorage, EngineConfig, Error, LeaderEpoch, Offset, PartitionLog, TimestampMs,
    warm_iopoll_probe,
};

/// Names the child's data directory; without it `crash_child` does nothing.
const CHILD_ENV: &str = "SHARDLOG_CRASH_CHILD";
const CHILD_SEED_ENV: &str = "SHARDLOG_CRASH_CHILD_SEED";
const CHILD_ROUND_ENV: &str = "SHARDLOG_CRASH_CHILD_ROUND";
const CHILD_TEST: &str = "crash_child";
/// Kills per run.
const KILLS: u32 = 24;
/// The kill lands this long (uniform, at most) after the child reports ready.
const KILL_DELAY_MAX_MS: u64 = 200;
/// Concurrent appenders in the child: group commit under the kill.
const APPENDERS: u64 = 4;
const SEGMENT_BYTES: u64 = 256 << 10;
/// A child that is not ready by then is hung, not slow.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

fn config() -> EngineConfig {
    EngineConfig {
        segment_bytes: SEGMENT_BYTES,
        // Several preallocation steps per segment: kills land while one is under way.
        preallocation_step_bytes: 32 << 10,
        segment_age: None,
        retention_age: None,
        ..EngineConfig::default()
    }
}

/// splitmix64: the test's only randomness, all of it derived from the run's seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn below_usize(&mut self, n: usize) -> usize {
        usize::try_from(self.below(n as u64)).expect("below a usize")
    }
}

/// The seed of the `i`th batch of appender `task` in `round`; the batch carries it as the
/// first record's key, so any batch found on disk names the bytes it must be.
fn batch_seed(round: u32, task: u64, i: u64) -> u64 {
    assert!(task < 256 && i < 1 << 32, "seed fields overflow");
    (u64::from(round) << 40) | (task << 32) | i
}

fn seed_round(seed: u64) -> u32 {
    u32::try_from(seed >> 40).expect("round fits u32")
}

/// The batch with `seed`: 1..=6 records of 0..2000 value bytes, now and then one of
/// 16..32 KiB, some with a header. Base offset 0 and no epoch, as a producer sends it.
fn build_batch(run_seed: u64, seed: u64) -> Vec<u8> {
    let mut rng = Rng(run_seed ^ seed.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let records = 1 + rng.below(6);
    let big = rng.below(16) == 0;
    let timestamp = 1_700_000_000_000 + i64::try_from(seed & 0xFFFF_FFFF).expect("fits");
    let mut builder = BatchBuilder::new();
    for r in 0..records {
        let len = if big && r == 0 {
            (16 << 10) + rng.below_usize(16 << 10)
        } else {
            rng.below_usize(2000)
        };
        let mut value = Vec::with_capacity(len + 8);
        while value.len() < len {
            value.extend_from_slice(&rng.next().to_le_bytes());
        }
        value.truncate(len);
        let key = seed.to_be_bytes();
        let key = (r == 0).then_some(&key[..]);
        let header: &[(&[u8], Option<&[u8]>)] = if rng.below(4) == 0 {
            &[(b"h", Some(b"v"))]
        } else {
            &[]
        };
        let r = i64::try_from(r).expect("fits");
        builder.push(TimestampMs(timestamp + r), key, Some(&value), header);
    }
    builder.finish()
}

/// The seed a batch carries: its first record's key.
fn carried_seed(header: &BatchHeader, bytes: &[u8]) -> Option<u64> {
    let first = RecordIter::new(header, bytes).next()?.ok()?;
    Some(u64::from_be_bytes(first.key?.try_into().ok()?))
}

fn test_root() -> PathBuf {
    std::env::var_os("SHARDLOG_TEST_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/shardlog-test"),
        PathBuf::from,
    )
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.parse()
            .unwrap_or_else(|e| panic!("{name}={text:?}: {e}")),
    )
}

/// The child: appends until killed. Inert without `SHARDLOG_CRASH_CHILD`, so a plain
/// `cargo test -- --ignored` passes through it.
#[test]
#[ignore = "the child process of crash_kill_recover; does nothing unless SHARDLOG_CRASH_CHILD is set"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        return;
    };
    let run_seed = env_u64(CHILD_SEED_ENV).expect("child seed");
    let round =
        u32::try_from(env_u64(CHILD_ROUND_ENV).expect("child round")).expect("round fits u32");
    let probe_dir = dir
        .parent()
        .expect("partition dir has a parent")
        .to_path_buf();
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            warm_iopoll_probe(&probe_dir).await.expect("iopoll probe");
            let log = PartitionLog::open(DmaStorage, &dir, config())
                .await
                .expect("child open");
            // libtest has printed "test crash_child ... " without a newline: start a line.
            report(&format!("\nREADY {}", log.log_end()));
            let epoch = LeaderEpoch(i32::try_from(round).expect("round fits i32"));
            let appenders = (0..APPENDERS).map(|task| {
                let log = &log;
                async move {
                    for i in 0.. {
                        let seed = batch_seed(round, task, i);
                        let batch = BytesMut::from(&build_batch(run_seed, seed)[..]);
                        let crc = BatchHeader::parse(&batch).expect("own batch").crc;
                        let appended = log.append(batch, epoch).await.expect("child append");
                        report(&format!(
                            "ACK {} {} {seed} {crc}",
                            appended.base_offset, appended.next_offset
                        ));
                    }
                }
            });
            // The next segment is prepared ahead of rolls, and the active one preallocated
            // step by step, as the server's upkeep does, so kills also land while a file
            // is created, renamed into place or extended.
            let preparer = async {
                loop {
                    log.prepare_next_segment().await;
                    log.extend_active(TimestampMs::now()).await;
                    glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                }
            };
            futures::future::select(
                std::pin::pin!(futures::future::join_all(appenders)),
                std::pin::pin!(preparer),
            )
            .await;
        });
    executor
        .expect("child executor")
        .join()
        .expect("child executor join");
}

/// One line to the parent, flushed before the next append can be acknowledged.
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("child stdout");
    out.flush().expect("child stdout flush");
}

/// An acknowledged batch, as the child reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ack {
    next: u64,
    seed: u64,
    crc: u32,
}

/// What one round's child said before it died.
struct ChildRun {
    ready_end: Option<u64>,
    acks: Vec<(u64, Ack)>,
}

fn parse_ack(line: &str) -> Option<(u64, Ack)> {
    let mut fields = line.strip_prefix("ACK ")?.split(' ');
    let mut next = || fields.next()?.parse::<u64>().ok();
    let (base, end, seed, crc) = (next()?, next()?, next()?, next()?);
    Some((
        base,
        Ack {
            next: end,
            seed,
            crc: u32::try_from(crc).ok()?,
        },
    ))
}

/// Starts a child on `data`, kills it `delay` after it reports ready, and returns what it
/// acknowledged. Only whole lines count: a line cut by the kill was never acknowledged.
fn run_child(data: &Path, run_seed: u64, round: u32, delay: Duration) -> ChildRun {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            CHILD_TEST,
            "--nocapture",
            "--ignored",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, data)
        .env(CHILD_SEED_ENV, run_seed.to_string())
        .env(CHILD_ROUND_ENV, round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            if line.ends_with('\n') && tx.send(line.trim_end().to_owned()).is_err() {
                break;
            }
            line.clear();
        }
    });
    let mut run = ChildRun {
        ready_end: None,
        acks: Vec::new(),
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    while run.ready_end.is_none() {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        let Ok(line) = line else {
            let _ = child.kill();
            let status = child.wait();
            panic!("round {round}: child never reported ready ({line:?}, exit {status:?})");
        };
        if let Some(end) = line.strip_prefix("READY ") {
            run.ready_end = Some(end.parse().expect("READY offset"));
        }
    }
    // The random kill moment is the point of the test; the child keeps appending meanwhile.
    std::thread::sleep(delay);
    child.kill().expect("SIGKILL child");
    let status = child.wait().expect("wait for child");
    reader.join().expect("stdout reader");
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "round {round}: child ended by itself: {status:?}"
    );
    run.acks
        .extend(rx.try_iter().filter_map(|line| parse_ack(&line)));
    run
}

/// What a verification found.
#[derive(Debug)]
struct Verified {
    log_end: u64,
    batches: u64,
    segments: usize,
}

/// Opens the log in `dir` (recovering it) and checks it against every acknowledged batch.
fn verify(
    probe_dir: &Path,
    dir: &Path,
    run_seed: u64,
    rounds: u32,
    acked: &BTreeMap<u64, Ack>,
) -> Verified {
    let (probe_dir, dir, acked) = (probe_dir.to_path_buf(), dir.to_path_buf(), acked.clone());
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            warm_iopoll_probe(&probe_dir).await.expect("iopoll probe");
            let log = PartitionLog::open(DmaStorage, &dir, config())
                .await
                .expect("recovery open");
            let found = walk(&log, run_seed, rounds).await;
            for (base, ack) in &acked {
                let got = found.get(base);
                assert_eq!(
                    got,
                    Some(ack),
                    "acknowledged batch at {base} lost or changed (log end {})",
                    log.log_end()
                );
            }
            let end = log.log_end();
            let at_end = log.read(end, 1 << 20).await.expect("read at the log end");
            assert!(
                at_end.chunks.is_empty() && at_end.next_offset == end,
                "read at the log end served {at_end:?}"
            );
            let past = log.read(end.advance(1), 1 << 20).await;
            assert!(
                matches!(past, Err(Error::OffsetOutOfRange { .. })),
                "read past the log end: {past:?}"
            );
            let segments = log.segments();
            let active = segments.last().expect("an active segment");
            let path = dir.join(format!("{:020}.log", active.id.0.0));
            let data_len = usize::try_from(active.data_len).expect("fits");
            drop(log);
            let file = std::fs::read(&path).expect("read the active segment");
            let after = file.get(data_len..).unwrap_or_default();
            let stray = after.iter().position(|&b| b != 0);
            assert!(
                stray.is_none(),
                "{}: non-zero byte at {} past the data end {data_len}",
                path.display(),
                data_len + stray.unwrap_or(0)
            );
            Verified {
                log_end: end.0,
                batches: found.len() as u64,
                segments: segments.len(),
            }
        });
    executor
        .expect("verify executor")
        .join()
        .expect("verification failed")
}

/// Reads the whole log: contiguous offsets from 0, every batch the exact bytes its seed
/// builds. Returns base offset -> what an ACK line for it would say.
async fn walk(log: &PartitionLog<DmaStorage>, run_seed: u64, rounds: u32) -> BTreeMap<u64, Ack> {
    assert_eq!(log.log_start(), Offset(0), "nothing deletes segments here");
    let mut found = BTreeMap::new();
    let mut from = Offset(0);
    while from < log.log_end() {
        let read = log
            .read(from, 256 << 10)
            .await
            .unwrap_or_else(|e| panic!("read at {from}: {e}"));
        assert!(
            !read.chunks.is_empty(),
            "read at {from} below the log end {} returned nothing",
            log.log_end()
        );
        for (header, bytes) in read.batches() {
            assert_eq!(header.base_offset, from, "offsets not contiguous");
            let seed = carried_seed(&header, bytes)
                .unwrap_or_else(|| panic!("batch at {from} carries no seed"));
            let round = seed_round(seed);
            assert!(
                (1..=rounds).contains(&round),
                "batch at {from}: seed {seed} from round {round}"
            );
            let mut want = build_batch(run_seed, seed);
            batch::patch_base(
                &mut want,
                from,
                LeaderEpoch(i32::try_from(round).expect("fits")),
            );
            if want != bytes {
                let at = want
                    .iter()
                    .zip(bytes)
                    .position(|(a, b)| a != b)
                    .unwrap_or(want.len().min(bytes.len()));
                panic!(
                    "batch at {from} (seed {seed}): {} bytes, want {}; first difference at byte {at}",
                    bytes.len(),
                    want.len()
                );
            }
            let next = header.next_offset();
            found.insert(
                from.0,
                Ack {
                    next: next.0,
                    seed,
                    crc: header.crc,
                },
            );
            from = next;
        }
        assert_eq!(read.next_offset, from, "read's next offset");
    }
    assert_eq!(from, log.log_end(), "last batch ends past the log end");
    found
}

/// Keeps the run's directory and prints the seed if the test fails; removes it if not.
struct RunGuard {
    seed: u64,
    dir: PathBuf,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "SHARDLOG_SEED={} (data kept in {})",
                self.seed,
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy dir");
    for entry in std::fs::read_dir(from).expect("list data dir") {
        let entry = entry.expect("dir entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy data file");
    }
}

#[test]
fn crash_kill_recover() {
    let run_seed = env_u64("SHARDLOG_SEED").unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock");
        u64::try_from(now.as_nanos() & u128::from(u64::MAX)).expect("masked")
    });
    let run_dir = test_root().join(format!("crash-{}-{run_seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir).expect("create run dir");
    let guard = RunGuard {
        seed: run_seed,
        dir: run_dir.clone(),
    };
    eprintln!("SHARDLOG_SEED={run_seed}");
    let data = run_dir.join("data/topic/0");
    let mut rng = Rng(run_seed);
    let mut acked: BTreeMap<u64, Ack> = BTreeMap::new();
    let mut last_end = 0u64;
    let started = Instant::now();
    for round in 1..=KILLS {
        let delay = Duration::from_millis(rng.below(KILL_DELAY_MAX_MS + 1));
        let run = run_child(&data, run_seed, round, delay);
        let ready_end = run.ready_end.expect("ready");
        // The child recovered what the previous copy showed, or more: an in-flight write
        // may land after the kill, but never less.
        assert!(
            ready_end >= last_end,
            "round {round}: child recovered to {ready_end}, verified end was {last_end}"
        );
        let mut fresh = 0;
        for (base, ack) in run.acks {
            assert!(
                base >= ready_end && ack.next > base,
                "round {round}: ack {base}..{} before {ready_end}",
                ack.next
            );
            assert!(
                acked.insert(base, ack).is_none(),
                "round {round}: offset {base} acknowledged twice"
            );
            fresh += 1;
        }
        let copy = run_dir.join(format!("verify-{round}"));
        copy_dir(&data, &copy);
        let verified = verify(&run_dir, &copy, run_seed, round, &acked);
        std::fs::remove_dir_all(&copy).expect("remove copy");
        eprintln!(
            "round {round}: killed after {delay:?} with {fresh} acks; recovered {verified:?}"
        );
        last_end = verified.log_end;
    }
    let verified = verify(&run_dir, &data, run_seed, KILLS, &acked);
    eprintln!(
        "{KILLS} kills in {:?}; {} acknowledged batches; in place: {verified:?}",
        started.elapsed(),
        acked.len()
    );
    assert!(
        verified.batches >= acked.len() as u64,
        "{verified:?}: fewer batches than acknowledged"
    );
    assert!(
        acked.len() > 100,
        "only {} batches acknowledged: the children barely ran",
        acked.len()
    );
    assert!(
        verified.segments > 2,
        "{verified:?}: no kill can have landed near a roll"
    );
    drop(guard);
}
