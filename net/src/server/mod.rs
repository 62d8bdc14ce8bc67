//! The server behind `shardlogd`: one node of a cluster (a cluster of one without
//! `--peers`), as N glommio shards.
//!
//! ```text
//!  client listener (every shard, SO_REUSEPORT) -> protocol::shardlog -> ops -> replicas
//!  Kafka listener (every shard, SO_REUSEPORT)  -> protocol::kafka    -> ops -> replicas
//!  peer listener (nodes only, after a handshake) -> Replicate / Controller / topic admin
//!  shard 0: the controller voter (cluster::controller), publishing views to every shard
//!  every shard: its replicas (cluster::replicas), its inbox (shard::inbox)
//! ```
//!
//! Rooms, calls going one way: `protocol` (front ends) and `peer_listener` decode and
//! call `ops` (typed operations: routing to the owner shard, forwarding, waiting); `ops`
//! works on `cluster` (the controller's view, the replicas) and `shard` (a shard's state).
//! `cluster` calls neither `ops` nor a front end. A shard owns its `cluster` state, and
//! the cluster posts messages (views, stop, ISR proposals) to shard inboxes; the inbox
//! loop (`shard::inbox`) hands each message to `ops` or `cluster`.
//!
//! The main thread checks the start (data directory, node identity, ports), starts the
//! shards, prints the ready line once every shard has the controller's view, turns
//! SIGTERM/SIGINT into a stop message to every shard, and returns once all have closed
//! their logs. A shard that fails stops the others.

mod admin;
mod cluster;
pub mod config;
pub mod groups;
pub mod identity;
pub(crate) mod metrics;
mod ops;
mod peer_listener;
mod protocol;
mod security;
mod shard;
pub mod topic_file;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::{Either, select};
use glommio::{LocalExecutorBuilder, Placement};
use shardlog_engine::sync_observer::SyncKind;
use shardlog_engine::{DirLock, TailCacheBudget, preflight, warm_iopoll_probe};
use shardlog_replicator::controller::ControllerConfig;
use shardlog_replicator::{Incarnation, NodeId};

pub use config::{ClusterConfig, FileConfig, ServerConfig};
use protocol::limits::ClientLimits;
use protocol::moving::Front;
pub use security::tls::{ClientAuth, ClientTlsFiles, ListenerTlsError};

use crate::logging;
use crate::peer::Peers;
use crate::peer::auth::PeerSecurity;
use crate::testing::{ADMIN_PREFIX, KAFKA_PREFIX, READY_PREFIX};
use cluster::controller::{ControllerLane, ControllerService, ControllerStart};
use cluster::{ClusterNode, adopt};
use security::acl::Authorizer;
use security::tls::ListenerTls;
use shard::{INBOX_DEPTH, NodeInfo, Shard, ShardMsg};

/// Milliseconds per controller Raft tick (election after 10 ticks, heartbeats every 2).
const CONTROLLER_TICK_MS: u64 = 25;

/// How long start-up waits for a port a killed predecessor still answers on.
const PORT_RELEASE_WAIT: Duration = Duration::from_secs(10);

/// How long a stopping shard waits for requests in flight before closing its logs.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

enum Event {
    /// Shard 0 listens: the client listener's address, the Kafka listener's, the admin
    /// listener's (if any).
    Bound(SocketAddr, SocketAddr, Option<SocketAddr>),
    Ready,
    Exited(usize, Result<(), String>),
}

/// What start-up checked and read, for the shards.
struct Prepared {
    /// The data directory's lock, held until the server returns (after every shard has
    /// closed its logs).
    lock: DirLock,
    listen: SocketAddr,
    /// Where the Kafka listener binds.
    kafka_listen: SocketAddr,
    /// Where the peer listener binds, for a node with peers.
    peer_listen: Option<SocketAddr>,
    /// Where the admin HTTP listener binds (shard 0 only), if anywhere.
    admin_listen: Option<SocketAddr>,
    security: Arc<PeerSecurity>,
    /// TLS on the client listeners, if configured; SIGHUP reloads it.
    client_tls: Option<Arc<ListenerTls>>,
    incarnation: Incarnation,
    controller: ControllerStart,
    /// Shard 0's controller lane, for every shard.
    controller_lane: ControllerLane,
}

