//! Topic creation against the disk, with the shipped `shardlog` and `shardlogd`: a big
//! topic takes little disk (preallocation in steps), a topic that does not fit is refused
//! and leaves nothing behind, a creation whose partitions cannot open is undone and
//! reported, and a partition that cannot open at start is offline while the server
//! serves the rest.
#![cfg(test)]
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{describe, ok_against, run_against, stderr, test_dir};
use shardlog_net::testing::Shardlogd;

/// Bytes the files under `dir` take on disk (as `du`: allocated blocks).
fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += meta.blocks() * 512;
        if meta.is_dir() {
            total += disk_usage(&entry.path());
        }
    }
    total
}

/// The directories of `data_dir` holding topic `name` (`<name>-<id>`).
fn topic_dirs(data_dir: &Path, name: &str) -> Vec<PathBuf> {
    std::fs::read_dir(data_dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(name))
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|id| id.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|e| e.path())
        .collect()
}

fn topic_list(brokers: &str) -> String {
    ok_against(brokers, &["topic", "list"], "")
}

/// 1200 partitions of 1 MiB segments on one node, with 64 KiB preallocation steps: the
/// data directory holds about a step per partition, far below 1200 segments.
#[test]
fn a_thousand_partitions_take_little_disk() {
    const PARTITIONS: u64 = 1200;
    let dir = test_dir("prealloc-many-");
    let server = Shardlogd::start(
        dir.path(),
        &["--shards", "2", "--preallocation-step-bytes", "65536"],
    )
    .unwrap();
    let brokers = server.brokers();
    ok_against(
        &brokers,
        &[
            "topic",
            "create",
            "wide",
            "--partitions",
            &PARTITIONS.to_string(),
            "--segment-bytes",
            "1048576",
        ],
        "",
    );
    ok_against(&brokers, &["produce", "--topic", "wide"], "a\nb\nc\n");
    let used = disk_usage(dir.path());
    let segments = PARTITIONS << 20;
    eprintln!("{PARTITIONS} partitions: {used} bytes on disk ({segments} of segments)");
    assert!(
        used < segments / 4,
        "{used} bytes on disk for {PARTITIONS} partitions of 1 MiB segments"
    );
}

/// A small ext4 filesystem mounted for the test, unmounted (lazily) when dropped.
struct LoopMount {
    dir: PathBuf,
    _image_dir: tempfile::TempDir,
}

