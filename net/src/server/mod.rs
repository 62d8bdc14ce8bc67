//! The server behind `shardlogd`: N glommio shards on one node.
//!
//! - Each shard is a `LocalExecutor` (pinned to a core when there are at least as many
//!   cores as shards, unbound otherwise) that alone owns some partitions
//!   (`catalog::owner_shard`) and everything about them.
//! - Every shard accepts connections on the same port (SO_REUSEPORT: the kernel spreads
//!   connections over the shards). A request for a partition another shard owns is
//!   forwarded to that shard's bounded inbox (flume) and answered back on a oneshot.
//! - Shard 0 also changes the topic catalog (create, delete) and tells the others.
//! - The main thread starts the shards, prints the ready line once all listen, turns
//!   SIGTERM/SIGINT into a stop message to every shard, and returns once all have closed
//!   their logs. A shard that fails stops the others.

mod admin;
pub mod catalog;
mod cluster;
pub mod config;
mod connection;
mod dispatch;
mod inbox;
mod produce;
mod reads;
mod reply;
mod shard;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::{Either, select};
use glommio::{LocalExecutorBuilder, Placement};
use shardlog_engine::{DirLock, preflight, warm_iopoll_probe};
use shardlog_replicator::NodeId;
use shardlog_replicator::controller::ControllerConfig;
use shardlog_replicator::controller::raft_file::Recovered;

pub use config::{FileConfig, ServerConfig};

use crate::testing::READY_PREFIX;
use catalog::TopicSpec;
use inbox::{INBOX_DEPTH, ShardMsg};
use shard::{NodeInfo, Shard};

/// Milliseconds per controller Raft tick (election after 10 ticks, heartbeats every 2).
const CONTROLLER_TICK_MS: u64 = 25;

/// How long a stopping shard waits for requests in flight before closing its logs.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

enum Event {
    Bound(SocketAddr),
    Ready,
    Exited(usize, Result<(), String>),
}

/// Runs the server until SIGTERM/SIGINT or a shard fails.
pub fn run(config: ServerConfig) -> anyhow::Result<()> {
    // `_lock` lives until `run` returns, after every shard has closed its logs.
    let (_lock, catalog, listen, mut raft) = prepare(&config)?;
    let started = Instant::now();
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT])
        .context("installing signal handlers")?;
    let (events, events_rx) = mpsc::channel();
    let (inboxes, receivers): (Vec<_>, Vec<_>) = (0..config.shards)
        .map(|_| flume::bounded(INBOX_DEPTH))
        .unzip();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut receivers = receivers.into_iter();
    let mut handles = Vec::with_capacity(config.shards);
    let mut bound = listen;
    for id in 0..config.shards {
        let inbox = receivers.next().context("inbox per shard")?;
        let start = ShardStart {
            id,
            config: config.clone(),
            catalog: catalog.clone(),
            peers: inboxes.clone(),
            inbox,
            listen: bound,
            events: events.clone(),
            raft: if id == 0 { raft.take() } else { None },
            started,
        };
        let placement = if cores >= config.shards {
            Placement::Fixed(id)
        } else {
            Placement::Unbound
        };
        let events = events.clone();
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{id}"))
            .io_memory(config.io_memory)
            .spawn(move || async move {
                let result = shard_main(start).await.map_err(|e| format!("{e:#}"));
                let _ = events.send(Event::Exited(id, result));
            })
            .map_err(|e| anyhow::anyhow!("starting shard {id}: {e}"))?;
        handles.push(handle);
        if id == 0 {
            // The other shards bind the port shard 0 got (it may have been 0).
            match events_rx.recv() {
                Ok(Event::Bound(addr)) => bound = addr,
                Ok(Event::Exited(_, Err(e))) => anyhow::bail!("shard 0: {e}"),
                _ => anyhow::bail!("shard 0 stopped before listening"),
            }
        }
    }
    drop(events);
    let handle = signals.handle();
    let signal_events = {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for signal in signals.forever() {
                if tx.send(signal).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let result = supervise(&config, bound, &inboxes, &events_rx, &signal_events);
    handle.close();
    for handle in handles {
        let _ = handle.join();
    }
    result
}

/// What start-up read: the data directory's lock (held until the server returns), the
/// topics on disk (one node) or the controller's Raft state (cluster mode), and the
/// address to listen on.
type Prepared = (
    DirLock,
    BTreeMap<String, TopicSpec>,
    SocketAddr,
    Option<(Recovered, std::fs::File)>,
);

/// Start-up checks (with the fix for each failure) and what the shards start from.
fn prepare(config: &ServerConfig) -> anyhow::Result<Prepared> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    // First, before anything reads or changes the directory: opening a partition removes
    // leftover temporary files, which would be another server's live files.
    let lock = DirLock::acquire(&config.data_dir)?;
    preflight::preflight(&config.data_dir)?.warn_if_memlock_below(config.io_memory);
    // In cluster mode the topics are the controller's (its Raft log), not topic.json files.
    let catalog = match config.cluster {
        Some(_) => BTreeMap::new(),
        None => catalog::load(&config.data_dir)
            .with_context(|| format!("loading topics from {}", config.data_dir.display()))?,
    };
    let listen = resolve(&config.listen)?;
    if listen.port() != 0 {
        // glommio listeners set SO_REUSEPORT, which would silently share the port with a
        // server already running: refuse to start if something answers there. (A trial
        // bind would also trip over the sockets a killed predecessor left closing.)
        let probe = match listen.ip() {
            ip if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
            }
            _ => listen,
        };
        if std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(500)).is_ok() {
            anyhow::bail!("listening on {listen}: another server answers there");
        }
    }
    let raft = match config.cluster {
        Some(_) => Some(cluster::controller::open_raft_file(&config.data_dir)?),
        None => None,
    };
    Ok((lock, catalog, listen, raft))
}

