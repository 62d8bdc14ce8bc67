//! Controller commands: what a committed Raft entry says, and its rkyv encoding.
//!
//! Ids are plain integers on the wire (`u32` node ids and partitions, `i32` leader
//! epochs) so the archive does not depend on the newtypes' crates. Entry bytes come from
//! peers, so decoding validates the archive (bytecheck) and bounds its size first.

use rkyv::rancor;
use rkyv::util::AlignedVec;

/// Largest encoded command accepted, in bytes.
pub const MAX_COMMAND_BYTES: usize = 1 << 20;

pub use wire::{
    AdoptedData, Command, KAFKA_LISTENER, SHARDLOG_LISTENER, THROTTLE_NODE_DEFAULT, UserCredential,
};

/// The command enum with its rkyv derive: the derived resolver's fields carry no docs, so
/// the lint is allowed in here only (every field of [`Command`] is documented).
mod wire {
    #![allow(missing_docs)]

    /// One change to the cluster metadata, proposed to the controller's Raft log and applied,
    /// in log order, by every controller node.
    #[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub enum Command {
        /// A node's registration of earlier releases, without its incarnation: only read
        /// back from their Raft logs (and applied as they were), never proposed.
        RegisterNode {
            /// The node id.
            node: u32,
            /// Where peers and clients reach it (`host:port`).
            address: String,
            /// Its session expiry (ms on the controller leader's clock), for display only:
            /// the leader's in-memory session tracker is the authority.
            session_expires_ms: u64,
        },
        /// A fenced node is back (its heartbeat reached the controller leader): unfence it.
        /// Heartbeats of live nodes are not logged; they only renew the leader's session.
        Heartbeat {
            /// The node id.
            node: u32,
            /// Its new session expiry (ms), for display only.
            session_expires_ms: u64,
        },
        /// The node missed its session timeout: fence it and move its leaderships.
        FenceNode {
            /// The node id.
            node: u32,
        },
        /// Create a topic; replicas are assigned when the command is applied.
        CreateTopic {
            /// Topic name (1..=249 bytes of `[A-Za-z0-9._-]`).
            name: String,
            /// Number of partitions (1..=4096).
            partitions: u32,
            /// Replicas per partition (1..=live nodes).
            replication_factor: u16,
            /// Smallest ISR that may advance the high watermark (1..=replication_factor).
            min_insync: u16,
            /// Opaque topic configuration, key-value pairs.
            config: Vec<(String, String)>,
        },
        /// Delete a topic.
        DeleteTopic {
            /// Topic name.
            name: String,
        },
        /// The ISR change of earlier releases, without the partition epoch: only read
        /// back from their Raft logs (and applied as they were), never proposed.
        LegacyChangeIsr {
            /// Topic name.
            topic: String,
            /// Partition number.
            partition: u32,
            /// The proposer's leader epoch; a stale leader is refused.
            leader_epoch: i32,
            /// The whole new ISR (node ids).
            new_isr: Vec<u32>,
        },
        /// Elect a leader: the preferred replica if it is live and in sync and the leader is
        /// not, or any live ISR (then ELR) member if the partition has no live leader.
        ElectLeader {
            /// Topic name.
            topic: String,
            /// Partition number.
            partition: u32,
        },
        /// A partition leader asks for a new ISR; refused unless `leader_epoch` and
        /// `partition_epoch` are current (KIP-497), so a delayed or retried proposal
        /// never undoes a later change. (Last in the enum so older entries keep their
        /// tags; `u32` keeps the archive at its old size.)
        ChangeIsr {
            /// Topic name.
            topic: String,
            /// Partition number.
            partition: u32,
            /// The proposer's leader epoch; a stale leader is refused.
            leader_epoch: i32,
            /// The partition epoch the proposal builds on.
            partition_epoch: u32,
            /// The whole new ISR (node ids).
            new_isr: Vec<u32>,
        },
        /// A node joins the cluster, or rejoins it as a new incarnation (it restarted):
        /// the previous incarnation is fenced first (its leaderships move, with new
        /// epochs), at once, not a session timeout later. Refused for an incarnation
        /// older than the registered one. (Last in the enum: older entries keep their
        /// tags, and the archive keeps its size.)
        Register {
            /// The node id.
            node: u32,
            /// Where clients reach it (`host:port`).
            address: String,
            /// Its incarnation: grows with every start of the node.
            incarnation: u64,
            /// Its session expiry (ms on the controller leader's clock), for display only.
            session_expires_ms: u64,
        },
        /// Reserve the next block of producer ids, `[first, first + count)`, for `node`,
        /// which hands them to idempotent producers (`InitProducerId`). Refused unless
        /// `first` is the next id not yet reserved (a compare-and-set: a delayed or
        /// repeated proposal never hands out a block twice). (Last in the enum: older
        /// entries keep their tags.)
        AllocateProducerIds {
            /// The node the block is for.
            node: u32,
            /// The first id of the block: the metadata's next unreserved id.
            first: u64,
            /// Ids in the block (1..=`MAX_PRODUCER_ID_BLOCK`).
            count: u32,
        },
        /// Create a topic whose data a lone node already holds (adopted from `topic.json`
        /// at start): replication factor 1, every partition led at `leader_epoch`, the
        /// newest epoch in the data, since a replica never leads an epoch older than
        /// its log's. (Last in the enum: older entries keep their tags.)
        AdoptTopic {
            /// Topic name.
            name: String,
            /// Number of partitions.
            partitions: u32,
            /// Opaque topic configuration, key-value pairs.
            config: Vec<(String, String)>,
            /// What the data holds (boxed: the archived enum keeps its size, so entries
            /// of earlier releases still decode).
            held: Box<AdoptedData>,
        },
        /// The replica of `partition` on `node` stopped: its log failed (a write, sync,
        /// roll or retention pass: ENOSPC, EIO) and may have lost what it had not
        /// written. If it leads `leader_epoch` still, the partition gets a new leader
        /// epoch, led by another live ISR (then ELR) member, or by `node` again when there
        /// is none (no unclean election; the new epoch keeps its reopened log from being
        /// taken for the old one). It leaves the ISR unless it would empty it or it
        /// leads. Refused unless `partition_epoch` is current (KIP-497), so a delayed
        /// report never removes a replica that has since come back. (Last in the enum:
        /// older entries keep their tags.)
        ReplicaOffline {
            /// Topic name.
            topic: String,
            /// Partition number.
            partition: u32,
            /// The node whose replica stopped.
            node: u32,
            /// The leader epoch the replica was in when its log stopped.
            leader_epoch: i32,
            /// The partition epoch the report builds on.
            partition_epoch: u32,
        },
        /// `Register` with the node's listeners by name: `shardlog` (the shardlog
        /// protocol's client listener, what `Register`'s `address` was) and `kafka` (the
        /// Kafka listener), each `host:port` as advertised to clients. (Last in the enum:
        /// older entries keep their tags; the names in a `Vec` keep the archive at its
        /// size.)
        RegisterListeners {
            /// The node id.
            node: u32,
            /// `(name, host:port)` per listener.
            listeners: Vec<(String, String)>,
            /// Its incarnation: grows with every start of the node.
            incarnation: u64,
            /// Its session expiry (ms on the controller leader's clock), for display only.
            session_expires_ms: u64,
        },
        /// Move a partition's replicas to `replicas` (preferred leader first). The nodes
        /// added catch up outside the ISR; once every one of `replicas` is in the ISR the
        /// controller commits the set (leaving replicas stop, a leaving leader hands over
        /// with a new leader epoch): see `reassignment`. A reassignment of a partition
        /// that is moving replaces the move in progress; `replicas` equal to the set
        /// before the move cancels it. (Last in the enum: older entries keep their tags.)
        ReassignPartition {
            /// Topic name.
            topic: String,
            /// Partition number.
            partition: u32,
            /// The target replica set (node ids, distinct).
            replicas: Vec<u32>,
            /// Bytes per second the leader ships to catching-up replicas of this move:
            /// [`THROTTLE_NODE_DEFAULT`] keeps the leader node's `move_throttle_bytes`,
            /// 0 is unthrottled.
            throttle_bytes: u64,
        },
        /// Decommission `node` (`draining`: its replicas move to the other nodes, it
        /// receives no new replica and leads nothing once they moved), or take it back
        /// (`draining` false). The moves themselves are `ReassignPartition`s the
        /// controller leader proposes (`replica_plan`). (Last in the enum: older entries
        /// keep their tags.)
        DrainNode {
            /// The node id.
            node: u32,
            /// Whether it is to be emptied.
            draining: bool,
        },
        /// Set `user`'s SASL SCRAM credential for one mechanism (the user is created if
        /// it has none): a salted password's derived keys, never the password. (Last in
        /// the enum: older entries keep their tags; the boxed credential keeps the
        /// archive at its size.)
        UpsertUserCredential {
            /// The user name (see `metadata::valid_user_name`).
            user: String,
            /// The credential.
            credential: Box<UserCredential>,
        },
        /// Delete `user` and every credential it has.
        DeleteUser {
            /// The user name.
            user: String,
        },
        /// Add an ACL binding (`shardlog acl add`); refused if it breaks a bound
        /// (`acls::AclBinding::validate`, `acls::MAX_ACLS`) or exists. (Last in the enum:
        /// older entries keep their tags; boxed: the archived enum keeps its size.)
        CreateAcl {
            /// The binding.
            binding: Box<super::super::acls::AclBinding>,
        },
        /// Remove the ACL binding equal to `binding` (`shardlog acl remove`); refused if
        /// there is none. (Last in the enum: older entries keep their tags.)
        DeleteAcl {
            /// The binding.
            binding: Box<super::super::acls::AclBinding>,
        },
    }

    /// A SASL SCRAM credential (RFC 5802): what a server needs to check a client's proof
    /// and prove itself, from which the password cannot be read back.
    #[derive(Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub struct UserCredential {
        /// `SCRAM-SHA-256` or `SCRAM-SHA-512`.
        pub mechanism: String,
        /// The salt.
        pub salt: Vec<u8>,
        /// Hi's iteration count.
        pub iterations: u32,
        /// `H(HMAC(SaltedPassword, "Client Key"))`.
        pub stored_key: Vec<u8>,
        /// `HMAC(SaltedPassword, "Server Key")`.
        pub server_key: Vec<u8>,
    }

    impl std::fmt::Debug for UserCredential {
        // Keys stay out of logs (commands are logged on refusal).
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("UserCredential")
                .field("mechanism", &self.mechanism)
                .field("iterations", &self.iterations)
                .finish_non_exhaustive()
        }
    }

    /// `ReassignPartition::throttle_bytes` meaning "the leader node's own setting".
    pub const THROTTLE_NODE_DEFAULT: u64 = u64::MAX;

    /// The listener name of the shardlog protocol in `RegisterListeners`.
    pub const SHARDLOG_LISTENER: &str = "shardlog";
    /// The listener name of the Kafka protocol in `RegisterListeners`.
    pub const KAFKA_LISTENER: &str = "kafka";

    /// What an adopted topic's data holds that the controller must not contradict.
    #[derive(
        Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
    )]
    pub struct AdoptedData {
        /// The leader epoch every partition starts at: the newest in the data.
        pub leader_epoch: i32,
        /// Producer ids below it may be in the data: blocks are reserved from it on, so a
        /// new producer is never taken for one whose batches were adopted.
        pub producer_id_floor: u64,
    }
}

