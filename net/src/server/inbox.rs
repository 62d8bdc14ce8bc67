//! A shard's inbox: the bounded flume channel other shards (and the process's main thread)
//! send to. Forwarded requests are begun in arrival order, like a connection's, so produce
//! requests forwarded from one connection keep their order.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures::channel::oneshot;

use crate::api::ControllerRequest;
use crate::server::catalog::TopicSpec;
use crate::server::cluster::ClusterView;
use crate::server::dispatch;
use crate::server::reply::Reply;
use crate::server::shard::Shard;
use crate::wire::Frame;

/// Messages between shards, each answered on its own oneshot channel.
pub(crate) enum ShardMsg {
    /// A request for a partition the receiving shard owns, or a catalog change for shard 0.
    Request {
        /// The request as read from the socket.
        frame: Frame,
        /// The answer (`None`: no reply, as for `acks=none`).
        reply: oneshot::Sender<Option<Reply>>,
    },
    /// From shard 0: a topic was created; open the partitions you own.
    OpenTopic {
        /// The topic.
        spec: TopicSpec,
        /// Done, or why opening failed.
        done: oneshot::Sender<Result<(), String>>,
    },
    /// From shard 0: a topic is being deleted; close your partitions of it.
    DropTopic {
        /// The topic.
        name: String,
        /// Done.
        done: oneshot::Sender<()>,
    },
    /// From the main thread: stop (SIGTERM/SIGINT, or another shard failed).
    Stop,
    /// Cluster mode: a `Replicate` frame for a partition the receiving shard owns (no
    /// reply: replication messages are fire and forget).
    Replicate(Frame),
    /// Cluster mode, to shard 0: a controller message from a shard of this node.
    Controller(ControllerRequest, Bytes),
    /// Cluster mode, from shard 0: the controller's newest view.
    View(Arc<ClusterView>),
}

/// Bounded depth of an inbox: a slow shard pushes back on the shards forwarding to it.
pub(crate) const INBOX_DEPTH: usize = 1024;

/// Serves the inbox until every sender is gone or the shard stops.
pub(crate) async fn serve(shard: Rc<Shard>, inbox: flume::Receiver<ShardMsg>) {
    while let Ok(msg) = inbox.recv_async().await {
        match msg {
            ShardMsg::Request { frame, reply } => {
                shard.in_flight.set(shard.in_flight.get() + 1);
                let completion = dispatch::begin(&shard, frame).await;
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(completion.await);
                    shard.in_flight.set(shard.in_flight.get() - 1);
                })
                .detach();
            }
            ShardMsg::OpenTopic { spec, done } => {
                let result = shard.open_topic(&spec).await.map_err(|e| e.to_string());
                let _ = done.send(result);
            }
            ShardMsg::DropTopic { name, done } => {
                shard.drop_topic(&name).await;
                let _ = done.send(());
            }
            ShardMsg::Stop => shard.begin_stop(),
            ShardMsg::Replicate(frame) => dispatch::replicate_here(&shard, &frame),
            ShardMsg::Controller(request, data) => {
                if let Some(service) = shard.cluster.as_ref().and_then(|c| c.controller.as_ref()) {
                    service.handle(request, &data);
                }
            }
            ShardMsg::View(view) => {
                if let Some(cluster) = &shard.cluster {
                    cluster.set_view(view);
                }
            }
        }
    }
}
