//! Peer handshake messages laid out by hand (the format is in `shardlog_net::peer::auth`'s
//! module docs), for tests that play a dialer the real code would never be.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use shardlog_net::peer::auth::MESSAGE_BYTES;

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
