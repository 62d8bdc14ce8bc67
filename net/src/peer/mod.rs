//! Links to peer nodes: one pipelined connection per node (the client's
//! [`Connection`](crate::client)) to its peer listener, opened on first use and
//! authenticated by a handshake ([`auth`]) before anything else crosses it, carrying
//! fire-and-forget `Replicate` and `Controller` frames and forwarded topic admin.
//! [`PartitionTransport`] is the replicator's `Transport` for one partition on top of it.
//!
//! Sending never waits and never fails: a message for a node with no live connection
//! starts (re)connecting in the background and is dropped, as is one the socket loses;
//! the replicas resend on their timers (ships, acks, epoch queries all have them). So that
//! a failover does not wait for those timers (a follower that becomes the leader had no
//! link to the other followers, and its first ships would be dropped and resent 200 ms
//! later), [`Peers::keep_linked`] keeps a link to every peer open ahead of need.

pub mod auth;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shardlog_replicator::NodeId;
use shardlog_replicator::driver::Transport;
use shardlog_replicator::message::{self, Message, Received};

use crate::api::{
    Api, ArchivedReplicateRequest, BindShardRequest, BindShardResponse, REPLICATE_VERSION,
    ReplicateRequest, VERSION,
};
use crate::client::ClientError;
use crate::client::connection::{self, Connection};
use crate::frame::{FLAG_ERROR, FrameError, encode_head};
use crate::wire::Frame;
use auth::PeerSecurity;

/// How long a connection attempt to a peer (connect and handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request to a peer (`Peers::call`) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How often `Peers::keep_linked` opens the links that are down.
const LINK_EVERY: Duration = Duration::from_millis(100);

enum Link {
    Up(Connection),
    Connecting,
}

/// The peers of this node and the links to them.
pub struct Peers {
    /// This node.
    me: u32,
    /// The shard these links belong to, which the peers are asked to serve them on
    /// (`Api::BindShard`); `None`: wherever they land.
    shard: Option<u32>,
    /// Every other node's peer listener.
    addresses: HashMap<u32, String>,
    /// How this node proves itself, and checks whom it reached.
    security: Arc<PeerSecurity>,
    links: RefCell<HashMap<u32, Link>>,
    correlation: Cell<u64>,
    /// Messages dropped for want of a live link (a gauge for tests and logs).
    dropped: Cell<u64>,
}

impl Peers {
    /// The links of node `me` to its peers, by node id and peer listener `HOST:PORT`
    /// (its own entry, if listed, is left out).
    #[must_use]
    pub fn new(
        me: u32,
        addresses: impl IntoIterator<Item = (u32, String)>,
        security: Arc<PeerSecurity>,
    ) -> Rc<Peers> {
        Peers::with_shard(me, None, addresses, security)
    }

    /// The links of shard `shard` of node `me`: each peer is asked to serve its end on its
    /// own shard of that number, where the same partitions live.
    #[must_use]
    pub fn for_shard(
        me: u32,
        shard: u32,
        addresses: impl IntoIterator<Item = (u32, String)>,
        security: Arc<PeerSecurity>,
    ) -> Rc<Peers> {
        Peers::with_shard(me, Some(shard), addresses, security)
    }

    fn with_shard(
        me: u32,
        shard: Option<u32>,
        addresses: impl IntoIterator<Item = (u32, String)>,
        security: Arc<PeerSecurity>,
    ) -> Rc<Peers> {
        Rc::new(Peers {
            me,
            shard,
            addresses: addresses.into_iter().filter(|(id, _)| *id != me).collect(),
            security,
            links: RefCell::new(HashMap::new()),
            correlation: Cell::new(1),
            dropped: Cell::new(0),
        })
    }

    /// Whether `node` is one of the configured peers (`--peers`).
    #[must_use]
    pub fn is_peer(&self, node: u32) -> bool {
        self.addresses.contains_key(&node)
    }

    /// Messages dropped so far because no live link to their node existed.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// Sends `message` about `topic`/`partition` from node `from` (this one) to node `to`,
    /// or drops it
    /// (see the module docs): the envelope is the frame's meta and a ship's batches its
    /// data region, sent from the buffers the log read returned. Must run on a glommio
    /// executor.
    pub fn send(
        self: &Rc<Self>,
        topic: &str,
        partition: u32,
        (from, to): (NodeId, NodeId),
        message: Message,
    ) {
        let (envelope, batches) = message::seal(partition, from, to, message);
        let meta = ReplicateRequest {
            topic: topic.to_owned(),
            envelope,
        };
        let Some(connection) = self.link_or_connect(to.0) else {
            return;
        };
        let (correlation, head) =
            match self.head(Api::Replicate, REPLICATE_VERSION, &meta, batches.bytes()) {
                Ok(head) => head,
                Err(e) => {
                    tracing::error!(error = %e, "encoding a replication message");
                    return;
                }
            };
        let chunks = batches.chunks().to_vec();
        if connection
            .send_chunks(correlation, head, chunks, false)
            .is_err()
        {
            self.dropped.set(self.dropped.get() + 1);
        }
    }