/// Runs the server until SIGTERM/SIGINT or a shard fails.
pub fn run(config: ServerConfig) -> anyhow::Result<()> {
    // The main thread's events (start-up, signals, the supervisor) carry the node too.
    let _node = tracing::info_span!("server", node = config.cluster.node_id).entered();
    let prepared = prepare(&config)?;
    let _lock = prepared.lock;
    let started = Instant::now();
    let signals = signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT, libc::SIGHUP])
        .context("installing signal handlers")?;
    let (events, events_rx) = mpsc::channel();
    let (inboxes, receivers): (Vec<_>, Vec<_>) = (0..config.shards)
        .map(|_| flume::bounded(INBOX_DEPTH))
        .unzip();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut receivers = receivers.into_iter();
    let mut handles = Vec::with_capacity(config.shards);
    let mut bound = prepared.listen;
    let mut kafka_bound = prepared.kafka_listen;
    let mut admin_bound = None;
    let mut controller = Some(prepared.controller);
    let applied = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let open_outcomes = Arc::new(cluster::open_outcomes::OpenOutcomes::default());
    let client_limits = client_limits(&config);
    for id in 0..config.shards {
        let inbox = receivers.next().context("inbox per shard")?;
        let start = ShardStart {
            id,
            config: config.clone(),
            inboxes: inboxes.clone(),
            inbox,
            listen: bound,
            kafka_listen: kafka_bound,
            peer_listen: prepared.peer_listen,
            admin_listen: prepared.admin_listen,
            security: prepared.security.clone(),
            client_tls: prepared.client_tls.clone(),
            incarnation: prepared.incarnation,
            events: events.clone(),
            controller: if id == 0 { controller.take() } else { None },
            controller_lane: prepared.controller_lane.clone(),
            started,
            client_limits: client_limits.clone(),
            applied: applied.clone(),
            open_outcomes: open_outcomes.clone(),
        };
        let events = events.clone();
        let handle = LocalExecutorBuilder::new(shard_placement(id, cores, config.shards))
            .name(&format!("shard-{id}"))
            .io_memory(config.io_memory)
            .preempt_timer(config.task_quota)
            .spawn(move || shard_thread(id, start, events))
            .map_err(|e| anyhow::anyhow!("starting shard {id}: {e}"))?;
        handles.push(handle);
        if id == 0 {
            // The other shards bind the port shard 0 got (it may have been 0).
            (bound, kafka_bound, admin_bound) = shard_0_bound(&events_rx)?;
        }
    }
    drop(events);
    let handle = signals.handle();
    let signal_events = forward_signals(signals);
    let result = supervise(
        &config,
        (bound, kafka_bound, admin_bound),
        &inboxes,
        &events_rx,
        &signal_events,
        prepared.client_tls.as_deref(),
    );
    handle.close();
    for handle in handles {
        let _ = handle.join();
    }
    result
}

/// The addresses shard 0 bound (the client, Kafka and admin listeners').
fn shard_0_bound(
    events: &mpsc::Receiver<Event>,
) -> anyhow::Result<(SocketAddr, SocketAddr, Option<SocketAddr>)> {
    match events.recv() {
        Ok(Event::Bound(addr, kafka, admin)) => Ok((addr, kafka, admin)),
        Ok(Event::Exited(_, Err(e))) => anyhow::bail!("shard 0: {e}"),
        _ => anyhow::bail!("shard 0 stopped before listening"),
    }
}

/// The client listeners' limits, shared by every shard and both front ends.
fn client_limits(config: &ServerConfig) -> Arc<ClientLimits> {
    Arc::new(ClientLimits::new(
        config.max_connections,
        config.idle_timeout,
        config.connection_reply_bytes,
    ))
}

/// Shard `id`'s executor: runs the shard, then reports how it ended. Called on the shard's
/// thread, where it enters the `shard` span for the thread's life: every task of this
/// executor runs on this thread, so each of its events carries `node` and `shard`.
fn shard_thread(
    id: usize,
    start: ShardStart,
    events: mpsc::Sender<Event>,
) -> impl std::future::Future<Output = ()> {
    let node = start.config.cluster.node_id;
    let span = tracing::info_span!("shard", node, shard = id).entered();
    async move {
        let result = shard_main(start).await.map_err(|e| format!("{e:#}"));
        let _ = events.send(Event::Exited(id, result));
        drop(span);
    }
}

/// One core per shard when there are enough; more shards than cores run unpinned.
fn shard_placement(id: usize, cores: usize, shards: usize) -> Placement {
    if cores >= shards {
        Placement::Fixed(id)
    } else {
        Placement::Unbound
    }
}

