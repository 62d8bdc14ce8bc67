//! End-to-end tests of the `shardlog` binary on partitions written by the real engine
//! (glommio, `DmaStorage`, 64 KiB segments so there are several sealed ones). Each test
//! damages the files the way a crash or a bad disk would and checks the exit code and
//! what the tool names. Directories live under `SHARDLOG_TEST_DIR` (default
//! `<repo>/target/shardlog-test`): O_DIRECT needs a real filesystem, not tmpfs.
#![cfg(test)]

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::{Bytes, BytesMut};
use shardlog_engine::batch::{self, BatchHeader};
use shardlog_engine::record::{BatchBuilder, RecordIter};
use shardlog_engine::recovery::Scanner;
use shardlog_engine::segment::{INDEX_SUFFIX, TIME_INDEX_SUFFIX};
use shardlog_engine::{
    DmaStorage, EngineConfig, FlushPolicy, LeaderEpoch, Offset, PartitionLog, TimestampMs,
    warm_iopoll_probe,
};
use shardlog_net::testing::test_root;

const BATCHES: u64 = 500;
const RECORDS_PER_BATCH: u64 = 3;

fn config() -> EngineConfig {
    EngineConfig {
        segment_bytes: 64 << 10,
        flush: FlushPolicy::Never,
        ..EngineConfig::default()
    }
}

fn data_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tools-cli-")
        .tempdir_in(test_root().expect("test dir"))
        .unwrap()
}

/// Runs `f(data_dir)` on a fresh glommio executor, after the iopoll probe.
fn on_executor<T: Send + 'static, F>(
    data: &Path,
    f: impl FnOnce(PathBuf) -> F + Send + 'static,
) -> T
where
    F: Future<Output = T> + 'static,
{
    let data = data.to_path_buf();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            warm_iopoll_probe(&data).await.unwrap();
            f(data).await
        })
        .unwrap()
        .join()
        .unwrap()
}

fn record_batch(i: u64) -> BytesMut {
    let mut builder = BatchBuilder::new();
    for j in 0..RECORDS_PER_BATCH {
        let key = format!("key-{i}-{j}");
        let value: Vec<u8> = if (i + j) % 5 == 0 {
            (0..300u64)
                .map(|n| ((n * 7 + i) % 256).to_le_bytes()[0])
                .collect()
        } else {
            format!("value {i}/{j} ").repeat(20).into_bytes()
        };
        let key = (j != 1).then_some(key.as_bytes());
        let headers: &[(&[u8], Option<&[u8]>)] = if j == 0 {
            &[(b"h", Some(b"x")), (b"\xff", None)]
        } else {
            &[]
        };
        builder.push(TimestampMs(1_000 + i as i64), key, Some(&value), headers);
    }
    BytesMut::from(&builder.finish()[..])
}

/// Writes `BATCHES` batches into `<data>/orders/0` starting at `start` and closes the log.
fn write_partition(data: &Path, start: u64) -> PathBuf {
    let partition = data.join("orders").join("0");
    let dir = partition.clone();
    on_executor(data, move |_| async move {
        let log = PartitionLog::open(DmaStorage, &dir, config())
            .await
            .unwrap();
        if start != 0 {
            log.reset(Offset(start)).await.unwrap();
        }
        for i in 0..BATCHES {
            log.append(
                record_batch(i),
                LeaderEpoch(i32::try_from(1 + i / 200).unwrap()),
            )
            .await
            .unwrap();
        }
        // As a replica's clean stop leaves one: the tools pass over snapshot files.
        log.write_snapshot(log.log_end(), b"replica state")
            .await
            .unwrap();
        log.close().await.unwrap();
    });
    partition
}

