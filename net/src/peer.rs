//! Links to peer nodes for replication: one pipelined connection per node (the client's
//! [`Connection`](crate::client)), opened on first use, carrying fire-and-forget
//! `Replicate` frames. [`PartitionTransport`] is the replicator's `Transport` for one
//! partition on top of it.
//!
//! Sending never waits and never fails: a message for a node with no live connection
//! starts (re)connecting in the background and is dropped, as is one the socket loses;
//! the replicas resend on their timers (ships, acks, epoch queries all have them).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use shardlog_replicator::NodeId;
use shardlog_replicator::driver::Transport;
use shardlog_replicator::message::{self, Envelope, Message};

use crate::api::{Api, ArchivedReplicateRequest, ReplicateRequest, VERSION};
use crate::client::connection::Connection;
use crate::frame::{FrameError, encode_head};
use crate::wire::Frame;

/// How long a connection attempt to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

enum Link {
    Up(Connection),
    Connecting,
}

/// The peers of this node and the links to them.
pub struct Peers {
    addresses: HashMap<u32, String>,
    links: RefCell<HashMap<u32, Link>>,
    correlation: Cell<u64>,
    /// Messages dropped for want of a live link (a gauge for tests and logs).
    dropped: Cell<u64>,
}

impl Peers {
    /// Peers by node id and `HOST:PORT`.
    #[must_use]
    pub fn new(addresses: impl IntoIterator<Item = (u32, String)>) -> Rc<Peers> {
        Rc::new(Peers {
            addresses: addresses.into_iter().collect(),
            links: RefCell::new(HashMap::new()),
            correlation: Cell::new(1),
            dropped: Cell::new(0),
        })
    }

    /// Messages dropped so far because no live link to their node existed.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// Sends `envelope` about `topic` to node `envelope.to`, or drops it (see the module
    /// docs). Must run on a glommio executor.
    pub fn send(self: &Rc<Self>, topic: &str, envelope: &Envelope) {
        let to = envelope.to;
        let connection = match self.links.borrow().get(&to) {
            Some(Link::Up(connection)) if !connection.is_dead() => Some(connection.clone()),
            Some(Link::Connecting) => {
                self.dropped.set(self.dropped.get() + 1);
                return;
            }
            _ => None,
        };
        let Some(connection) = connection else {
            self.dropped.set(self.dropped.get() + 1);
            self.connect(to);
            return;
        };
        let correlation = self.next_correlation();
        let (head, data) = match encode(topic, envelope, correlation) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::error!(error = %e, "encoding a replication message");
                return;
            }
        };
        if connection.send(correlation, head, data, false).is_err() {
            self.dropped.set(self.dropped.get() + 1);
        }
    }

    fn next_correlation(&self) -> u64 {
        let c = self.correlation.get();
        self.correlation.set(c.wrapping_add(1));
        c
    }

    fn connect(self: &Rc<Self>, to: u32) {
        let Some(address) = self.addresses.get(&to).cloned() else {
            tracing::warn!(node = to, "replication message for an unknown node");
            return;
        };
        self.links.borrow_mut().insert(to, Link::Connecting);
        let peers = self.clone();
        glommio::spawn_local(async move {
            match Connection::open(&address, CONNECT_TIMEOUT).await {
                Ok(connection) => {
                    peers.links.borrow_mut().insert(to, Link::Up(connection));
                }
                Err(e) => {
                    tracing::debug!(node = to, %address, error = %e, "peer unreachable");
                    peers.links.borrow_mut().remove(&to);
                }
            }
        })
        .detach();
    }
}

/// Encodes a `Replicate` frame: head, and the envelope as the data region.
fn encode(
    topic: &str,
    envelope: &Envelope,
    correlation: u64,
) -> Result<(Vec<u8>, Bytes), FrameError> {
    let body = message::encode(envelope).map_err(|e| FrameError::InvalidMessage(e.to_string()))?;
    let meta = ReplicateRequest {
        topic: topic.to_owned(),
        partition: envelope.partition,
    };
    let mut head = Vec::new();
    encode_head(
        &mut head,
        Api::Replicate as u16,
        VERSION,
        correlation,
        0,
        &meta,
        body.len(),
    )?;
    Ok((head, Bytes::copy_from_slice(&body)))
}

/// Decodes a received `Replicate` frame: the topic and the validated envelope.
pub fn decode(frame: &Frame) -> Result<(String, Envelope), FrameError> {
    let meta = frame.access::<ArchivedReplicateRequest>()?;
    let envelope =
        message::decode(&frame.data).map_err(|e| FrameError::InvalidMessage(e.to_string()))?;
    if envelope.partition != meta.partition.to_native() {
        return Err(FrameError::InvalidMessage(format!(
            "envelope for partition {} in a frame for {}",
            envelope.partition, meta.partition
        )));
    }
    Ok((meta.topic.as_str().to_owned(), envelope))
}

/// The replicator's transport for one partition of one topic, sent as node `from`.
pub struct PartitionTransport {
    peers: Rc<Peers>,
    topic: Rc<str>,
    partition: u32,
    from: NodeId,
}

impl PartitionTransport {
    /// The transport of `topic`/`partition` on node `from`.
    #[must_use]
    pub fn new(peers: Rc<Peers>, topic: &str, partition: u32, from: NodeId) -> PartitionTransport {
        PartitionTransport {
            peers,
            topic: Rc::from(topic),
            partition,
            from,
        }
    }
}

impl Transport for PartitionTransport {
    fn send(&self, to: NodeId, message: Message) {
        let envelope = message::envelope(self.partition, self.from, to, message);
        self.peers.send(&self.topic, &envelope);
    }
}
