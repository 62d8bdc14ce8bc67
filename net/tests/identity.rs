//! What `shardlogd` checks before it serves, run as the shipped binary: a data directory
//! belongs to the node id it was first started with (`DATA/node.json`), and a node's peer
//! listener is where its peers dial it (its own `--peers` entry). Each refusal is prompt,
//! non-zero, names its fix, and leaves the data directory as it found it, so that the
//! start that follows the fix works.
#![cfg(test)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::cluster::{Cluster, Links, free_ports, partition};
use shardlog_net::api::{Acks, TopicConfig};
use shardlog_net::testing::{Exited, Launch, Shardlogd, StderrTo, refused_start};

/// A refused start that takes longer than this has hung (it is killed, the test fails).
const HANG: Duration = Duration::from_secs(30);
/// A refusal must come this fast (a start that serves takes about a second).
const PROMPT: Duration = Duration::from_secs(10);

/// Records per partition by offset, as written or read back.
type Records = BTreeMap<u32, Vec<(u64, Vec<u8>)>>;

/// `shardlogd --data-dir DATA_DIR --listen LISTEN ARGS...`, which must exit by itself
/// within `PROMPT` without serving.
fn refused(data_dir: &Path, listen: &str, args: &[&str]) -> Exited {
    refused_within(data_dir, listen, args, PROMPT)
}

/// `refused`, within `prompt`.
fn refused_within(data_dir: &Path, listen: &str, args: &[&str], prompt: Duration) -> Exited {
    let launch = Launch {
        data_dir,
        listen,
        args,
        stderr: StderrTo::Echo,
    };
    let exited = refused_start(&launch, HANG).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    eprintln!(
        "{args:?}: exited {:?} after {:?}:\n{}",
        exited.status.code(),
        exited.took,
        exited.stderr
    );
    assert!(
        exited.took < prompt,
        "{args:?}: the refusal took {:?}",
        exited.took
    );
    exited
}

/// Asserts `exited` exited with `code` and its stderr holds every one of `words`.
fn assert_refusal(exited: &Exited, code: i32, words: &[&str]) {
    assert_eq!(exited.status.code(), Some(code), "{}", exited.stderr);
    for word in words {
        assert!(
            exited.stderr.contains(word),
            "missing {word:?} in:\n{}",
            exited.stderr
        );
    }
}

/// Creates `topic` (`replication_factor` 0: the server's default) and writes 20 records to
/// each of its partitions; what was written.
fn fill(brokers: &str, topic: &str, partitions: u32, replication_factor: u16) -> Records {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    common::run(move || async move {
        let client = common::connect(&brokers).await;
        client
            .create_topic(
                &topic,
                partitions,
                replication_factor,
                TopicConfig::default(),
            )
            .await
            .unwrap();
        let mut written = Records::new();
        for p in 0..partitions {
            let values: Vec<Vec<u8>> = (0..20)
                .map(|i| format!("{topic}-p{p}-r{i}").into_bytes())
                .collect();
            let base = client
                .produce(&topic, p, Acks::All, common::batch(&values))
                .await
                .unwrap()
                .unwrap();
            let at = (base..).zip(values).collect();
            written.insert(p, at);
        }
        written
    })
}

/// Every record of `partitions` of `topic`, from offset 0.
fn read(brokers: &str, topic: &str, partitions: &[u32]) -> Records {
    let (brokers, topic, partitions) = (brokers.to_owned(), topic.to_owned(), partitions.to_vec());
    common::run(move || async move {
        let client = common::connect(&brokers).await;
        let mut read = Records::new();
        for p in partitions {
            read.insert(p, common::consume_all(&client, &topic, p, 0).await);
        }
        read
    })
}

fn node_file(data_dir: &Path) -> Vec<u8> {
    std::fs::read(data_dir.join("node.json")).unwrap()
}

#[test]
fn a_directory_refuses_another_node_id_and_serves_its_own_after() {
    let dir = common::data_dir();
    let mut server = Shardlogd::start(dir.path(), &["--shards", "2"]).unwrap();
    let written = fill(&server.brokers(), "t", 2, 0);
    server.terminate().unwrap();
    let recorded = node_file(dir.path());

    let exited = refused(
        dir.path(),
        "127.0.0.1:0",
        &["--shards", "2", "--node-id", "1"],
    );
    let shown = dir.path().display().to_string();
    assert_refusal(
        &exited,
        1,
        &["belongs to node 0, not node 1", "--node-id 0", &shown],
    );
    assert_eq!(
        node_file(dir.path()),
        recorded,
        "the refused start changed node.json"
    );

    let server = Shardlogd::start(dir.path(), &["--shards", "2", "--node-id", "0"]).unwrap();
    assert_eq!(read(&server.brokers(), "t", &[0, 1]), written);
}

