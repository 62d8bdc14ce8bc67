//! `ErrorCode`: the error codes the wire carries. Stable numbers: never reuse one.
//! Converted from engine errors with `From<&engine::Error>`; display strings are never codes.

use shardlog_engine::Error as EngineError;

/// An error code on the wire (`0` is success).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Success.
    None = 0,
    /// An error the server could not classify; the message says more.
    Unknown = 1,
    /// The topic does not exist.
    UnknownTopic = 2,
    /// The topic exists, the partition does not.
    UnknownPartition = 3,
    /// This node does not lead the partition; the response names the leader if known.
    NotLeader = 4,
    /// The offset is outside `[log_start, log_end]`.
    OffsetOutOfRange = 5,
    /// `acks=all` could not be met: fewer in-sync replicas than `min_insync`.
    NotEnoughReplicas = 6,
    /// A batch failed its CRC or record checks (in a request, or on disk).
    CorruptBatch = 7,
    /// The request does not decode or breaks a limit; the message says which.
    InvalidRequest = 8,
    /// CreateTopic for a topic that exists.
    TopicExists = 9,
    /// The frame, a field or a produced batch (over 16 MiB) is larger than the server
    /// accepts; the message names the limit.
    RequestTooLarge = 10,
    /// The request's timeout passed.
    Timeout = 11,
    /// The api exists but not in this version.
    UnsupportedVersion = 12,
    /// No such api.
    UnknownApi = 13,
    /// The partition's storage failed on the node that answered (ENOSPC, EIO): its replica
    /// there is offline and writes are refused (the message says why, e.g. the disk is
    /// full). Retriable: its leadership moves to another in-sync replica, or the node
    /// reopens it once the storage works again.
    StorageError = 14,
    /// The server is shutting down.
    ShuttingDown = 15,
    /// A topic name breaks the naming rules.
    InvalidTopic = 16,
    /// The partition has no leader right now (an election is under way or no in-sync
    /// replica is live).
    LeaderNotAvailable = 17,
    /// An idempotent producer's batch does not follow its last sequence number.
    OutOfOrderSequence = 18,
    /// A newer epoch of this producer id exists.
    ProducerFenced = 19,
    /// Too many produce requests are waiting on the partition.
    Busy = 20,
    /// This node does not coordinate the group (look the coordinator up again).
    NotCoordinator = 21,
    /// The coordinator is still reading the group's offsets partition (after a start or
    /// a failover); retry shortly.
    CoordinatorLoading = 22,
    /// The group's offsets partition has no leader right now, so no node coordinates it.
    CoordinatorNotAvailable = 23,
    /// The group is rebalancing: the member rejoins (JoinGroup) to get its new assignment.
    RebalanceInProgress = 24,
    /// The member's generation is not the group's current one (it missed a rebalance):
    /// it rejoins.
    IllegalGeneration = 25,
    /// The coordinator does not know the member (its session expired, or it left): it
    /// rejoins as a new member. Also the answer to a commit without a member while the
    /// group has members.
    UnknownMember = 26,
    /// An empty or overlong group id.
    InvalidGroupId = 27,
    /// A session timeout outside the coordinator's bounds.
    InvalidSessionTimeout = 28,
    /// The member's protocols share none with the group's, or its protocol type differs.
    InconsistentGroupProtocol = 29,
    /// A new member must join again with the member id the answer carries (Kafka's
    /// KIP-394 handshake).
    MemberIdRequired = 30,
    /// A commit's metadata text is longer than the coordinator keeps.
    OffsetMetadataTooLarge = 31,
    /// The coordinator could not write the commit (too few in-sync replicas of its
    /// offsets partition, a timeout, storage); retriable, nothing was committed.
    CommitFailed = 32,
    /// SASL authentication failed (wrong password, unknown user, a malformed exchange),
    /// or a request came before the connection authenticated on a node that requires it
    /// (`--authentication sasl`). Not retriable with the same credentials. (40 on: the
    /// SASL codes.)
    AuthenticationFailed = 40,
    /// The SASL mechanism asked for is not offered on this connection (PLAIN is offered
    /// over TLS only).
    UnsupportedSaslMechanism = 41,
    /// A SASL request out of turn: a token without a handshake, a second handshake.
    IllegalSaslState = 42,
    /// Authorization is on and no ACL lets the connection's principal do this (or one
    /// denies it); the message names the principal, operation and resource. Not
    /// retriable: an operator must add an ACL.
    AuthorizationFailed = 33,
}