/// Signals as a channel, from a thread of their own.
fn forward_signals(mut signals: signal_hook::iterator::Signals) -> mpsc::Receiver<i32> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if tx.send(signal).is_err() {
                break;
            }
        }
    });
    rx
}

/// Start-up checks (each failure names its fix) and what the shards start from. Only a
/// start that passed every check records its node id in the data directory: a refused
/// one leaves it as it was (a wrong `--node-id` is the likeliest cause of a peer address
/// that is not this node's, and recording it would refuse the corrected start).
fn prepare(config: &ServerConfig) -> anyhow::Result<Prepared> {
    let data_dir = &config.data_dir;
    let (listen, kafka_listen, peer_listen) = addresses(config)?;
    let admin_listen = config.admin_listen.as_deref().map(resolve).transpose()?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    // First, before anything reads or changes the directory: opening a partition removes
    // leftover temporary files, which would be another server's live files.
    let lock = DirLock::acquire(data_dir)?;
    let report = preflight::preflight(data_dir)?;
    report.warn_if_memlock_below(config.io_memory);
    report.warn_if_online_discard();
    // Before the shards start: every thread shares the limit.
    if let Err(e) = preflight::raise_nofile_limit() {
        tracing::warn!(error = %e, "reading the open-files limit");
    }
    let cluster = &config.cluster;
    refuse_if_answering(listen, "listening on")?;
    refuse_if_answering(kafka_listen, "the Kafka listener on")?;
    if let Some(peer_listen) = peer_listen {
        refuse_if_answering(peer_listen, "the peer listener on")?;
    }
    if let Some(admin_listen) = admin_listen {
        refuse_if_answering(admin_listen, "the admin listener (--admin-listen) on")?;
    }
    let security = peer_security(cluster)?;
    let client_tls = config
        .client_tls
        .clone()
        .map(ListenerTls::load)
        .transpose()
        .map_err(|e| anyhow::anyhow!("client listener TLS: {e}"))?;
    let to_adopt = adopt::scan(data_dir)?;
    if cluster.has_peers() && !to_adopt.is_empty() {
        let names: Vec<&str> = to_adopt.iter().map(|t| t.topic.name.as_str()).collect();
        anyhow::bail!(
            "{} holds topics described by topic.json ({}): a node with peers cannot adopt \
             them (they would have one replica). Start this node alone (without --peers) \
             to adopt them, or move their directories away",
            data_dir.display(),
            names.join(", ")
        );
    }
    let incarnation = identity::start(data_dir, cluster.node_id)?;
    let raft = cluster::controller::open_raft_file(data_dir, cluster.has_peers())?;
    let (controller_lane, lane) = flume::bounded(cluster::controller::CONTROLLER_LANE_DEPTH);
    Ok(Prepared {
        lock,
        listen,
        kafka_listen,
        peer_listen,
        admin_listen,
        security: Arc::new(security),
        client_tls: client_tls.map(Arc::new),
        incarnation: Incarnation(incarnation),
        controller: ControllerStart {
            raft,
            data_dir: data_dir.clone(),
            to_adopt,
            incarnation,
            lane,
        },
        controller_lane,
    })
}

/// The client listener's address, the Kafka listener's and the peer listener's (for a
/// node with peers), on separate ports.
fn addresses(
    config: &ServerConfig,
) -> anyhow::Result<(SocketAddr, SocketAddr, Option<SocketAddr>)> {
    let listen = resolve(&config.listen)?;
    let kafka_listen = resolve(&config.kafka.listen)?;
    let peer_listen = peer_listen_address(&config.cluster)?;
    let clash = |a: SocketAddr, b: SocketAddr| {
        a.port() != 0
            && a.port() == b.port()
            && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
    };
    if let Some(peer_listen) = peer_listen
        && clash(peer_listen, listen)
    {
        anyhow::bail!(
            "the client listener ({listen}) and the peer listener ({peer_listen}) need \
             different ports: clients and peers speak on separate ports"
        );
    }
    if clash(kafka_listen, listen) || peer_listen.is_some_and(|p| clash(kafka_listen, p)) {
        anyhow::bail!(
            "the Kafka listener ({kafka_listen}) needs a port of its own (--kafka-listen): \
             the client listener is on {listen}{}",
            peer_listen.map_or_else(String::new, |p| format!(", the peer listener on {p}"))
        );
    }
    Ok((listen, kafka_listen, peer_listen))
}