    /// Sends a fire-and-forget frame (`api`, `meta`, `data`) to node `to`, or drops it
    /// (see the module docs). Must run on a glommio executor.
    pub fn send_frame<M>(self: &Rc<Self>, to: u32, api: Api, meta: &M, data: Bytes)
    where
        M: crate::frame::Meta,
    {
        let Some(connection) = self.link_or_connect(to) else {
            return;
        };
        let (correlation, head) = match self.head(api, VERSION, meta, data.len()) {
            Ok(head) => head,
            Err(e) => {
                tracing::error!(error = %e, ?api, "encoding a peer frame");
                return;
            }
        };
        if connection.send(correlation, head, data, false).is_err() {
            self.dropped.set(self.dropped.get() + 1);
        }
    }

    /// Sends a request frame to node `to` and waits for its reply, connecting first if
    /// needed (unlike `send_frame`, which drops instead of waiting for a link).
    pub async fn call<M>(
        self: &Rc<Self>,
        to: u32,
        api: Api,
        meta: &M,
        data: Bytes,
    ) -> Result<Frame, ClientError>
    where
        M: crate::frame::Meta,
    {
        let address = self
            .addresses
            .get(&to)
            .ok_or_else(|| ClientError::NoBroker(format!("node {to} is not a peer")))?;
        let connection = match self.live_link(to) {
            Some(connection) => connection,
            None => {
                let connection = self.open(to, address).await?;
                // Kept as the link to that node: later messages reuse it.
                self.links
                    .borrow_mut()
                    .insert(to, Link::Up(connection.clone()));
                connection
            }
        };
        let (correlation, head) = self
            .head(api, VERSION, meta, data.len())
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let reply = connection
            .send(correlation, head, data, true)?
            .ok_or_else(|| ClientError::Protocol("no reply channel".into()))?;
        reply
            .await
            .map_err(|_| ClientError::Protocol("reply channel dropped".into()))?
    }

    /// Opens the link to every peer that has none, every `LINK_EVERY`, until `stopped`.
    pub async fn keep_linked(self: Rc<Self>, stopped: impl Fn() -> bool) {
        while !stopped() && !self.addresses.is_empty() {
            let mut peers: Vec<u32> = self.addresses.keys().copied().collect();
            peers.sort_unstable();
            for to in peers {
                let opening = matches!(self.links.borrow().get(&to), Some(Link::Connecting));
                if !opening && self.live_link(to).is_none() {
                    self.connect(to);
                }
            }
            glommio::timer::sleep(LINK_EVERY).await;
        }
    }

    /// The connection to `to`, if one is up; else `None`, the message counted as dropped
    /// and a connection started (unless one is on its way).
    fn link_or_connect(self: &Rc<Self>, to: u32) -> Option<Connection> {
        let connecting = matches!(self.links.borrow().get(&to), Some(Link::Connecting));
        let connection = self.live_link(to);
        if connection.is_none() {
            self.dropped.set(self.dropped.get() + 1);
            if !connecting {
                self.connect(to);
            }
        }
        connection
    }

    /// The connection to `to`, if one is up.
    fn live_link(&self, to: u32) -> Option<Connection> {
        match self.links.borrow().get(&to) {
            Some(Link::Up(connection)) if !connection.is_dead() => Some(connection.clone()),
            _ => None,
        }
    }

    /// A frame head of `api` at `version` with a fresh correlation id.
    fn head<M>(
        &self,
        api: Api,
        version: u16,
        meta: &M,
        data_len: usize,
    ) -> Result<(u64, Vec<u8>), FrameError>
    where
        M: crate::frame::Meta,
    {
        let correlation = self.next_correlation();
        let mut head = Vec::new();
        encode_head(
            &mut head,
            api as u16,
            version,
            correlation,
            0,
            meta,
            data_len,
        )?;
        Ok((correlation, head))
    }

    fn next_correlation(&self) -> u64 {
        let c = self.correlation.get();
        self.correlation.set(c.wrapping_add(1));
        c
    }