/// Nodes 1 and 2 of a cluster swap data directories by mistake: node 1's directory,
/// started as node 2, is refused; started as node 1 it serves what it held.
#[test]
fn a_cluster_node_s_directory_refuses_another_node_s_id() {
    let mut cluster = Cluster::start(3, Links::Direct);
    cluster.wait_for_controller(Duration::from_secs(30));
    // One replica per partition: what node 1 serves after its restart came from its disk.
    let written = fill(&cluster.brokers(), "solo", 6, 1);
    let meta = cluster.metadata(0).unwrap();
    let on_node_1: Vec<u32> = (0..6)
        .filter(|&p| partition(&meta, "solo", p).unwrap().replicas == [1])
        .collect();
    assert!(!on_node_1.is_empty(), "no partition on node 1: {meta:?}");
    cluster.kill(&[1, 2]);
    let node_1 = cluster.data_dir(1);
    let recorded = node_file(&node_1);

    let as_node_2 = cluster.node_args(2);
    let as_node_2: Vec<&str> = as_node_2.iter().map(String::as_str).collect();
    let exited = refused(&node_1, &cluster.addr(2), &as_node_2);
    let shown = node_1.display().to_string();
    assert_refusal(
        &exited,
        1,
        &["belongs to node 1, not node 2", "--node-id 1", &shown],
    );
    assert_eq!(
        node_file(&node_1),
        recorded,
        "the refused start changed node.json"
    );

    cluster.start_nodes(&[1, 2]);
    cluster.wait_for(
        "node 1 leading its partitions",
        Duration::from_secs(30),
        |c| {
            let meta = c.metadata(1).map_err(|e| e.to_string())?;
            let led = on_node_1
                .iter()
                .all(|&p| partition(&meta, "solo", p).is_some_and(|p| p.leader == Some(1)));
            if led {
                Ok(())
            } else {
                Err(format!("{meta:?}"))
            }
        },
    );
    let back = read(&cluster.addr(1), "solo", &on_node_1);
    for p in &on_node_1 {
        assert_eq!(back[p], written[p], "partition {p}");
    }
}

/// `--peers` for two nodes on 127.0.0.1: node 0 at `ports[0]`, node 1 at `ports[1]`.
fn two_peers(ports: &[u16]) -> String {
    format!("0=127.0.0.1:{},1=127.0.0.1:{}", ports[0], ports[1])
}

#[test]
fn a_peer_listen_other_than_this_node_s_peers_entry_is_refused() {
    let ports = free_ports(3);
    let peers = two_peers(&ports);
    let dir = common::data_dir();
    let elsewhere = format!("127.0.0.1:{}", ports[2]);
    let args = [
        "--node-id",
        "0",
        "--peers",
        &peers,
        "--peer-listen",
        &elsewhere,
    ];
    let exited = refused(dir.path(), "127.0.0.1:0", &args);
    let own = format!("0=127.0.0.1:{}", ports[0]);
    assert_refusal(
        &exited,
        1,
        &[
            &format!("--peer-listen {elsewhere} is not this node's --peers entry {own}"),
            "Make them agree",
        ],
    );
    // Another port on an unspecified host, and another host on the same port, too.
    for listen in [
        format!("0.0.0.0:{}", ports[2]),
        format!("127.0.0.2:{}", ports[0]),
    ] {
        let args = [
            "--node-id",
            "0",
            "--peers",
            &peers,
            "--peer-listen",
            &listen,
        ];
        let exited = refused(dir.path(), "127.0.0.1:0", &args);
        assert_refusal(&exited, 1, &[&format!("--peer-listen {listen} is not")]);
    }
    // A --peers that names only this node (a cluster of one, without a peer listener yet)
    // is held to the same rule, rather than the --peer-listen being ignored.
    let alone = format!("0=127.0.0.1:{}", ports[0]);
    let args = [
        "--node-id",
        "0",
        "--peers",
        &alone,
        "--peer-listen",
        &elsewhere,
    ];
    let exited = refused(dir.path(), "127.0.0.1:0", &args);
    assert_refusal(
        &exited,
        1,
        &[&format!(
            "--peer-listen {elsewhere} is not this node's --peers entry {own}"
        )],
    );
    assert!(
        !dir.path().join("node.json").exists(),
        "a start refused for its peer address claimed the directory"
    );
}