/// A command's bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// More than [`MAX_COMMAND_BYTES`].
    #[error("command of {0} bytes is too large")]
    TooLarge(usize),
    /// Not a valid archive of a [`Command`].
    #[error("invalid command: {0}")]
    Invalid(String),
}

impl Command {
    /// Encodes the command for a Raft entry.
    pub fn encode(&self) -> Result<Vec<u8>, CommandError> {
        let bytes = rkyv::to_bytes::<rancor::Error>(self)
            .map_err(|e| CommandError::Invalid(e.to_string()))?;
        if bytes.len() > MAX_COMMAND_BYTES {
            return Err(CommandError::TooLarge(bytes.len()));
        }
        Ok(bytes.to_vec())
    }

    /// Validates and decodes untrusted entry bytes.
    pub fn decode(bytes: &[u8]) -> Result<Command, CommandError> {
        if bytes.len() > MAX_COMMAND_BYTES {
            return Err(CommandError::TooLarge(bytes.len()));
        }
        let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        rkyv::from_bytes::<Command, rancor::Error>(&aligned)
            .map_err(|e| CommandError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let cmd = Command::ChangeIsr {
            topic: "t".into(),
            partition: 3,
            leader_epoch: 7,
            partition_epoch: 9,
            new_isr: vec![1, 2],
        };
        let bytes = cmd.encode().unwrap();
        assert_eq!(Command::decode(&bytes).unwrap(), cmd);
        assert!(Command::decode(&[0xff; 7]).is_err());
        assert!(Command::decode(&vec![0; MAX_COMMAND_BYTES + 1]).is_err());
    }

    /// A `ChangeIsr` as the previous release wrote it into its Raft log still reads back.
    #[test]
    fn entries_of_the_previous_release_decode() {
        let hex =
            "0100000002000000050000006f7264657273ffff0300000007000000e4ffffff0200000000000000";
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let expected = Command::LegacyChangeIsr {
            topic: "orders".into(),
            partition: 3,
            leader_epoch: 7,
            new_isr: vec![1, 2],
        };
        assert_eq!(Command::decode(&bytes).unwrap(), expected);
        assert_eq!(std::mem::size_of::<wire::ArchivedCommand>(), 32);
        let register = Command::Register {
            node: 2,
            address: "127.0.0.1:9092".into(),
            incarnation: u64::MAX,
            session_expires_ms: 7,
        };
        let bytes = register.encode().unwrap();
        assert_eq!(Command::decode(&bytes).unwrap(), register);
        let allocate = Command::AllocateProducerIds {
            node: 1,
            first: 1000,
            count: 1000,
        };
        let bytes = allocate.encode().unwrap();
        assert_eq!(Command::decode(&bytes).unwrap(), allocate);
        let offline = Command::ReplicaOffline {
            topic: "orders".into(),
            partition: 3,
            node: 2,
            leader_epoch: 7,
            partition_epoch: 9,
        };
        let bytes = offline.encode().unwrap();
        assert_eq!(Command::decode(&bytes).unwrap(), offline);
        let listeners = Command::RegisterListeners {
            node: 2,
            listeners: vec![
                (SHARDLOG_LISTENER.into(), "127.0.0.1:9095".into()),
                (KAFKA_LISTENER.into(), "127.0.0.1:9092".into()),
            ],
            incarnation: 3,
            session_expires_ms: 7,
        };
        let bytes = listeners.encode().unwrap();
        assert_eq!(Command::decode(&bytes).unwrap(), listeners);
        let reassign = Command::ReassignPartition {
            topic: "orders".into(),
            partition: 3,
            replicas: vec![4, 1, 2],
            throttle_bytes: THROTTLE_NODE_DEFAULT,
        };
        let bytes = reassign.encode().unwrap();
        assert_eq!(Command::decode(&bytes).unwrap(), reassign);
        let drain = Command::DrainNode {
            node: 3,
            draining: true,
        };
        let bytes = drain.encode().unwrap();
        assert_eq!(Command::decode(&bytes).unwrap(), drain);
        assert_eq!(std::mem::size_of::<wire::ArchivedCommand>(), 32);
    }

    /// The user commands round-trip, and the archive keeps its size (older entries
    /// still decode).
    #[test]
    fn user_commands_round_trip() {
        let upsert = Command::UpsertUserCredential {
            user: "alice".into(),
            credential: Box::new(UserCredential {
                mechanism: "SCRAM-SHA-256".into(),
                salt: vec![1; 24],
                iterations: 4096,
                stored_key: vec![2; 32],
                server_key: vec![3; 32],
            }),
        };
        let bytes = upsert.encode().unwrap();
        assert_eq!(Command::decode(&bytes).unwrap(), upsert);
        let delete = Command::DeleteUser {
            user: "alice".into(),
        };
        let bytes = delete.encode().unwrap();
        assert_eq!(Command::decode(&bytes).unwrap(), delete);
        assert_eq!(std::mem::size_of::<wire::ArchivedCommand>(), 32);
    }

    /// ACL commands round trip, boxed so the archived enum keeps its size.
    #[test]
    fn acl_commands_round_trip() {
        let binding = crate::controller::acls::AclBinding {
            principal: "alice".into(),
            resource_type: crate::controller::acls::ResourceType::Topic,
            pattern: crate::controller::acls::PatternType::Prefixed,
            name: "logs-".into(),
            operation: crate::controller::acls::Operation::Read,
            permission: crate::controller::acls::Permission::Deny,
        };
        for acl in [
            Command::CreateAcl {
                binding: Box::new(binding.clone()),
            },
            Command::DeleteAcl {
                binding: Box::new(binding),
            },
        ] {
            let bytes = acl.encode().unwrap();
            assert_eq!(Command::decode(&bytes).unwrap(), acl);
        }
        assert_eq!(std::mem::size_of::<wire::ArchivedCommand>(), 32);
    }
}
