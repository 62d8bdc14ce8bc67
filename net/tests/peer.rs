//! The replication transport: `PartitionTransport` frames each replicator message as a
//! fire-and-forget `Replicate` frame on a connection per peer node, opened with the peer
//! handshake (here over a cluster secret); the receiver decodes the same envelope, and
//! gets a ship's batches (sent as the separate buffers the leader's log holds them in)
//! untouched, back to back in the frame's data region. A message for a node with no live link is dropped while the link
//! (re)connects; the replicas' timers resend.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::sync::mpsc;
use std::time::Duration;

use std::sync::Arc;

use futures::io::AsyncWriteExt;
use shardlog_net::ErrorCode;
use shardlog_net::api::{Api, ErrorResponse, VERSION};
use shardlog_net::frame::{FLAG_ERROR, encode_head};
use shardlog_net::peer::auth::{self, ClusterSecret, PeerSecurity};
use shardlog_net::peer::{self, PartitionTransport, Peers};
use shardlog_net::wire;
use shardlog_replicator::NodeId;
use shardlog_replicator::driver::Transport;
use shardlog_replicator::message::{Batches, Message, Received, Ship};

/// A ship of two batches, each in a buffer of its own (as a leader's tail cache holds
/// them).
fn ship(n: u64) -> Message {
    let mut batches = Batches::default();
    batches.push(common::batch(&[format!("record {n}").into_bytes()]), 1);
    batches.push(common::batch(&[format!("and {n}").into_bytes()]), 1);
    Message::Ship(Ship {
        leader_epoch: 3,
        prev_offset: n,
        prev_epoch: 2,
        high_watermark: n,
        batches,
    })
}

/// A ship's batches, back to back.
fn batch_bytes(message: &Message) -> Vec<u8> {
    match message {
        Message::Ship(ship) => ship.batches.chunks().concat(),
        _ => Vec::new(),
    }
}

fn security() -> Arc<PeerSecurity> {
    let secret = ClusterSecret::new(b"a test secret of thirty-two bytes or more").unwrap();
    Arc::new(PeerSecurity::Secret(secret))
}

/// Node 2's peer listener on a thread of its own, as a node of a release before
/// `BindShard` serves it: takes one connection, checks the handshake, sends every
/// replication message it decodes to `tx`, and answers any other frame with an
/// `UnknownApi` error reply.
fn peer_node(tx: mpsc::Sender<(String, Received)>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let bind = address.clone();
    let (bound, is_bound) = mpsc::channel();
    std::thread::spawn(move || {
        common::run(move || async move {
            let listener = glommio::net::TcpListener::bind(bind).unwrap();
            bound.send(()).unwrap();
            let stream = listener.accept().await.unwrap();
            let (mut stream, from) = auth::accept(&security(), stream, 2, |id| id == 1)
                .await
                .unwrap();
            assert_eq!(from, 1);
            while let Ok(Some(frame)) = wire::read_frame(&mut stream).await {
                if frame.header.api == Api::Replicate as u16 {
                    if tx.send(peer::decode(frame).unwrap()).is_err() {
                        break;
                    }
                    continue;
                }
                let answer = ErrorResponse {
                    error: ErrorCode::UnknownApi.as_u16(),
                    message: format!("unknown api {}", frame.header.api),
                };
                let mut head = Vec::new();
                let correlation = frame.header.correlation;
                encode_head(
                    &mut head,
                    frame.header.api,
                    VERSION,
                    correlation,
                    FLAG_ERROR,
                    &answer,
                    0,
                )
                .unwrap();
                stream.write_all(&head).await.unwrap();
                stream.flush().await.unwrap();
            }
        });
    });
    is_bound.recv().unwrap();
    address
}

#[test]
fn messages_reach_the_peer_intact() {
    let (tx, rx) = mpsc::channel::<(String, Received)>();
    let receiver = peer_node(tx);
    let sent: Vec<Message> = (0..20).map(ship).collect();
    let to_send = sent.clone();
    let dropped = common::run(move || async move {
        let peers = Peers::new(1, [(2, receiver)], security());
        let transport = PartitionTransport::new(peers.clone(), "orders", 5, NodeId(1));
        // The first send finds no link and starts one: it is dropped (a replica would
        // resend it on its timer).
        transport.send(NodeId(2), ship(99));
        glommio::timer::sleep(Duration::from_millis(200)).await;
        for message in to_send {
            transport.send(NodeId(2), message);
        }
        glommio::timer::sleep(Duration::from_millis(200)).await;
        peers.dropped()
    });
    assert_eq!(dropped, 1, "only the message before the link was dropped");
    let received: Vec<(String, Received)> = rx.try_iter().collect();
    let ships: Vec<&Received> = received
        .iter()
        .filter(|(_, e)| matches!(e.message, Message::Ship(_)))
        .map(|(_, e)| e)
        .collect();
    assert_eq!(
        ships.len(),
        20,
        "every message after the link was up arrived, in order"
    );
    for (envelope, message) in ships.iter().zip(&sent) {
        assert_eq!((envelope.partition, envelope.from, envelope.to), (5, 1, 2));
        assert_eq!(
            batch_bytes(&envelope.message),
            batch_bytes(message),
            "batches untouched"
        );
        let (Message::Ship(got), Message::Ship(sent)) = (&envelope.message, message) else {
            unreachable!("filtered")
        };
        assert_eq!(
            (got.prev_offset, got.high_watermark, got.batches.count()),
            (sent.prev_offset, sent.high_watermark, 2)
        );
    }
    assert!(received.iter().all(|(topic, _)| topic == "orders"));
}

/// Links bound to a shard ask the peer for it first (`BindShard`) and wait for the
/// answer; a peer of an earlier release refuses the unknown api, and the link is used
/// all the same.
#[test]
fn a_bound_link_to_a_peer_that_does_not_bind_carries_every_message() {
    let (tx, rx) = mpsc::channel::<(String, Received)>();
    let receiver = peer_node(tx);
    let dropped = common::run(move || async move {
        let peers = Peers::for_shard(1, 1, [(2, receiver)], security());
        let transport = PartitionTransport::new(peers.clone(), "orders", 5, NodeId(1));
        transport.send(NodeId(2), ship(99));
        glommio::timer::sleep(Duration::from_millis(200)).await;
        for n in 0..20 {
            transport.send(NodeId(2), ship(n));
        }
        glommio::timer::sleep(Duration::from_millis(200)).await;
        peers.dropped()
    });
    assert_eq!(
        dropped, 1,
        "only the message before the link was up was dropped"
    );
    let ships: Vec<u64> = rx
        .try_iter()
        .filter_map(|(_, received)| match received.message {
            Message::Ship(ship) => Some(ship.prev_offset),
            _ => None,
        })
        .collect();
    assert_eq!(ships, (0..20).collect::<Vec<_>>(), "every ship, in order");
}

#[test]
fn an_unreachable_peer_drops_without_failing() {
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let dropped = common::run(move || async move {
        let peers = Peers::new(1, [(2, address)], security());
        let transport = PartitionTransport::new(peers.clone(), "t", 0, NodeId(1));
        for n in 0..10 {
            transport.send(NodeId(2), ship(n));
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        // A node nobody configured: dropped too.
        transport.send(NodeId(9), ship(0));
        peers.dropped()
    });
    assert_eq!(dropped, 11);
}