#[test]
fn peers_without_this_node_or_a_peer_listen_without_peers_are_usage_errors() {
    let ports = free_ports(2);
    let peers = two_peers(&ports);
    let root = common::data_dir();
    let data = root.path().join("never-created");
    let peer_listen = format!("127.0.0.1:{}", ports[0]);
    for (args, words) in [
        (
            vec!["--node-id", "5", "--peers", &peers],
            "--peers must list this node (5) too",
        ),
        (
            vec!["--peer-listen", &peer_listen],
            "--peer-listen without --peers: a node alone has no peer listener",
        ),
    ] {
        let exited = refused(&data, "127.0.0.1:0", &args);
        assert_refusal(&exited, 2, &[words, "Usage: shardlogd"]);
        assert!(!data.exists(), "{args:?}: the data directory was created");
    }
}

#[test]
fn a_peer_listener_on_the_client_port_or_a_busy_port_is_refused() {
    let ports = free_ports(2);
    let peers = two_peers(&ports);
    let dir = common::data_dir();
    let own = format!("127.0.0.1:{}", ports[0]);
    // The client listener on this node's peer port: by its --peers entry, or by
    // --peer-listen on every address.
    let everywhere = format!("0.0.0.0:{}", ports[0]);
    for args in [
        vec!["--node-id", "0", "--peers", &peers],
        vec![
            "--node-id",
            "0",
            "--peers",
            &peers,
            "--peer-listen",
            &everywhere,
        ],
    ] {
        let exited = refused(dir.path(), &own, &args);
        assert_refusal(
            &exited,
            1,
            &["need different ports: clients and peers speak on separate ports"],
        );
    }
    // Something already answers on this node's peer port: refused once it has answered
    // for the time a killed predecessor's sockets may take to close (10 s).
    let busy = std::net::TcpListener::bind(&own).unwrap();
    let exited = refused_within(
        dir.path(),
        "127.0.0.1:0",
        &["--node-id", "0", "--peers", &peers],
        HANG,
    );
    assert!(
        exited.took >= Duration::from_secs(9),
        "refused after {:?}",
        exited.took
    );
    assert_refusal(
        &exited,
        1,
        &[&format!(
            "the peer listener on {own}: another server answers there"
        )],
    );
    drop(busy);
    assert!(
        !dir.path().join("node.json").exists(),
        "a start refused for its peer address claimed the directory"
    );
}

/// The likeliest cause of a `--peer-listen` that is not this node's entry is a wrong
/// `--node-id`: the refused start must not record that id, or the corrected start would
/// be refused as another node.
#[test]
fn a_start_refused_for_its_peer_address_leaves_the_directory_to_the_right_id() {
    let ports = free_ports(4);
    let peers = two_peers(&ports);
    let root = common::data_dir();
    let secret = root.path().join("cluster.secret");
    std::fs::write(&secret, common::cluster::CLUSTER_SECRET).unwrap();
    let owner_only = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(&secret, owner_only).unwrap();
    let secret = secret.display().to_string();
    let node_dir = |node: usize| root.path().join(format!("node-{node}"));
    let peer_listen = |node: usize| format!("127.0.0.1:{}", ports[node]);
    let listen = |node: usize| format!("127.0.0.1:{}", ports[2 + node]);

    // Node 1's directory and peer listener, started with node 0's id.
    let wrong = [
        "--node-id",
        "0",
        "--peers",
        &peers,
        "--peer-listen",
        &peer_listen(1),
    ];
    let exited = refused(&node_dir(1), &listen(1), &wrong);
    assert_refusal(&exited, 1, &["is not this node's --peers entry"]);
    assert!(
        !node_dir(1).join("node.json").exists(),
        "the refused start recorded node 0 as the directory's owner"
    );

    // Corrected, both nodes start and form the cluster.
    let started: Vec<_> = [0usize, 1]
        .into_iter()
        .map(|node| {
            let (dir, listen, peers, secret) =
                (node_dir(node), listen(node), peers.clone(), secret.clone());
            let peer_listen = peer_listen(node);
            std::thread::spawn(move || {
                let id = node.to_string();
                let args = [
                    "--node-id",
                    &id,
                    "--peers",
                    &peers,
                    "--peer-listen",
                    &peer_listen,
                    "--cluster-secret-file",
                    &secret,
                    "--shards",
                    "1",
                ];
                Shardlogd::launch(&Launch {
                    data_dir: &dir,
                    listen: &listen,
                    args: &args,
                    stderr: StderrTo::Echo,
                })
            })
        })
        .collect();
    // Both kept running until both are ready: each waits for the other's vote.
    let servers: Vec<_> = started.into_iter().map(|h| h.join().unwrap()).collect();
    for (node, server) in servers.iter().enumerate() {
        assert!(server.is_ok(), "node {node} did not start: {server:?}");
    }
}