impl LoopMount {
    /// `None` (and a printed reason) where mounting is not permitted.
    fn new(size: &str) -> Option<LoopMount> {
        let image_dir = test_dir("prealloc-img-");
        let image = image_dir.path().join("fs.img");
        let dir = image_dir.path().join("mnt");
        std::fs::create_dir_all(&dir).unwrap();
        let run = |program: &str, args: &[&str]| {
            Command::new(program)
                .args(args)
                .output()
                .map_err(|e| e.to_string())
                .and_then(|out| {
                    out.status
                        .success()
                        .then_some(())
                        .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
                })
        };
        let image_arg = image.to_str().unwrap();
        let steps = [
            ("truncate", vec!["-s", size, image_arg]),
            ("mkfs.ext4", vec!["-q", image_arg]),
            (
                "mount",
                vec!["-o", "loop", image_arg, dir.to_str().unwrap()],
            ),
        ];
        for (program, args) in steps {
            if let Err(e) = run(program, &args) {
                eprintln!("SKIPPED: cannot build a loop-mounted filesystem ({program}: {e})");
                return None;
            }
        }
        Some(LoopMount {
            dir,
            _image_dir: image_dir,
        })
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// On a 64 MiB filesystem: a topic that fits is created; one that does not is refused,
/// naming the space needed and free, and leaves no trace; the server serves on.
#[test]
fn a_topic_that_does_not_fit_is_refused_and_leaves_nothing() {
    let Some(mount) = LoopMount::new("64M") else {
        return;
    };
    let data = mount.dir.join("data");
    let mut server = Shardlogd::start(
        &data,
        &["--shards", "2", "--preallocation-step-bytes", "1048576"],
    )
    .unwrap();
    let brokers = server.brokers();
    ok_against(
        &brokers,
        &["topic", "create", "fits", "--partitions", "4"],
        "",
    );
    // Wait until the node measured its free space (every second).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let refused = run_against(
        &brokers,
        &["topic", "create", "huge", "--partitions", "200"],
        "",
    );
    assert!(!refused.status.success(), "{}", describe(&refused));
    let why = stderr(&refused);
    assert!(
        why.contains("does not fit") && why.contains("free"),
        "{}",
        describe(&refused)
    );
    assert!(!topic_list(&brokers).contains("huge"));
    assert!(topic_dirs(&data, "huge").is_empty());
    ok_against(&brokers, &["produce", "--topic", "fits"], "x\ny\n");
    assert!(server.is_running());
    drop(server);
}

/// A creation whose partitions cannot open (a file stands where the topic's directory
/// goes) is answered with the error, and the topic is gone: not listed, nothing of it
/// on disk, and the name can be created again.
#[test]
fn a_creation_whose_partitions_cannot_open_is_undone() {
    let dir = test_dir("prealloc-undo-");
    let server = Shardlogd::start(dir.path(), &["--shards", "2"]).unwrap();
    let brokers = server.brokers();
    ok_against(
        &brokers,
        &["topic", "create", "first", "--partitions", "1"],
        "",
    );
    // Topic ids count up: the next one is the first's plus one.
    let first = topic_dirs(dir.path(), "first");
    let id: u64 = first[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .rsplit('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let blocker = dir.path().join(format!("blocked-{}", id + 1));
    std::fs::write(&blocker, b"not a directory").unwrap();
    let failed = run_against(
        &brokers,
        &["topic", "create", "blocked", "--partitions", "3"],
        "",
    );
    assert!(!failed.status.success(), "{}", describe(&failed));
    assert!(
        stderr(&failed).contains("could not open"),
        "{}",
        describe(&failed)
    );
    assert!(!topic_list(&brokers).contains("blocked"));
    std::fs::remove_file(&blocker).unwrap();
    ok_against(
        &brokers,
        &["topic", "create", "blocked", "--partitions", "3"],
        "",
    );
    ok_against(&brokers, &["produce", "--topic", "blocked"], "a\n");
}

/// A partition that cannot open at start is offline (no leader, out of the ISR) while
/// the server starts and serves every other partition.
#[test]
fn a_partition_that_cannot_open_at_start_is_offline() {
    let dir = test_dir("prealloc-offline-");
    let mut server = Shardlogd::start(dir.path(), &["--shards", "2"]).unwrap();
    let brokers = server.brokers();
    ok_against(
        &brokers,
        &["topic", "create", "good", "--partitions", "2"],
        "",
    );
    ok_against(
        &brokers,
        &["topic", "create", "bad", "--partitions", "2"],
        "",
    );
    ok_against(&brokers, &["produce", "--topic", "good"], "g1\ng2\n");
    ok_against(
        &brokers,
        &["produce", "--topic", "bad", "--partition", "0"],
        "b1\n",
    );
    server.terminate().unwrap();
    drop(server);
    // Partition 1 of "bad" becomes unopenable: a file where its directory was.
    let bad = topic_dirs(dir.path(), "bad")[0].join("1");
    std::fs::remove_dir_all(&bad).unwrap();
    std::fs::write(&bad, b"not a directory").unwrap();
    let server = Shardlogd::start(dir.path(), &["--shards", "2"]).unwrap();
    let brokers = server.brokers();
    // The command exits 1 (the offline partition's offsets cannot be listed) and shows
    // every partition.
    let described = run_against(&brokers, &["topic", "describe", "bad"], "");
    let shown = String::from_utf8_lossy(&described.stdout).into_owned();
    let row = |partition: &str| {
        shown
            .lines()
            .find(|l| l.split('\t').next() == Some(partition))
            .unwrap_or_else(|| panic!("no partition {partition} in\n{shown}"))
            .split('\t')
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row("1")[1],
        "-",
        "partition 1 shown with a leader:\n{shown}"
    );
    assert_eq!(row("0")[1], "0", "{shown}");
    let consumed = ok_against(
        &brokers,
        &[
            "consume",
            "--topic",
            "good",
            "--from",
            "beginning",
            "--count",
            "2",
        ],
        "",
    );
    assert_eq!(consumed.lines().count(), 2, "{consumed}");
    ok_against(&brokers, &["produce", "--topic", "good"], "g3\n");
    ok_against(
        &brokers,
        &["produce", "--topic", "bad", "--partition", "0"],
        "b2\n",
    );
}
