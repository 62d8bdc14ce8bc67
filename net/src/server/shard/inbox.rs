//! A shard's inbox: the bounded flume channel other shards (and the process's main
//! thread) send to. Forwarded operations are begun in arrival order, like a connection's
//! requests, so produce requests forwarded from one connection keep their order.

use std::rc::Rc;
use std::sync::Arc;

use futures::channel::oneshot;
use shardlog_replicator::NodeId;

use crate::server::cluster::ClusterView;
use crate::server::ops::acls::{self, AclChange};
use crate::server::ops::groups::{self, GroupListing, GroupOp, GroupReply};
use crate::server::ops::placement::{self, PlacementChange};
use crate::server::ops::topics::{self, TopicChange};
use crate::server::ops::{self, OpError, OpReply, PartitionOp};
use crate::server::ops::{observe, producer_ids};
use crate::server::peer_listener::{self, MovedLink};
use crate::server::protocol::{self, moving::Moved};
use crate::server::shard::Shard;
use crate::wire::Frame;

/// Messages to a shard.
pub(crate) enum ShardMsg {
    /// A partition operation for a partition the receiving shard owns.
    Op {
        op: PartitionOp,
        reply: oneshot::Sender<OpReply>,
    },
    /// To shard 0: create or delete a topic.
    TopicChange {
        change: TopicChange,
        reply: oneshot::Sender<Result<(), OpError>>,
    },
    /// To shard 0: decommission a node or rebalance (the answer says what was done).
    Placement {
        change: PlacementChange,
        reply: oneshot::Sender<Result<String, OpError>>,
    },
    /// To shard 0: create, change or delete a SASL user (the answer says what was done).
    UserChange {
        change: crate::server::security::users::UserChange,
        reply: oneshot::Sender<Result<String, OpError>>,
    },
    /// To shard 0: add or remove an ACL (the answer says what was done).
    Acl {
        change: AclChange,
        reply: oneshot::Sender<Result<String, OpError>>,
    },
    /// To shard 0: a new producer id from this node's block.
    InitProducerId {
        reply: oneshot::Sender<Result<i64, OpError>>,
    },
    /// To shard 0: node `node` (proven by the peer listener) asks this node, as the
    /// controller leader, for a block of `count` producer ids; the reply is its first id.
    AllocateProducerIds {
        node: NodeId,
        count: u32,
        reply: oneshot::Sender<Result<u64, OpError>>,
    },
    /// From the main thread: stop (SIGTERM/SIGINT, or another shard failed).
    Stop,
    /// A `Replicate` frame for a partition the receiving shard owns, from the peer the
    /// peer listener proved to be node `from` (no reply: replication messages are fire
    /// and forget).
    Replicate { from: NodeId, frame: Frame },
    /// From shard 0: the controller's newest view.
    View(Arc<ClusterView>),
    /// A group operation for a group this shard coordinates.
    Group {
        op: GroupOp,
        reply: oneshot::Sender<Result<GroupReply, OpError>>,
    },
    /// ListGroups: the groups this shard coordinates.
    ListGroups {
        reply: oneshot::Sender<Vec<GroupListing>>,
    },
    /// The admin listener's scrape: this shard's metrics, replicas and group offsets.
    Report {
        reply: oneshot::Sender<observe::ShardReport>,
    },
    /// A client connection whose requests go to partitions this shard owns, moved here
    /// by the shard that accepted it.
    Connection(Moved),
    /// A peer link that asked for this shard (`Api::BindShard`), moved here by the shard
    /// that accepted it.
    PeerLink(MovedLink),
}

/// Bounded depth of an inbox: a slow shard pushes back on the shards forwarding to it.
pub(crate) const INBOX_DEPTH: usize = 1024;

/// Serves the inbox until every sender is gone.
pub(crate) async fn serve(shard: Rc<Shard>, inbox: flume::Receiver<ShardMsg>) {
    while let Ok(msg) = inbox.recv_async().await {
        match msg {
            ShardMsg::Op { op, reply } => ops::run_forwarded(&shard, op, reply).await,
            ShardMsg::TopicChange { change, reply } => {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(topics::change_here(&shard, change).await);
                })
                .detach();
            }
            ShardMsg::Placement { change, reply } => {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(placement::change_here(&shard, change).await);
                })
                .detach();
            }
            ShardMsg::UserChange { change, reply } => {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let change = crate::server::security::users::change_here(&shard, change);
                    let _ = reply.send(change.await);
                })
                .detach();
            }
            ShardMsg::Acl { change, reply } => {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(acls::change_here(&shard, change).await);
                })
                .detach();
            }
            ShardMsg::InitProducerId { reply } => {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(producer_ids::next_here(&shard).await);
                })
                .detach();
            }
            ShardMsg::AllocateProducerIds { node, count, reply } => {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(producer_ids::allocate_here(&shard, node, count).await);
                })
                .detach();
            }
            ShardMsg::Stop => shard.begin_stop(),
            ShardMsg::Replicate { from, frame } => shard.cluster.receive_frame(from, frame),
            ShardMsg::View(view) => shard.cluster.set_view(view),
            ShardMsg::Group { op, reply } => groups::run_forwarded(&shard, op, reply).await,
            ShardMsg::ListGroups { reply } => {
                let _ = reply.send(shard.groups.list());
            }
            ShardMsg::Report { reply } => {
                let _ = reply.send(observe::report_here(&shard));
            }
            ShardMsg::Connection(moved) => protocol::serve_moved(&shard, moved),
            ShardMsg::PeerLink(moved) => peer_listener::serve_moved(&shard, moved),
        }
    }
}
