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
use shardlog_engine::{preflight, warm_iopoll_probe};

pub use config::{FileConfig, ServerConfig};

use crate::testing::READY_PREFIX;
use catalog::TopicSpec;
use inbox::{INBOX_DEPTH, ShardMsg};
use shard::{NodeInfo, Shard};

/// How long a stopping shard waits for requests in flight before closing its logs.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

enum Event {
    Bound(SocketAddr),
    Ready,
    Exited(usize, Result<(), String>),
}

/// Runs the server until SIGTERM/SIGINT or a shard fails.
pub fn run(config: ServerConfig) -> anyhow::Result<()> {
    let (catalog, listen) = prepare(&config)?;
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

/// Start-up checks (with the fix for each failure), the topics on disk, and the address to
/// listen on.
fn prepare(config: &ServerConfig) -> anyhow::Result<(BTreeMap<String, TopicSpec>, SocketAddr)> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    preflight::preflight(&config.data_dir)?.warn_if_memlock_below(config.io_memory);
    let catalog = catalog::load(&config.data_dir)
        .with_context(|| format!("loading topics from {}", config.data_dir.display()))?;
    let listen = resolve(&config.listen)?;
    if listen.port() != 0 {
        // glommio listeners set SO_REUSEPORT, which would silently share the port with a
        // server already running: refuse to start instead.
        std::net::TcpListener::bind(listen)
            .with_context(|| format!("listening on {listen} (another server running?)"))?;
    }
    Ok((catalog, listen))
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
    let advertised = match &config.advertise {
        Some(addr) => split_host_port(addr)?,
        None => {
            let ip = match bound.ip() {
                ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                ip => ip,
            };
            (ip.to_string(), bound.port())
        }
    };
    let node = NodeInfo {
        node_id: config.node_id,
        advertised,
        data_dir: config.data_dir.clone(),
        defaults: config.engine.clone(),
        shards: config.shards,
    };
    let shard = Rc::new(Shard::new(id, node, peers));
    for spec in catalog.values() {
        shard
            .open_topic(spec)
            .await
            .with_context(|| format!("opening topic {:?}", spec.name))?;
    }
    glommio::spawn_local(inbox::serve(shard.clone(), inbox)).detach();
    let upkeep = glommio::spawn_local(shard.clone().upkeep());
    let _ = events.send(Event::Ready);
    let mut stopping = shard.stopping();
    loop {
        match select(std::pin::pin!(listener.accept()), &mut stopping).await {
            Either::Left((Ok(stream), _)) => {
                glommio::spawn_local(connection::serve(shard.clone(), stream)).detach();
            }
            Either::Left((Err(e), _)) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(shard = id, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
            Either::Right(_) => break,
        }
    }
    drop(listener);
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while shard.in_flight.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    upkeep.await;
    shard.close_all().await;
    Ok(())
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