/// glommio listeners set SO_REUSEPORT, which would silently share a port with a server
/// already running: refuse to start if something answers there. (A trial bind would
/// also trip over the sockets a killed predecessor left closing.)
///
/// A predecessor killed with SIGKILL can answer for a while after it was reaped: its
/// io_uring is torn down by the kernel in the background, and the accept it had in flight
/// keeps its listening socket open (and completing handshakes) until then. This runs with
/// the data directory's lock held, so a predecessor on the same directory is gone: keep
/// probing for `PORT_RELEASE_WAIT` before calling the port taken, so a restart right
/// after a kill starts instead of failing.
fn refuse_if_answering(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = match addr.ip() {
        ip if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()),
        _ => addr,
    };
    let answers =
        || std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(500)).is_ok();
    let start = Instant::now();
    let mut said = false;
    while answers() {
        if start.elapsed() >= PORT_RELEASE_WAIT {
            anyhow::bail!("{what} {addr}: another server answers there");
        }
        if !said {
            tracing::warn!(
                %addr,
                "something answers on the port: waiting up to {} s for it to close (a \
                 killed predecessor's sockets close once the kernel has torn down its io_uring)",
                PORT_RELEASE_WAIT.as_secs()
            );
            said = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The peer listener's address: this node's own `--peers` entry, which `--peer-listen`
/// may only restate (a node listening elsewhere than its peers dial would never be
/// reached, and would look down to them). `None` for a node alone, which has no peer
/// listener, though a `--peers` naming only itself is held to the same rule.
fn peer_listen_address(cluster: &ClusterConfig) -> anyhow::Result<Option<SocketAddr>> {
    if !cluster.has_peers() && cluster.peer_listen.is_none() {
        return Ok(None);
    }
    let own = cluster
        .peers
        .get(&cluster.node_id)
        .context("--peers lists this node")?;
    let own_addr = resolve(own)?;
    if let Some(listen) = &cluster.peer_listen {
        let listen_addr = resolve(listen)?;
        let same = listen_addr == own_addr
            || (listen_addr.ip().is_unspecified() && listen_addr.port() == own_addr.port());
        if !same {
            anyhow::bail!(
                "--peer-listen {listen} is not this node's --peers entry {}={own}: the other \
                 nodes would dial {own}. Make them agree",
                cluster.node_id
            );
        }
        return Ok(cluster.has_peers().then_some(listen_addr));
    }
    Ok(Some(own_addr))
}

/// How peers prove who they are; a cluster with peers and no credentials is warned about
/// loudly.
fn peer_security(cluster: &ClusterConfig) -> anyhow::Result<PeerSecurity> {
    let security = &cluster.security;
    let tls = security
        .tls
        .as_ref()
        .map(|(cert, key, ca)| crate::peer::auth::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        });
    let loaded = PeerSecurity::load(security.secret_file.as_deref(), tls)
        .map_err(|e| anyhow::anyhow!("peer credentials: {e}"))?;
    loaded
        .check_node_id(cluster.node_id)
        .map_err(|e| anyhow::anyhow!("peer credentials: {e}"))?;
    if cluster.has_peers() && matches!(loaded, PeerSecurity::Insecure) {
        tracing::warn!(
            "NO PEER AUTHENTICATION: any process that reaches this node's peer listener can \
             claim to be a node of the cluster, and replicate, vote or fence as it. Set \
             --cluster-secret-file (the same secret on every node) or --peer-tls-cert, \
             --peer-tls-key and --peer-tls-ca"
        );
    }
    Ok(loaded)
}

/// SIGHUP: reads the client listeners' TLS files again. A failure keeps the
/// configuration in use; either way the log says what happened.
fn reload(client_tls: Option<&ListenerTls>) {
    let Some(tls) = client_tls else {
        tracing::info!("SIGHUP: no TLS on the client listeners, nothing to reload");
        return;
    };
    match tls.reload() {
        Ok(()) => tracing::info!("SIGHUP: client listener TLS reloaded; new connections use it"),
        Err(e) => tracing::error!(
            error = %e,
            "SIGHUP: client listener TLS not reloaded; the previous certificate stays in use"
        ),
    }
}

/// Waits for every shard to be ready (then prints the ready line), forwards signals as
/// stop messages (SIGHUP reloads TLS), and collects the shards' exits.
fn supervise(
    config: &ServerConfig,
    (bound, kafka_bound, admin_bound): (SocketAddr, SocketAddr, Option<SocketAddr>),
    inboxes: &[flume::Sender<ShardMsg>],
    events: &mpsc::Receiver<Event>,
    signals: &mpsc::Receiver<i32>,
    client_tls: Option<&ListenerTls>,
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
            if signal == libc::SIGHUP {
                reload(client_tls);
                continue;
            }
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
                        node = config.cluster.node_id,
                        nodes = config.cluster.nodes(),
                        data_dir = %config.data_dir.display(),
                        flush = %config.engine.flush,
                        "serving"
                    );
                    let node = config.cluster.node_id;
                    if let Some(admin) = admin_bound {
                        logging::announce(ADMIN_PREFIX, &admin.to_string(), node);
                    }
                    logging::announce(KAFKA_PREFIX, &kafka_bound.to_string(), node);
                    logging::announce(READY_PREFIX, &bound.to_string(), node);
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
            Event::Bound(..) => {}
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
        .with_context(|| format!("address {listen:?}"))?
        .next()
        .with_context(|| format!("address {listen:?} resolves to nothing"))
}