/// Every record the engine serves from `partition`: (offset, value).
fn read_all(data: &Path, partition: &Path) -> Vec<(u64, Vec<u8>)> {
    let dir = partition.to_path_buf();
    on_executor(data, move |_| async move {
        let log = PartitionLog::open(DmaStorage, &dir, config())
            .await
            .unwrap();
        let mut out = Vec::new();
        let mut from = log.log_start();
        while from < log.log_end() {
            let read = log.read(from, 1 << 20).await.unwrap();
            for (header, bytes) in read.batches() {
                for record in RecordIter::new(&header, bytes) {
                    let record = record.unwrap();
                    out.push((
                        record.offset(&header).0,
                        record.value.unwrap_or_default().to_vec(),
                    ));
                }
            }
            from = read.next_offset;
        }
        log.close().await.unwrap();
        out
    })
}

fn shardlog<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn code(output: &Output) -> i32 {
    output.status.code().unwrap()
}

fn segment_logs(partition: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = fs::read_dir(partition)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension() == Some(OsStr::new("log")))
        .collect();
    logs.sort();
    logs
}

/// (position, base offset, size) of every batch in a segment file.
fn batches_of(path: &Path) -> Vec<(u64, u64, u64)> {
    let bytes = fs::read(path).unwrap();
    let base = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let mut out = Vec::new();
    Scanner::new(0, Offset(base)).feed(&bytes, |pos, h| {
        out.push((pos, h.base_offset.0, u64::from(h.size)))
    });
    out
}

fn snapshot(partition: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(partition)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read(&p).unwrap(),
            )
        })
        .collect()
}

fn at(position: u64) -> usize {
    usize::try_from(position).unwrap()
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Repair without --apply prints a plan and changes nothing; with it, verify is clean.
fn repair_and_reverify(data: &Path, partition: &Path, plan_says: &str) {
    let before = snapshot(partition);
    let dry = shardlog(&[OsStr::new("repair"), data.as_os_str()]);
    assert_eq!(code(&dry), 1, "{}", stdout(&dry));
    assert!(stdout(&dry).contains(plan_says), "{}", stdout(&dry));
    assert!(stdout(&dry).contains("--apply"), "{}", stdout(&dry));
    assert_eq!(
        snapshot(partition),
        before,
        "repair without --apply changed files"
    );
    let applied = shardlog(&[
        OsStr::new("repair"),
        data.as_os_str(),
        OsStr::new("--apply"),
    ]);
    assert_eq!(code(&applied), 0, "{}", stdout(&applied));
    let verify = shardlog(&[OsStr::new("verify"), data.as_os_str()]);
    assert_eq!(code(&verify), 0, "{}", stdout(&verify));
    let again = shardlog(&[OsStr::new("repair"), partition.as_os_str()]);
    assert_eq!(code(&again), 0, "{}", stdout(&again));
}

#[test]
fn clean_partition_verifies_stats_and_dumps() {
    let data = data_dir();
    let partition = write_partition(data.path(), 0);
    assert!(
        segment_logs(&partition).len() > 4,
        "want several sealed segments"
    );
    let verify = shardlog(&[OsStr::new("verify"), data.path().as_os_str()]);
    assert_eq!(code(&verify), 0, "{}", stdout(&verify));
    assert!(stdout(&verify).contains("clean"), "{}", stdout(&verify));

    let stats = shardlog(&[OsStr::new("stats"), partition.as_os_str()]);
    assert_eq!(code(&stats), 0);
    let total = BATCHES * RECORDS_PER_BATCH;
    assert!(
        stdout(&stats).contains(&format!("records {total}")),
        "{}",
        stdout(&stats)
    );
    assert!(
        stdout(&stats).contains(&format!("offsets 0..{total}")),
        "{}",
        stdout(&stats)
    );

    let dump = shardlog(&[
        OsStr::new("dump"),
        partition.as_os_str(),
        OsStr::new("--json"),
    ]);
    assert_eq!(code(&dump), 0);
    let lines: Vec<serde_json::Value> = stdout(&dump)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let records: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "record").collect();
    assert_eq!(records.len() as u64, total);
    assert!(
        lines
            .iter()
            .filter(|l| l["type"] == "batch")
            .all(|b| b["crc_ok"] == true)
    );

    let second = segment_logs(&partition)[1].clone();
    let from = batches_of(&second)[2].1 + 1;
    let some = shardlog(&[
        OsStr::new("dump"),
        second.as_os_str(),
        OsStr::new("--from-offset"),
        OsStr::new(&from.to_string()),
        OsStr::new("--count"),
        OsStr::new("4"),
    ]);
    let text = stdout(&some);
    assert_eq!(code(&some), 0, "{text}");
    let offsets: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("offset "))
        .collect();
    assert_eq!(offsets.len(), 4, "{text}");
    assert!(offsets[0].starts_with(&format!("{from} ")), "{text}");
    assert!(text.contains("crc ok"), "{text}");
}