impl ErrorCode {
    /// Whether retrying the same request (after refreshing metadata) can succeed.
    #[must_use]
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::NotLeader
                | ErrorCode::NotEnoughReplicas
                | ErrorCode::Timeout
                | ErrorCode::ShuttingDown
                | ErrorCode::UnknownPartition
                | ErrorCode::LeaderNotAvailable
                | ErrorCode::Busy
                | ErrorCode::StorageError
                | ErrorCode::NotCoordinator
                | ErrorCode::CoordinatorLoading
                | ErrorCode::CoordinatorNotAvailable
                | ErrorCode::CommitFailed
        )
    }

    /// The code's number.
    #[must_use]
    pub fn as_u16(self) -> u16 {
        self as u16
    }
}

impl From<u16> for ErrorCode {
    fn from(code: u16) -> ErrorCode {
        match code {
            40 => return ErrorCode::AuthenticationFailed,
            41 => return ErrorCode::UnsupportedSaslMechanism,
            42 => return ErrorCode::IllegalSaslState,
            _ => {}
        }
        const ALL: [ErrorCode; 34] = [
            ErrorCode::None,
            ErrorCode::Unknown,
            ErrorCode::UnknownTopic,
            ErrorCode::UnknownPartition,
            ErrorCode::NotLeader,
            ErrorCode::OffsetOutOfRange,
            ErrorCode::NotEnoughReplicas,
            ErrorCode::CorruptBatch,
            ErrorCode::InvalidRequest,
            ErrorCode::TopicExists,
            ErrorCode::RequestTooLarge,
            ErrorCode::Timeout,
            ErrorCode::UnsupportedVersion,
            ErrorCode::UnknownApi,
            ErrorCode::StorageError,
            ErrorCode::ShuttingDown,
            ErrorCode::InvalidTopic,
            ErrorCode::LeaderNotAvailable,
            ErrorCode::OutOfOrderSequence,
            ErrorCode::ProducerFenced,
            ErrorCode::Busy,
            ErrorCode::NotCoordinator,
            ErrorCode::CoordinatorLoading,
            ErrorCode::CoordinatorNotAvailable,
            ErrorCode::RebalanceInProgress,
            ErrorCode::IllegalGeneration,
            ErrorCode::UnknownMember,
            ErrorCode::InvalidGroupId,
            ErrorCode::InvalidSessionTimeout,
            ErrorCode::InconsistentGroupProtocol,
            ErrorCode::MemberIdRequired,
            ErrorCode::OffsetMetadataTooLarge,
            ErrorCode::CommitFailed,
            ErrorCode::AuthorizationFailed,
        ];
        ALL.get(usize::from(code))
            .copied()
            .unwrap_or(ErrorCode::Unknown)
    }
}

impl From<&EngineError> for ErrorCode {
    fn from(error: &EngineError) -> ErrorCode {
        match error {
            EngineError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            EngineError::CorruptBatch { .. } | EngineError::InvalidBatch(_) => {
                ErrorCode::CorruptBatch
            }
            EngineError::NotContiguous { .. } => ErrorCode::InvalidRequest,
            EngineError::Io { .. } | EngineError::SyncFailed { .. } | EngineError::Stopped => {
                ErrorCode::StorageError
            }
            _ => ErrorCode::Unknown,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_roundtrip() {
        for n in 0..34u16 {
            assert_eq!(ErrorCode::from(n).as_u16(), n);
        }
        for n in 40..43u16 {
            assert_eq!(ErrorCode::from(n).as_u16(), n);
        }
        assert_eq!(ErrorCode::from(999), ErrorCode::Unknown);
    }
}