struct ShardStart {
    id: usize,
    config: ServerConfig,
    inboxes: Vec<flume::Sender<ShardMsg>>,
    inbox: flume::Receiver<ShardMsg>,
    listen: SocketAddr,
    kafka_listen: SocketAddr,
    peer_listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    security: Arc<PeerSecurity>,
    client_tls: Option<Arc<ListenerTls>>,
    incarnation: Incarnation,
    events: mpsc::Sender<Event>,
    /// Shard 0: what the controller voter starts from.
    controller: Option<ControllerStart>,
    /// Shard 0's controller lane.
    controller_lane: ControllerLane,
    started: Instant,
    /// The client listener's limits, shared by every shard.
    client_limits: Arc<ClientLimits>,
    /// The controller's applied Raft index, shared by every shard.
    applied: Arc<std::sync::atomic::AtomicU64>,
    /// The node's replicas that could not open, shared by every shard.
    open_outcomes: Arc<cluster::open_outcomes::OpenOutcomes>,
}

async fn shard_main(start: ShardStart) -> anyhow::Result<()> {
    let ShardStart {
        id,
        config,
        inboxes,
        inbox,
        listen,
        kafka_listen,
        peer_listen,
        admin_listen,
        security,
        client_tls,
        incarnation,
        events,
        controller,
        controller_lane,
        started,
        client_limits,
        applied,
        open_outcomes,
    } = start;
    // This shard's segment fdatasyncs feed its latency histogram.
    shardlog_engine::sync_observer::set(|kind, took| {
        let latency = match kind {
            SyncKind::Fdatasync => metrics::Latency::Fdatasync,
            SyncKind::DurableWrites => metrics::Latency::DurableWrites,
        };
        metrics::latency(latency, took);
    });
    warm_iopoll_probe(&config.data_dir)
        .await
        .context("io_uring poll-ring warm-up")?;
    let (listener, bound) = bind(id, listen, "listening on")?;
    let (kafka_listener, kafka_bound) = bind(id, kafka_listen, "the Kafka listener on")?;
    let admin = bind_admin_and_report(id, admin_listen, (bound, kafka_bound), &events)?;
    let peer_listener = peer_listen
        .map(|addr| bind_peer_listener(id, addr))
        .transpose()?;
    let node = node_info(&config, bound, kafka_bound)?;
    let cluster = Rc::new(cluster_node(
        &config,
        (id, &node),
        &security,
        incarnation,
        controller,
        started,
        (applied, open_outcomes, controller_lane),
    )?);
    let shard = Rc::new(Shard::new(id, node, inboxes, cluster));
    glommio::spawn_local(shard::serve_inbox(shard.clone(), inbox)).detach();
    start_cluster_tasks(&shard, &config);
    // Peers first: the controller's first view needs them (an election, a catch-up).
    if let Some(peer_listener) = peer_listener {
        let shard = shard.clone();
        glommio::spawn_local(peer_listener::serve(shard, peer_listener, security)).detach();
    }
    spawn_ready(&shard, &events);
    spawn_kafka_listener(&shard, kafka_listener, &client_limits, client_tls.clone());
    if let Some(admin_listener) = admin {
        admin::spawn(&shard, admin_listener, client_limits.clone());
    }
    protocol::listener::accept_until_stopped(
        &shard,
        listener,
        &client_limits,
        client_tls.as_ref(),
        Front::Shardlog,
    )
    .await;
    drain_and_close(&shard).await
}

