//! A node whose controller log cannot be written (its filesystem is full) does not take
//! the cluster down, nor itself: 3 real nodes, node 2's `DATA/controller` on a small
//! loop-mounted ext4 filled to the last block. The cluster keeps creating topics, node 2
//! keeps running and answering, and once the space is freed its voter restarts from its
//! log and the cluster again creates topics that need all three nodes.
//!
//! Needs root (mount); skipped with a printed reason where mounting is not permitted.
#![cfg(test)]
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::cluster::{Cluster, Links};
use shardlog_net::api::TopicConfig;
use shardlog_net::client::{Client, ClientConfig};

/// A loop-mounted ext4 of `size` at `dir`, unmounted (lazily) when dropped.
struct LoopMount {
    dir: PathBuf,
    image: PathBuf,
}

impl LoopMount {
    fn new(image: PathBuf, dir: &Path, size: &str) -> Result<LoopMount, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let image_arg = image.to_str().unwrap().to_owned();
        let dir_arg = dir.to_str().unwrap().to_owned();
        let steps: [(&str, Vec<&str>); 3] = [
            ("truncate", vec!["-s", size, &image_arg]),
            ("mkfs.ext4", vec!["-q", &image_arg]),
            ("mount", vec!["-o", "loop", &image_arg, &dir_arg]),
        ];
        for (program, args) in steps {
            let out = Command::new(program)
                .args(&args)
                .output()
                .map_err(|e| format!("{program}: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "{program}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        Ok(LoopMount {
            dir: dir.to_path_buf(),
            image,
        })
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// Fills the filesystem holding `dir` to its last byte with `dir/filler`. Delayed
/// allocation reserves more than it uses until the data is written back, so it writes,
/// syncs and writes again, in smaller pieces, until nothing more fits.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(dir.join("filler")).unwrap();
    for size in [4096, 4096, 512, 64, 1, 1] {
        let piece = vec![0xAB_u8; size];
        loop {
            match file.write(&piece) {
                Ok(n) if n == size => {}
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling: {e}"),
            }
        }
        let _ = file.sync_all();
    }
}

fn create(brokers: &str, name: &str, replication_factor: u16) -> Result<(), String> {
    let (brokers, name) = (brokers.to_owned(), name.to_owned());
    common::run(move || async move {
        let client = Client::connect(&brokers, ClientConfig::default())
            .await
            .map_err(|e| e.to_string())?;
        client
            .create_topic(&name, 1, replication_factor, TopicConfig::default())
            .await
            .map_err(|e| e.to_string())
    })
}

/// Stops `node`, moves its `DATA/controller` onto a 4 MiB filesystem of its own, and
/// starts it again; `None` (and a printed reason) where mounting is not permitted.
fn move_controller_dir_to_its_own_filesystem(
    cluster: &mut Cluster,
    node: usize,
) -> Option<LoopMount> {
    cluster.kill(&[node]);
    let controller_dir = cluster.data_dir(node).join("controller");
    let saved = cluster.data_dir(node).join("controller.saved");
    std::fs::rename(&controller_dir, &saved).unwrap();
    let image = cluster.data_dir(node).join("controller.img");
    let mount = match LoopMount::new(image, &controller_dir, "4M") {
        Ok(mount) => mount,
        Err(why) => {
            eprintln!("SKIPPED: cannot loop-mount a filesystem: {why}");
            return None;
        }
    };
    for entry in std::fs::read_dir(&saved).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), controller_dir.join(entry.file_name())).unwrap();
    }
    cluster.restart(node);
    Some(mount)
}

/// Topics created after the fill before node 2 must have found its log full: a block's
/// worth of slack holds far fewer entries than this.
const CREATES_UNTIL_FULL_MAX: usize = 200;

#[test]
fn a_node_whose_controller_log_fills_does_not_stop_the_cluster() {
    let mut cluster = Cluster::start(3, Links::Direct);
    cluster.wait_for_controller(Duration::from_secs(30));
    let Some(mount) = move_controller_dir_to_its_own_filesystem(&mut cluster, 2) else {
        return;
    };
    cluster.wait_for_controller(Duration::from_secs(30));
    let brokers = cluster.brokers();
    create(&brokers, "before", 3).unwrap();
    cluster.note(2, "filling the controller log's filesystem");
    fill(&mount.dir);
    // Every create appends to every voter's log. Node 2's appends go on succeeding while
    // they fit in the slack of its log file's last block (they need no new block), so
    // topics are created until node 2 says its log is full: each create must succeed.
    let said_full = |c: &Cluster| {
        c.log_lines(2)
            .iter()
            .any(|l| l.contains("controller log write failed for want of space"))
    };
    let mut created = 0;
    while !said_full(&cluster) {
        assert!(
            created < CREATES_UNTIL_FULL_MAX,
            "node 2 never said its controller log is full, after {created} topics were created"
        );
        let name = format!("during-{created}");
        cluster.wait_for(&format!("creating {name}"), Duration::from_secs(30), |_| {
            create(&brokers, &name, 2)
        });
        created += 1;
        // The two other voters can answer a create before node 2 has tried to append it.
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("node 2's controller log was full after {created} topics were created");
    // Node 2 runs on (`wait_for` asserts every node is running) and answers.
    std::thread::sleep(Duration::from_secs(2));
    cluster.assert_running();
    cluster.metadata(2).unwrap();
    create(&brokers, "still", 2).unwrap();
    // Space freed: the voter restarts from its log, and topics that need all three nodes
    // are created again.
    cluster.note(2, "freeing the controller log's filesystem");
    std::fs::remove_file(mount.dir.join("filler")).unwrap();
    cluster.wait_for(
        "a topic on all three nodes after the space came back",
        Duration::from_secs(60),
        |_| create(&brokers, "after", 3),
    );
    cluster.wait_for(
        "node 2 to know the topic created after it rejoined",
        Duration::from_secs(30),
        |c| {
            let meta = c.metadata(2).map_err(|e| e.to_string())?;
            meta.topics
                .iter()
                .any(|t| t.name == "after")
                .then_some(())
                .ok_or_else(|| "not yet".to_owned())
        },
    );
    assert!(
        cluster
            .log_lines(2)
            .iter()
            .any(|l| l.contains("restarted from its log")),
        "node 2's voter did not say it restarted"
    );
    drop(cluster);
    drop(mount);
}