#[test]
fn torn_tail_is_told_from_damage_and_repaired() {
    let data = data_dir();
    let partition = write_partition(data.path(), 0);
    let before = read_all(data.path(), &partition);
    let last = segment_logs(&partition).pop().unwrap();
    let &(position, base_offset, size) = batches_of(&last).last().unwrap();
    let mut bytes = fs::read(&last).unwrap();
    bytes[at(position + size / 2)..at(position + size)].fill(0);
    fs::write(&last, &bytes).unwrap();

    let verify = shardlog(&[OsStr::new("verify"), data.path().as_os_str()]);
    let text = stdout(&verify);
    assert_eq!(code(&verify), 1, "{text}");
    assert!(text.contains("torn tail"), "{text}");
    assert!(!text.contains("damage"), "{text}");
    assert!(
        text.contains(&format!(
            "{} byte {position} offset {base_offset}",
            file_name(&last)
        )),
        "{text}"
    );

    repair_and_reverify(data.path(), &partition, "cut the torn tail");
    let after = read_all(data.path(), &partition);
    let survivors: Vec<_> = before
        .into_iter()
        .filter(|(offset, _)| *offset < base_offset)
        .collect();
    assert_eq!(after, survivors);
}

#[test]
fn flipped_byte_in_sealed_segment_is_damage_and_is_set_aside() {
    let data = data_dir();
    let partition = write_partition(data.path(), 0);
    let before = read_all(data.path(), &partition);
    let logs = segment_logs(&partition);
    let victim = logs[2].clone();
    let next_base: u64 = logs[3]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let (position, base_offset, _) = batches_of(&victim)[5];
    let original = fs::read(&victim).unwrap();
    let mut bytes = original.clone();
    bytes[at(position + 100)] ^= 0x20;
    fs::write(&victim, &bytes).unwrap();

    let verify = shardlog(&[OsStr::new("verify"), data.path().as_os_str()]);
    let text = stdout(&verify);
    assert_eq!(code(&verify), 1, "{text}");
    assert!(
        text.contains(&format!(
            "damage: {} byte {position} offset {base_offset}",
            file_name(&victim)
        )),
        "{text}"
    );
    assert!(!text.contains("torn tail"), "{text}");

    repair_and_reverify(data.path(), &partition, "aside");
    let aside = victim.with_file_name(format!("{}.corrupt", file_name(&victim)));
    assert_eq!(
        fs::read(aside).unwrap(),
        bytes,
        "the damaged original is kept"
    );
    let after = read_all(data.path(), &partition);
    let survivors: Vec<_> = before
        .into_iter()
        .filter(|(offset, _)| *offset < base_offset || *offset >= next_base)
        .collect();
    assert_eq!(after, survivors);
}

