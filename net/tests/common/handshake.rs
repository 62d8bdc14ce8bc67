//! Peer handshake messages laid out by hand (the format is in `shardlog_net::peer::auth`'s
//! module docs), for tests that play a dialer the real code would never be.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use shardlog_net::peer::auth::MESSAGE_BYTES;

use super::cluster::CLUSTER_SECRET;

/// How long a read or write on a hand-made link may block.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Message kinds.
pub const HELLO: u8 = 1;
/// The listener's challenge.
pub const CHALLENGE: u8 = 2;
/// The dialer's proof.
pub const PROOF: u8 = 3;
/// The listener's verdict.
pub const VERDICT: u8 = 4;
/// The cluster-secret mode byte.
pub const MODE_SECRET: u8 = 1;

/// One handshake message: `SLPA`, version 1, kind, mode, verdict, sender and receiver ids,
/// nonce and MAC.
pub fn message(
    kind: u8,
    mode: u8,
    verdict: u8,
    sender: u32,
    receiver: u32,
    nonce: [u8; 32],
    mac: [u8; 32],
) -> Vec<u8> {
    let mut out = b"SLPA".to_vec();
    out.extend_from_slice(&[1, kind, mode, verdict]);
    out.extend_from_slice(&sender.to_le_bytes());
    out.extend_from_slice(&receiver.to_le_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&mac);
    assert_eq!(out.len(), MESSAGE_BYTES);
    out
}

/// The nonce field of a message.
pub fn nonce_of(message: &[u8]) -> [u8; 32] {
    message[16..48].try_into().unwrap()
}

/// The dialer's proof MAC under `secret` (HMAC-SHA256 over the label, direction `D`, both
/// ids and both nonces), as a dialer that holds `secret` computes it.
pub fn dialer_mac(
    secret: &[u8],
    dialer: u32,
    listener: u32,
    dialer_nonce: &[u8; 32],
    listener_nonce: &[u8; 32],
) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.trim_ascii()).unwrap();
    mac.update(b"shardlog-peer-auth/1");
    mac.update(b"D");
    mac.update(&dialer.to_le_bytes());
    mac.update(&listener.to_le_bytes());
    mac.update(dialer_nonce);
    mac.update(listener_nonce);
    mac.finalize().into_bytes().into()
}

/// Connects to `target`'s peer port and completes the handshake as node `proven` under
/// the test cluster's secret (a holder of the secret may claim any node id).
pub fn handshake(peer: &str, target: usize, proven: u32) -> TcpStream {
    let target_id = u32::try_from(target).unwrap();
    let mut stream = TcpStream::connect(peer).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let nonce = fresh_nonce();
    let hello = message(HELLO, MODE_SECRET, 0, proven, target_id, nonce, [0; 32]);
    let challenge = exchange(&mut stream, &hello, CHALLENGE, "challenges", target, proven);
    let mac = dialer_mac(
        CLUSTER_SECRET,
        proven,
        target_id,
        &nonce,
        &nonce_of(&challenge),
    );
    let proof = message(PROOF, MODE_SECRET, 0, proven, target_id, [0; 32], mac);
    exchange(&mut stream, &proof, VERDICT, "accepts", target, proven);
    stream
}

/// Sends one handshake message and reads the answer, which must be a `kind` with status 0
/// ("node {target} {does} node {proven}" if not).
fn exchange(
    stream: &mut TcpStream,
    sent: &[u8],
    kind: u8,
    does: &str,
    target: usize,
    proven: u32,
) -> Vec<u8> {
    stream.write_all(sent).unwrap();
    let answer = read_message(stream);
    assert_eq!(
        (answer[5], answer[7]),
        (kind, 0),
        "node {target} {does} node {proven}"
    );
    answer
}

/// One handshake message read from `stream`.
pub fn read_message(stream: &mut TcpStream) -> Vec<u8> {
    let mut message = vec![0; MESSAGE_BYTES];
    stream.read_exact(&mut message).unwrap();
    message
}

/// 32 bytes no earlier call returned (xorshift over the clock, the pid and a counter).
pub fn fresh_nonce() -> [u8; 32] {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mut x = u64::from(clock)
        ^ (u64::from(std::process::id()) << 32)
        ^ CALLS.fetch_add(1, Ordering::Relaxed).rotate_left(17)
        | 1;
    let mut nonce = [0u8; 32];
    for chunk in nonce.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    nonce
}