/// What every shard knows of its node: the addresses clients are told and the settings
/// the front ends apply.
fn node_info(
    config: &ServerConfig,
    bound: SocketAddr,
    kafka_bound: SocketAddr,
) -> anyhow::Result<NodeInfo> {
    Ok(NodeInfo {
        node_id: config.cluster.node_id,
        advertised: advertised(config.advertise.as_deref(), bound)?,
        kafka_advertised: advertised(config.kafka.advertise.as_deref(), kafka_bound)?,
        kafka: config.kafka.clone(),
        defaults: config.engine.clone(),
        shards: config.shards,
        groups: config.groups.clone(),
        security: config.security.clone(),
        authorizer: Authorizer::new(config.authorization, config.security.superusers.clone()),
    })
}

/// Shard 0: binds the admin listener (it runs on shard 0 only, see `admin`) and tells
/// the main thread the addresses it got.
fn bind_admin_and_report(
    id: usize,
    admin_listen: Option<SocketAddr>,
    (bound, kafka_bound): (SocketAddr, SocketAddr),
    events: &mpsc::Sender<Event>,
) -> anyhow::Result<Option<glommio::net::TcpListener>> {
    if id != 0 {
        return Ok(None);
    }
    let admin = admin_listen
        .map(|addr| bind(id, addr, "the admin listener (--admin-listen) on"))
        .transpose()?;
    let admin_bound = admin.as_ref().map(|(_, addr)| *addr);
    let _ = events.send(Event::Bound(bound, kafka_bound, admin_bound));
    Ok(admin.map(|(listener, _)| listener))
}