#[test]
fn missing_and_zeroed_indexes_are_found_and_rebuilt() {
    let data = data_dir();
    let partition = write_partition(data.path(), 0);
    let logs = segment_logs(&partition);
    let index = logs[0].with_extension(INDEX_SUFFIX);
    let time_index = logs[2].with_extension(TIME_INDEX_SUFFIX);
    let (index_bytes, time_bytes) = (fs::read(&index).unwrap(), fs::read(&time_index).unwrap());
    fs::remove_file(&index).unwrap();
    fs::write(&time_index, vec![0u8; time_bytes.len()]).unwrap();

    let verify = shardlog(&[OsStr::new("verify"), data.path().as_os_str()]);
    let text = stdout(&verify);
    assert_eq!(code(&verify), 1, "{text}");
    assert!(
        text.contains(&format!("index: {}: missing", file_name(&index))),
        "{text}"
    );
    assert!(
        text.contains(&format!("index: {}: undecodable", file_name(&time_index))),
        "{text}"
    );

    repair_and_reverify(data.path(), &partition, "rebuild");
    assert_eq!(
        fs::read(&index).unwrap(),
        index_bytes,
        "rebuilt as the engine wrote it"
    );
    assert_eq!(
        fs::read(&time_index).unwrap(),
        time_bytes,
        "rebuilt as the engine wrote it"
    );
}

#[test]
fn usage_and_io_errors_exit_2() {
    let data = data_dir();
    let missing = data.path().join("no-such-dir");
    let verify = shardlog(&[OsStr::new("verify"), missing.as_os_str()]);
    assert_eq!(code(&verify), 2);
    assert!(String::from_utf8_lossy(&verify.stderr).contains("no-such-dir"));
    let empty = shardlog(&[OsStr::new("verify"), data.path().as_os_str()]);
    assert_eq!(
        code(&empty),
        2,
        "a directory without partitions is a usage error"
    );
    assert_eq!(code(&shardlog(&["verify"])), 2);
    assert_eq!(code(&shardlog(&["frobnicate"])), 2);
}

