//! The front ends: each decodes its wire format, calls the operations (`server::ops`)
//! and encodes their results. None of them routes, forwards or waits on its own. The
//! client front ends (shardlog, Kafka) share the accept loop (`listener`), the node's
//! connection limits (`limits`), the per-connection reply budget (`reply_budget`), the
//! idle timeout (`idle`) and the move of a connection to the shard its requests go to
//! (`moving`).

pub(crate) mod idle;
pub(crate) mod kafka;
pub(crate) mod limits;
pub(crate) mod listener;
pub(crate) mod moving;
pub(crate) mod reply_budget;
pub(crate) mod shardlog;

use std::rc::Rc;

use glommio::net::TcpStream;

use crate::server::shard::Shard;
use listener::{Connection, Opened};
use moving::{Front, Moved};

/// Serves a connection the client listener of `front` accepted, until it ends.
pub(crate) async fn serve_accepted(
    front: Front,
    shard: Rc<Shard>,
    stream: TcpStream,
    connection: Connection,
) {
    let Some(opened) = listener::open(stream, connection.tls.clone()).await else {
        return;
    };
    serve_opened(front, shard, opened, connection).await;
}

/// Serves a connection another shard moved here, with its front end, as a task.
pub(crate) fn serve_moved(shard: &Rc<Shard>, moved: Moved) {
    let (front, opened, connection) = moved.arrive();
    glommio::spawn_local(serve_opened(front, shard.clone(), opened, connection)).detach();
}

/// Serves `opened` with `front`'s front end until it ends; it may move to another shard
/// on the way (`moving`).
async fn serve_opened(front: Front, shard: Rc<Shard>, opened: Opened, connection: Connection) {
    match front {
        Front::Shardlog => {
            moving::serve(shard, front, opened, connection, shardlog::serve_here).await;
        }
        Front::Kafka => moving::serve(shard, front, opened, connection, kafka::serve_here).await,
    }
}
