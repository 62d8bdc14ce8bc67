//! The replication transport: `PartitionTransport` frames each replicator message as a
//! fire-and-forget `Replicate` frame on a connection per peer node; the receiver decodes
//! the same envelope, batch bytes untouched. A message for a node with no live link is
//! dropped while the link (re)connects; the replicas' timers resend.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::sync::mpsc;
use std::time::Duration;

use bytes::BytesMut;
use shardlog_net::frame::HEADER_SIZE;
use shardlog_net::peer::{self, PartitionTransport, Peers};
use shardlog_net::wire::Frame;
use shardlog_replicator::NodeId;
use shardlog_replicator::driver::Transport;
use shardlog_replicator::message::{Envelope, Message, Ship};

fn ship(n: u64) -> Message {
    Message::Ship(Ship {
        leader_epoch: 3,
        prev_offset: n,
        prev_epoch: 2,
        high_watermark: n,
        batches: common::batch(&[format!("record {n}").into_bytes()]).to_vec(),
    })
}

#[test]
fn messages_reach_the_peer_intact() {
    let (tx, rx) = mpsc::channel::<(String, Envelope)>();
    let tx = std::sync::Mutex::new(tx);
    let receiver = common::fake_broker(move |header, whole| {
        let mut meta = rkyv::util::AlignedVec::<16>::new();
        meta.extend_from_slice(&whole[HEADER_SIZE..HEADER_SIZE + header.meta_len]);
        let frame = Frame {
            header: *header,
            meta,
            data: BytesMut::from(&whole[header.data_start()..header.frame_bytes]),
        };
        tx.lock()
            .unwrap()
            .send(peer::decode(&frame).unwrap())
            .unwrap();
        None
    });
    let sent: Vec<Message> = (0..20).map(ship).collect();
    let to_send = sent.clone();
    let dropped = common::run(move || async move {
        let peers = Peers::new([(2, receiver)]);
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
    let received: Vec<(String, Envelope)> = rx.try_iter().collect();
    let ships: Vec<&Envelope> = received
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
        assert_eq!(&envelope.message, message, "batch bytes untouched");
    }
    assert!(received.iter().all(|(topic, _)| topic == "orders"));
}

#[test]
fn an_unreachable_peer_drops_without_failing() {
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let dropped = common::run(move || async move {
        let peers = Peers::new([(2, address)]);
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