/// A listener on `addr` and the address it got (`what` names it in an error).
fn bind(
    id: usize,
    addr: SocketAddr,
    what: &str,
) -> anyhow::Result<(glommio::net::TcpListener, SocketAddr)> {
    let listener = glommio::net::TcpListener::bind(addr)
        .map_err(|e| anyhow::anyhow!("shard {id}: {what} {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| anyhow::anyhow!("shard {id}: local address: {e}"))?;
    Ok((listener, bound))
}

/// Says the shard is ready once it has the controller's first view.
fn spawn_ready(shard: &Rc<Shard>, events: &mpsc::Sender<Event>) {
    let (shard, events) = (shard.clone(), events.clone());
    let ready = async move {
        let mut stopping = shard.stopping();
        let first_view = std::pin::pin!(shard.cluster.first_view());
        if let Either::Left(_) = select(first_view, &mut stopping).await {
            let _ = events.send(Event::Ready);
        }
    };
    glommio::spawn_local(ready).detach();
}

/// Serves the Kafka listener until the shard stops, as a task of its own.
fn spawn_kafka_listener(
    shard: &Rc<Shard>,
    listener: glommio::net::TcpListener,
    limits: &Arc<ClientLimits>,
    tls: Option<Arc<ListenerTls>>,
) {
    let (shard, limits) = (shard.clone(), limits.clone());
    let kafka = async move {
        let tls = tls.as_ref();
        protocol::listener::accept_until_stopped(&shard, listener, &limits, tls, Front::Kafka)
            .await;
    };
    glommio::spawn_local(kafka).detach();
}

fn bind_peer_listener(id: usize, addr: SocketAddr) -> anyhow::Result<glommio::net::TcpListener> {
    glommio::net::TcpListener::bind(addr)
        .map_err(|e| anyhow::anyhow!("shard {id}: the peer listener on {addr}: {e}"))
}

/// Waits for requests in flight (at most `DRAIN_TIMEOUT`), then closes every replica;
/// `Err` names the partitions that failed to close, with why (the shard then exits
/// non-zero: its stop was not clean).
async fn drain_and_close(shard: &Shard) -> anyhow::Result<()> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while shard.in_flight() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    let failed = shard.cluster.close_all().await;
    if failed.is_empty() {
        return Ok(());
    }
    Err(anyhow::anyhow!(
        "{} partition(s) did not close cleanly (the next start recovers each from what its \
         files hold): {}",
        failed.len(),
        failed.join("; ")
    ))
}

/// Shard `shard`'s cluster state; shard 0 also runs the controller voter.
fn cluster_node(
    config: &ServerConfig,
    (shard, node): (usize, &NodeInfo),
    security: &Arc<PeerSecurity>,
    incarnation: Incarnation,
    controller: Option<ControllerStart>,
    started: Instant,
    shared: (
        Arc<std::sync::atomic::AtomicU64>,
        Arc<cluster::open_outcomes::OpenOutcomes>,
        ControllerLane,
    ),
) -> anyhow::Result<ClusterNode> {
    let (applied, open_outcomes, controller_lane) = shared;
    let cluster = &config.cluster;
    // Bound to this shard's number on every peer: a partition's replicas live on the same
    // shard number on every node (with the same shard count).
    let shard = u32::try_from(shard).expect("shard numbers fit in u32");
    let peers = Peers::for_shard(
        cluster.node_id,
        shard,
        cluster.peers.clone(),
        security.clone(),
    );
    let mut state = ClusterNode::new(
        cluster.clone(),
        peers,
        incarnation,
        started,
        (applied.clone(), open_outcomes),
        controller_lane,
    );
    if let Some(start) = controller {
        let voters = cluster.voters().into_iter().map(NodeId).collect();
        let mut controller = ControllerConfig::new(NodeId(cluster.node_id), voters);
        controller.session_timeout_ms = cluster.session_timeout_ms;
        controller.replace_dead_after_ms = cluster
            .replace_dead_node_after
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        controller.auto_rebalance = cluster.auto_rebalance;
        controller.max_concurrent_moves = cluster.max_concurrent_moves;
        // Raft ticks of 25 ms: a controller election takes 250-400 ms, and the new leader
        // runs the dead one's session from when it last heard it, so losing the controller
        // leader costs about a session (more only if the election takes longer).
        controller.tick_ms = CONTROLLER_TICK_MS;
        let service = ControllerService::new(
            controller,
            (
                format!("{}:{}", node.advertised.0, node.advertised.1),
                format!("{}:{}", node.kafka_advertised.0, node.kafka_advertised.1),
            ),
            start,
            // Links of its own: a heartbeat never queues behind this shard's ships. Served
            // by shard 0 on the peers too, where their controller voter is.
            Peers::for_shard(cluster.node_id, 0, cluster.peers.clone(), security.clone()),
            state.now(),
            applied,
            config.shards,
        )?;
        state.controller = Some(Rc::new(service));
    }
    Ok(state)
}

fn start_cluster_tasks(shard: &Rc<Shard>, config: &ServerConfig) {
    let cluster = &shard.cluster;
    let place = cluster::Placement {
        shard: shard.id,
        shards: config.shards,
        data_dir: config.data_dir.clone(),
        defaults: config.engine.clone(),
        // The node's budget in equal parts: each shard's partitions share one part.
        cache_budget: TailCacheBudget::new(config.tail_cache_budget_bytes / config.shards),
    };
    let place = Rc::new(place);
    glommio::spawn_local(cluster.clone().reconcile_loop(place.clone())).detach();
    glommio::spawn_local(groups::coordinator::tick_loop(shard.clone())).detach();
    let stopped = {
        let shard = shard.clone();
        move || shard.is_stopping()
    };
    glommio::spawn_local(cluster.clone().offline_loop(
        place,
        cluster.controller_lane.clone(),
        stopped.clone(),
    ))
    .detach();
    glommio::spawn_local(cluster.clone().tick_loop(
        cluster.controller_lane.clone(),
        config.engine.flush,
        stopped.clone(),
    ))
    .detach();
    if cluster.config.has_peers() {
        glommio::spawn_local(cluster.peers.clone().keep_linked(stopped.clone())).detach();
    }
    if let Some(service) = &cluster.controller {
        let clock = {
            let cluster = cluster.clone();
            move || cluster.now()
        };
        service.spawn(shard.inboxes.clone(), clock, stopped);
        if let Some(user) = config.security.bootstrap_superuser.clone() {
            let bootstrap = security::users::bootstrap(shard.clone(), user);
            glommio::spawn_local(bootstrap).detach();
        }
    }
}

/// The `HOST:PORT` clients are told to use: `--advertise` (`--kafka-advertise`), else the
/// bound address (with 127.0.0.1 for an unspecified host).
fn advertised(advertise: Option<&str>, bound: SocketAddr) -> anyhow::Result<(String, u16)> {
    Ok(match advertise {
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