    fn connect(self: &Rc<Self>, to: u32) {
        let Some(address) = self.addresses.get(&to).cloned() else {
            tracing::debug!(peer = to, "peer message for an unknown node; dropped");
            return;
        };
        self.links.borrow_mut().insert(to, Link::Connecting);
        let peers = self.clone();
        glommio::spawn_local(async move {
            match peers.open(to, &address).await {
                Ok(connection) => {
                    peers.links.borrow_mut().insert(to, Link::Up(connection));
                }
                Err(e) => {
                    tracing::debug!(peer = to, %address, error = %e, "peer unreachable");
                    peers.links.borrow_mut().remove(&to);
                }
            }
        })
        .detach();
    }
}

impl Peers {
    /// Connects to node `to` at `address` and runs the handshake: the link proves this
    /// node to the peer and checks that `to` answered. At most `CONNECT_TIMEOUT` in all.
    async fn open(&self, to: u32, address: &str) -> Result<Connection, ClientError> {
        let open = async {
            let stream = connection::connect(address, CONNECT_TIMEOUT).await?;
            let stream = auth::dial(&self.security, stream, self.me, to)
                .await
                .map_err(|e| ClientError::NoBroker(format!("node {to} at {address}: {e}")))?;
            let options = connection::Options {
                request_timeout: CALL_TIMEOUT,
                connect_timeout: CONNECT_TIMEOUT,
                probe: None,
            };
            let connection = Connection::over(stream, address, options)?;
            if let Some(shard) = self.shard {
                self.bind(&connection, to, shard).await?;
            }
            Ok(connection)
        };
        let timer = glommio::timer::Timer::new(CONNECT_TIMEOUT);
        match futures::future::select(std::pin::pin!(open), timer).await {
            futures::future::Either::Left((opened, _)) => opened,
            futures::future::Either::Right(_) => Err(ClientError::NoBroker(format!(
                "node {to} at {address}: no connection within {CONNECT_TIMEOUT:?}"
            ))),
        }
    }

    /// Asks node `to` to serve `connection` on its shard `shard`, and waits for the answer
    /// before anything else is sent on it (so nothing is read ahead when the link moves).
    /// A node that does not know `BindShard` answers with an error: the link is served
    /// where it landed there, as before.
    async fn bind(&self, connection: &Connection, to: u32, shard: u32) -> Result<(), ClientError> {
        let request = BindShardRequest { shard };
        let (correlation, head) = self
            .head(Api::BindShard, VERSION, &request, 0)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let answer = connection
            .send(correlation, head, Bytes::new(), true)?
            .ok_or_else(|| ClientError::Protocol("no reply channel".into()))?
            .await
            .map_err(|_| ClientError::Protocol("reply channel dropped".into()))??;
        if answer.header.flags & FLAG_ERROR == 0 {
            let bound = answer
                .decode::<BindShardResponse>()
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            tracing::debug!(peer = to, shard, served_by = bound.shard, "peer link bound");
        } else {
            tracing::debug!(peer = to, shard, "peer does not bind links to shards");
        }
        Ok(())
    }
}

/// Decodes a received `Replicate` frame (of [`REPLICATE_VERSION`]: the caller checked the
/// header): the topic and the message, its meta validated (bytecheck) and its data
/// checked against the envelope (lengths, batch boundaries, CRCs). The batches stay in
/// the frame's data buffer.
pub fn decode(frame: Frame) -> Result<(String, Received), FrameError> {
    let meta = frame.access::<ArchivedReplicateRequest>()?;
    let topic = meta.topic.as_str().to_owned();
    let invalid = |e: message::DecodeError| FrameError::InvalidMessage(e.to_string());
    let envelope = message::from_archived(&meta.envelope).map_err(invalid)?;
    let received = message::open(envelope, frame.data.freeze()).map_err(invalid)?;
    Ok((topic, received))
}

/// The replicator's transport for one partition of one topic, sent as node `from`.
pub struct PartitionTransport {
    peers: Rc<Peers>,
    topic: Rc<str>,
    partition: u32,
    from: NodeId,
    /// Ships outstanding, for the replication latency metric.
    ships: Rc<crate::server::metrics::ShipTimes>,
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
            ships: Rc::default(),
        }
    }

    /// Notes its ships in `ships` (shared with the replica, which sees the acks).
    #[must_use]
    pub(crate) fn noting_ships(mut self, ships: Rc<crate::server::metrics::ShipTimes>) -> Self {
        self.ships = ships;
        self
    }
}

impl Transport for PartitionTransport {
    fn send(&self, to: NodeId, message: Message) {
        if let Message::Ship(ship) = &message {
            self.ships.shipped(to.0, &ship.batches);
        }
        self.peers
            .send(&self.topic, self.partition, (self.from, to), message);
    }
}