#[test]
fn export_import_roundtrip_preserves_offsets() {
    let data = data_dir();
    let partition = write_partition(data.path(), 1_000);
    let first = data.path().join("first.jsonl");
    let export = shardlog(&[
        OsStr::new("export"),
        partition.as_os_str(),
        OsStr::new("--output"),
        first.as_os_str(),
    ]);
    assert_eq!(
        code(&export),
        0,
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let text = fs::read_to_string(&first).unwrap();
    assert_eq!(text.lines().count() as u64, BATCHES * RECORDS_PER_BATCH);
    assert!(
        text.lines().next().unwrap().contains("\"offset\":1000"),
        "{}",
        text.lines().next().unwrap()
    );
    assert!(text.contains("value_b64") && text.contains("\"key\":null"));

    let restored = data.path().join("restored").join("0");
    let import = shardlog(&[
        OsStr::new("import"),
        restored.as_os_str(),
        OsStr::new("--input"),
        first.as_os_str(),
    ]);
    assert_eq!(
        code(&import),
        0,
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    let second = data.path().join("second.jsonl");
    let again = shardlog(&[
        OsStr::new("export"),
        restored.as_os_str(),
        OsStr::new("--output"),
        second.as_os_str(),
    ]);
    assert_eq!(
        code(&again),
        0,
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(fs::read_to_string(&second).unwrap(), text);
    assert_eq!(
        read_all(data.path(), &restored),
        read_all(data.path(), &partition)
    );
    let verify = shardlog(&[OsStr::new("verify"), restored.as_os_str()]);
    assert_eq!(code(&verify), 0, "{}", stdout(&verify));
}

#[test]
fn import_refuses_a_non_empty_dir_and_a_gap() {
    let data = data_dir();
    let partition = write_partition(data.path(), 1_000);
    let exported = shardlog(&[OsStr::new("export"), partition.as_os_str()]);
    assert_eq!(code(&exported), 0);
    let text = stdout(&exported);
    let first = data.path().join("first.jsonl");
    fs::write(&first, &text).unwrap();
    let refused = shardlog(&[
        OsStr::new("import"),
        partition.as_os_str(),
        OsStr::new("--input"),
        first.as_os_str(),
    ]);
    assert_eq!(code(&refused), 2, "import into a non-empty directory");
    let gapped: String = text
        .lines()
        .filter(|l| !l.contains("\"batch_base_offset\":1006,"))
        .map(|l| format!("{l}\n"))
        .collect();
    let gapped_file = data.path().join("gapped.jsonl");
    fs::write(&gapped_file, gapped).unwrap();
    let other = data.path().join("gapped").join("0");
    let gap = shardlog(&[
        OsStr::new("import"),
        other.as_os_str(),
        OsStr::new("--input"),
        gapped_file.as_os_str(),
    ]);
    assert_eq!(code(&gap), 2);
    assert!(
        String::from_utf8_lossy(&gap.stderr).contains("gap: offsets 1006..1009"),
        "{}",
        String::from_utf8_lossy(&gap.stderr)
    );
    assert!(
        !other.exists(),
        "a failed import leaves no partial partition"
    );
}

#[test]
fn export_refuses_a_compressed_batch_naming_its_offset() {
    let data = data_dir();
    let partition = data.path().join("zipped").join("0");
    let dir = partition.clone();
    on_executor(data.path(), move |_| async move {
        let log = PartitionLog::open(DmaStorage, &dir, config())
            .await
            .unwrap();
        log.append(record_batch(0), LeaderEpoch(1)).await.unwrap();
        // A batch marked gzip (attributes bit 0), CRC recomputed: valid, opaque to us.
        let mut bytes = record_batch(1).to_vec();
        bytes[22] |= 1;
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        batch::patch_base(&mut bytes, Offset(3), LeaderEpoch(1));
        assert!(BatchHeader::parse(&bytes).is_ok());
        log.append_replicated(Bytes::from(bytes)).await.unwrap();
        log.close().await.unwrap();
    });
    let export = shardlog(&[OsStr::new("export"), partition.as_os_str()]);
    assert_eq!(code(&export), 2);
    let stderr = String::from_utf8_lossy(&export.stderr);
    assert!(
        stderr.contains("offset 3") && stderr.contains("compressed"),
        "{stderr}"
    );
}

#[test]
fn sealed_segment_with_nothing_valid_is_moved_aside_whole() {
    let data = data_dir();
    let partition = write_partition(data.path(), 0);
    let before = read_all(data.path(), &partition);
    let logs = segment_logs(&partition);
    let victim = logs[1].clone();
    let base: u64 = victim
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let next_base: u64 = logs[2]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut bytes = fs::read(&victim).unwrap();
    bytes[30] ^= 0xff;
    fs::write(&victim, &bytes).unwrap();

    let verify = shardlog(&[OsStr::new("verify"), partition.as_os_str()]);
    let text = stdout(&verify);
    assert_eq!(code(&verify), 1, "{text}");
    assert!(
        text.contains(&format!(
            "damage: {} byte 0 offset {base}",
            file_name(&victim)
        )),
        "{text}"
    );

    repair_and_reverify(data.path(), &partition, "nothing valid");
    assert!(!victim.exists() && !victim.with_extension(INDEX_SUFFIX).exists());
    let verify = shardlog(&[OsStr::new("verify"), partition.as_os_str()]);
    assert!(
        stdout(&verify).contains(&format!("gap: offsets {base}..{next_base}")),
        "{}",
        stdout(&verify)
    );
    let after = read_all(data.path(), &partition);
    let survivors: Vec<_> = before
        .into_iter()
        .filter(|(offset, _)| *offset < base || *offset >= next_base)
        .collect();
    assert_eq!(after, survivors);
}

#[test]
fn a_closed_stdout_ends_every_offline_command_quietly() {
    let data = data_dir();
    let partition = write_partition(data.path(), 0);
    let (data_arg, partition_arg) = (data.path().to_str().unwrap(), partition.to_str().unwrap());
    for args in [
        vec!["stats", data_arg],
        vec!["verify", data_arg],
        vec!["dump", partition_arg],
        vec!["dump", partition_arg, "--json"],
        vec!["export", partition_arg],
        vec!["repair", data_arg],
    ] {
        let output = common::shardlog_into_closed_stdout(&args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            common::describe(&output)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stderr),
            "",
            "{args:?}: nothing to report"
        );
    }
}
