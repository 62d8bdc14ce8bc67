//! Kafka's error codes (the numbers of `org.apache.kafka.common.protocol.Errors`) and the
//! mapping from the operations' errors. Retriable conditions map to Kafka's retriable
//! codes so clients refresh metadata and retry: a moved leader to NOT_LEADER_OR_FOLLOWER,
//! an election or a node catching up to LEADER_NOT_AVAILABLE.

use shardlog_replicator::controller::acls::ResourceType;

use crate::server::ops::OpError;

pub(crate) const NONE: i16 = 0;
pub(crate) const OFFSET_OUT_OF_RANGE: i16 = 1;
pub(crate) const CORRUPT_MESSAGE: i16 = 2;
pub(crate) const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub(crate) const LEADER_NOT_AVAILABLE: i16 = 5;
pub(crate) const NOT_LEADER_OR_FOLLOWER: i16 = 6;
pub(crate) const REQUEST_TIMED_OUT: i16 = 7;
pub(crate) const MESSAGE_TOO_LARGE: i16 = 10;
pub(crate) const NOT_COORDINATOR_OR_UNKNOWN: i16 = -1;
pub(crate) const INVALID_TOPIC_EXCEPTION: i16 = 17;
pub(crate) const NOT_ENOUGH_REPLICAS: i16 = 19;
pub(crate) const INVALID_REQUIRED_ACKS: i16 = 21;
pub(crate) const INVALID_PARTITIONS: i16 = 37;
pub(crate) const INVALID_REPLICATION_FACTOR: i16 = 38;
pub(crate) const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
pub(crate) const GROUP_AUTHORIZATION_FAILED: i16 = 30;
pub(crate) const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
pub(crate) const UNSUPPORTED_VERSION: i16 = 35;
pub(crate) const TOPIC_ALREADY_EXISTS: i16 = 36;
pub(crate) const NOT_CONTROLLER: i16 = 41;
pub(crate) const INVALID_REQUEST: i16 = 42;
pub(crate) const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub(crate) const INVALID_PRODUCER_EPOCH: i16 = 47;
pub(crate) const KAFKA_STORAGE_ERROR: i16 = 56;
pub(crate) const FENCED_LEADER_EPOCH: i16 = 74;
pub(crate) const UNKNOWN_LEADER_EPOCH: i16 = 75;
pub(crate) const UNKNOWN_TOPIC_ID: i16 = 100;

/// The Kafka code of an operation's error.
pub(crate) fn code(error: &OpError) -> i16 {
    match error {
        OpError::UnknownTopic | OpError::UnknownPartition => UNKNOWN_TOPIC_OR_PARTITION,
        OpError::NotLeader { leader: Some(_) } => NOT_LEADER_OR_FOLLOWER,
        OpError::NotLeader { leader: None } | OpError::NotAvailable(_) => LEADER_NOT_AVAILABLE,
        OpError::OffsetOutOfRange(_) => OFFSET_OUT_OF_RANGE,
        OpError::NotEnoughReplicas => NOT_ENOUGH_REPLICAS,
        OpError::CorruptBatch(_) => CORRUPT_MESSAGE,
        OpError::TooLarge(_) => MESSAGE_TOO_LARGE,
        OpError::InvalidRequest(_) => INVALID_REQUEST,
        OpError::InvalidTopic(_) => INVALID_TOPIC_EXCEPTION,
        OpError::TopicExists(_) => TOPIC_ALREADY_EXISTS,
        // Busy: too many produces waiting on the partition; a timeout tells the client to
        // back off and retry, as it would for a broker that is slow to answer.
        OpError::Timeout(_) | OpError::Busy => REQUEST_TIMED_OUT,
        OpError::OutOfOrderSequence(_) => OUT_OF_ORDER_SEQUENCE_NUMBER,
        // Kafka answers a fenced (older) producer epoch with INVALID_PRODUCER_EPOCH on
        // Produce (PRODUCER_FENCED is for transactional producers).
        OpError::ProducerFenced(_) => INVALID_PRODUCER_EPOCH,
        OpError::Storage(_) => KAFKA_STORAGE_ERROR,
        // A stopping node: its partitions move; the client finds the new leader.
        OpError::ShuttingDown => NOT_LEADER_OR_FOLLOWER,
        OpError::Unauthorized(resource, _) => authorization_failed(*resource),
        OpError::Unknown(_) => NOT_COORDINATOR_OR_UNKNOWN,
    }
}

/// Kafka's authorization error for a resource type.
pub(crate) fn authorization_failed(resource: ResourceType) -> i16 {
    match resource {
        ResourceType::Topic => TOPIC_AUTHORIZATION_FAILED,
        ResourceType::Group => GROUP_AUTHORIZATION_FAILED,
        ResourceType::Cluster => CLUSTER_AUTHORIZATION_FAILED,
    }
}

/// The code of a topic admin error (CreateTopics, DeleteTopics): as [`code`], but a
/// request the controller leader must take, sent while there is none, is NOT_CONTROLLER.
pub(crate) fn admin_code(error: &OpError) -> i16 {
    match error {
        OpError::NotAvailable(_) => NOT_CONTROLLER,
        OpError::InvalidRequest(message) if message.starts_with("partitions") => INVALID_PARTITIONS,
        OpError::InvalidRequest(message) if message.starts_with("replication factor") => {
            INVALID_REPLICATION_FACTOR
        }
        OpError::InvalidRequest(_) => INVALID_REQUEST,
        other => code(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_errors_map_to_kafkas_codes() {
        let table = [
            (OpError::UnknownTopic, 3),
            (OpError::UnknownPartition, 3),
            (OpError::NotLeader { leader: Some(2) }, 6),
            (OpError::NotLeader { leader: None }, 5),
            (OpError::NotAvailable("catching up".into()), 5),
            (OpError::OffsetOutOfRange(String::new()), 1),
            (OpError::NotEnoughReplicas, 19),
            (OpError::CorruptBatch(String::new()), 2),
            (OpError::TooLarge(String::new()), 10),
            (OpError::InvalidTopic(String::new()), 17),
            (OpError::TopicExists(String::new()), 36),
            (OpError::Timeout(String::new()), 7),
            (OpError::OutOfOrderSequence(String::new()), 45),
            (OpError::ProducerFenced(String::new()), 47),
            (OpError::Storage(String::new()), 56),
            (
                OpError::Unauthorized(ResourceType::Topic, String::new()),
                29,
            ),
            (
                OpError::Unauthorized(ResourceType::Group, String::new()),
                30,
            ),
            (
                OpError::Unauthorized(ResourceType::Cluster, String::new()),
                31,
            ),
        ];
        for (error, expected) in table {
            assert_eq!(code(&error), expected, "{error:?}");
        }
        assert_eq!(admin_code(&OpError::NotAvailable(String::new())), 41);
        assert_eq!(
            admin_code(&OpError::InvalidRequest("partitions 0: 1 to 10000".into())),
            37
        );
    }
}