/// Waits for every shard to be ready (then prints the ready line), forwards signals as
/// stop messages, and collects the shards' exits.
fn supervise(
    config: &ServerConfig,
    bound: SocketAddr,
    inboxes: &[flume::Sender<ShardMsg>],
    events: &mpsc::Receiver<Event>,
    signals: &mpsc::Receiver<i32>,
) -> anyhow::Result<()> {
    let stop_all = || {
        for inbox in inboxes {
            let _ = inbox.send(ShardMsg::Stop);
        }
    };
    let (mut ready, mut exited, mut stopping) = (0, 0, false);
    let mut failure: Option<String> = None;
    while exited < config.shards {
        if let Ok(signal) = signals.try_recv() {
            if stopping {
                tracing::warn!(signal, "second signal: exiting without a clean stop");
                std::process::exit(1);
            }
            tracing::info!(signal, "stopping");
            stopping = true;
            stop_all();
        }
        let event = match events.recv_timeout(Duration::from_millis(50)) {
            Ok(event) => event,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        match event {
            Event::Ready => {
                ready += 1;
                if ready == config.shards {
                    tracing::info!(
                        shards = config.shards,
                        data_dir = %config.data_dir.display(),
                        flush = %config.engine.flush,
                        "serving"
                    );
                    eprintln!("{READY_PREFIX}{bound}");
                }
            }
            Event::Exited(id, result) => {
                exited += 1;
                if let Err(e) = result {
                    tracing::error!(shard = id, error = %e, "shard failed; stopping");
                    failure.get_or_insert(format!("shard {id}: {e}"));
                }
                if !stopping {
                    stopping = true;
                    stop_all();
                }
            }
            Event::Bound(_) => {}
        }
    }
    match failure {
        None => {
            tracing::info!("stopped cleanly");
            Ok(())
        }
        Some(e) => Err(anyhow::anyhow!(e)),
    }
}

fn resolve(listen: &str) -> anyhow::Result<SocketAddr> {
    listen
        .to_socket_addrs()
        .with_context(|| format!("listen address {listen:?}"))?
        .next()
        .with_context(|| format!("listen address {listen:?} resolves to nothing"))
}

struct ShardStart {
    id: usize,
    config: ServerConfig,
    catalog: BTreeMap<String, TopicSpec>,
    peers: Vec<flume::Sender<ShardMsg>>,
    inbox: flume::Receiver<ShardMsg>,
    listen: SocketAddr,
    events: mpsc::Sender<Event>,
    /// Shard 0 in cluster mode: the controller's Raft state and file.
    raft: Option<(Recovered, std::fs::File)>,
    started: Instant,
}

async fn shard_main(start: ShardStart) -> anyhow::Result<()> {
    let ShardStart {
        id,
        config,
        catalog,
        peers,
        inbox,
        listen,
        events,
        raft,
        started,
    } = start;
    warm_iopoll_probe(&config.data_dir)
        .await
        .context("io_uring poll-ring warm-up")?;
    let listener = glommio::net::TcpListener::bind(listen)
        .map_err(|e| anyhow::anyhow!("shard {id}: listening on {listen}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| anyhow::anyhow!("shard {id}: local address: {e}"))?;
    if id == 0 {
        let _ = events.send(Event::Bound(bound));
    }
    let advertised = advertised(&config, bound)?;
    let node = NodeInfo {
        node_id: config.node_id,
        advertised,
        data_dir: config.data_dir.clone(),
        defaults: config.engine.clone(),
        shards: config.shards,
    };
    let cluster = match &config.cluster {
        Some(cluster_config) => Some(Rc::new(cluster_node(
            id,
            &config,
            cluster_config,
            &node.advertised,
            raft,
            started,
        )?)),
        None => None,
    };
    let shard = Rc::new(Shard::new(id, node, peers, cluster));
    for spec in catalog.values() {
        shard
            .open_topic(spec)
            .await
            .with_context(|| format!("opening topic {:?}", spec.name))?;
    }
    glommio::spawn_local(inbox::serve(shard.clone(), inbox)).detach();
    let upkeep = glommio::spawn_local(shard.clone().upkeep());
    if let Some(cluster) = &shard.cluster {
        start_cluster_tasks(&shard, cluster, &config);
    }
    let _ = events.send(Event::Ready);
    accept_until_stopped(&shard, listener).await;
    drain_and_close(&shard, upkeep).await;
    Ok(())
}

/// Serves each connection as its own task until the shard is told to stop.
async fn accept_until_stopped(shard: &Rc<Shard>, listener: glommio::net::TcpListener) {
    let mut stopping = shard.stopping();
    loop {
        match select(std::pin::pin!(listener.accept()), &mut stopping).await {
            Either::Left((Ok(stream), _)) => {
                glommio::spawn_local(connection::serve(shard.clone(), stream)).detach();
            }
            Either::Left((Err(e), _)) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(shard = shard.id, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
            Either::Right(_) => break,
        }
    }
}

/// Waits for requests in flight (at most `DRAIN_TIMEOUT`) and the upkeep, then closes
/// every log.
async fn drain_and_close(shard: &Shard, upkeep: glommio::Task<()>) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while shard.in_flight.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    upkeep.await;
    shard.close_all().await;
}

/// This shard's cluster state; shard 0 also runs the controller voter.
fn cluster_node(
    id: usize,
    config: &ServerConfig,
    cluster: &config::ClusterConfig,
    advertised: &(String, u16),
    raft: Option<(Recovered, std::fs::File)>,
    started: Instant,
) -> anyhow::Result<cluster::ClusterNode> {
    let mut node = cluster::ClusterNode::new(config.node_id, cluster.clone(), started);
    if id == 0 {
        let raft = raft.context("shard 0 needs the controller's Raft file")?;
        let voters = cluster.peers.keys().copied().map(NodeId).collect();
        let mut controller = ControllerConfig::new(NodeId(config.node_id), voters);
        controller.session_timeout_ms = cluster.session_timeout_ms;
        // Raft ticks of 25 ms: a controller election takes 250-400 ms, well inside the
        // session timeout, so losing the controller leader costs no more than a session.
        controller.tick_ms = CONTROLLER_TICK_MS;
        let service = cluster::controller::ControllerService::new(
            controller,
            format!("{}:{}", advertised.0, advertised.1),
            raft,
            node.peers.clone(),
            node.now(),
        )?;
        node.controller = Some(Rc::new(service));
    }
    Ok(node)
}

fn start_cluster_tasks(
    shard: &Rc<Shard>,
    cluster: &Rc<cluster::ClusterNode>,
    config: &ServerConfig,
) {
    let place = cluster::Placement {
        shard: shard.id,
        shards: config.shards,
        data_dir: config.data_dir.clone(),
        defaults: config.engine.clone(),
    };
    glommio::spawn_local(cluster.clone().reconcile_loop(place)).detach();
    let stopped = {
        let shard = shard.clone();
        move || shard.is_stopping()
    };
    glommio::spawn_local(
        cluster
            .clone()
            .tick_loop(shard.peers[0].clone(), stopped.clone()),
    )
    .detach();
    if let Some(service) = &cluster.controller {
        let clock = {
            let cluster = cluster.clone();
            move || cluster.now()
        };
        glommio::spawn_local(service.clone().run(shard.peers.clone(), clock, stopped)).detach();
    }
}

/// The `HOST:PORT` clients are told to use: `--advertise`, else the bound address (with
/// 127.0.0.1 for an unspecified host).
fn advertised(config: &ServerConfig, bound: SocketAddr) -> anyhow::Result<(String, u16)> {
    Ok(match &config.advertise {
        Some(addr) => split_host_port(addr)?,
        None => {
            let ip = match bound.ip() {
                ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                ip => ip,
            };
            (ip.to_string(), bound.port())
        }
    })
}

fn split_host_port(addr: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("advertised address {addr:?}: expected HOST:PORT"))?;
    let port = port
        .parse()
        .with_context(|| format!("advertised address {addr:?}: port"))?;
    Ok((host.to_owned(), port))
}
