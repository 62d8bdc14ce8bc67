//! A blocking Kafka client for tests, made of the `kafka-protocol` crate's client codecs:
//! one connection, one request at a time (`call`), and the group member steps built on
//! it (join with the MEMBER_ID_REQUIRED round, sync, heartbeat, commit, fetch offsets).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest,
    HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, RequestHeader, ResponseHeader,
    SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Kafka's error codes the group tests look for.
pub const NONE: i16 = 0;
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const NOT_COORDINATOR: i16 = 16;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const MEMBER_ID_REQUIRED: i16 = 79;

/// One blocking connection.
pub struct KafkaConn {
    stream: TcpStream,
    correlation_id: i32,
}

impl KafkaConn {
    /// Connects to `addr` (`HOST:PORT`); a request waits at most 60 s for its answer.
    pub fn connect(addr: &str) -> std::io::Result<KafkaConn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        stream.set_nodelay(true)?;
        Ok(KafkaConn {
            stream,
            correlation_id: 0,
        })
    }

    /// Sends `request` as `key` v`version` and reads its response.
    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> std::io::Result<Resp> {
        self.correlation_id += 1;
        let mut body = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("groups-test")))
            .encode(&mut body, key.request_header_version(version))
            .map_err(std::io::Error::other)?;
        request
            .encode(&mut body, version)
            .map_err(std::io::Error::other)?;
        let size = i32::try_from(body.len()).map_err(std::io::Error::other)?;
        self.stream.write_all(&size.to_be_bytes())?;
        self.stream.write_all(&body)?;
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let size = usize::try_from(i32::from_be_bytes(size)).map_err(std::io::Error::other)?;
        let mut reply = vec![0u8; size];
        self.stream.read_exact(&mut reply)?;
        let mut reply = Bytes::from(reply);
        let header = ResponseHeader::decode(&mut reply, key.response_header_version(version))
            .map_err(std::io::Error::other)?;
        assert_eq!(header.correlation_id, self.correlation_id, "correlation id");
        Resp::decode(&mut reply, version).map_err(std::io::Error::other)
    }
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

/// FindCoordinator v`version` of `group`, retried (while the offsets topic is created or
/// its leader elected) for up to `timeout`: the coordinator's node id and address.
pub fn find_coordinator(addr: &str, group: &str, version: i16, timeout: Duration) -> (i32, String) {
    let started = Instant::now();
    loop {
        let found = KafkaConn::connect(addr).and_then(|mut conn| {
            let mut request = FindCoordinatorRequest::default().with_key_type(0);
            if version >= 4 {
                request.coordinator_keys = vec![s(group)];
            } else {
                request.key = s(group);
            }
            let response: FindCoordinatorResponse =
                conn.call(ApiKey::FindCoordinator, version, &request)?;
            Ok(if version >= 4 {
                let c = response.coordinators.first().expect("one coordinator");
                (
                    c.error_code,
                    c.node_id.0,
                    format!("{}:{}", c.host.as_str(), c.port),
                )
            } else {
                let address = format!("{}:{}", response.host.as_str(), response.port);
                (response.error_code, response.node_id.0, address)
            })
        });
        match found {
            Ok((NONE, node, address)) => return (node, address),
            other => assert!(
                started.elapsed() < timeout,
                "no coordinator for {group} within {timeout:?}: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A group member on its own connection to the coordinator.
pub struct Member {
    pub conn: KafkaConn,
    pub group: String,
    pub id: String,
    pub generation: i32,
    pub session_timeout_ms: i32,
}

/// What a join answered.
#[derive(Debug)]
pub struct Joined {
    pub generation: i32,
    pub leader: String,
    pub protocol: String,
    /// The members the leader was told of (empty for the others).
    pub members: Vec<String>,
}

impl Member {
    /// A member of `group` at the coordinator `addr`, not joined yet.
    pub fn new(addr: &str, group: &str, session_timeout_ms: i32) -> Member {
        Member {
            conn: KafkaConn::connect(addr).expect("connect to the coordinator"),
            group: group.to_owned(),
            id: String::new(),
            generation: -1,
            session_timeout_ms,
        }
    }

    /// JoinGroup v5 (a new member goes through MEMBER_ID_REQUIRED first); waits for the
    /// rebalance. The error code if refused.
    pub fn join(&mut self) -> Result<Joined, i16> {
        loop {
            let request = JoinGroupRequest::default()
                .with_group_id(GroupId(s(&self.group)))
                .with_session_timeout_ms(self.session_timeout_ms)
                .with_rebalance_timeout_ms(20_000)
                .with_member_id(s(&self.id))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![
                    JoinGroupRequestProtocol::default()
                        .with_name(s("range"))
                        .with_metadata(Bytes::from(format!("meta of {}", self.id))),
                ]);
            let response: JoinGroupResponse = self
                .conn
                .call(ApiKey::JoinGroup, 5, &request)
                .expect("join");
            match response.error_code {
                MEMBER_ID_REQUIRED if self.id.is_empty() => {
                    self.id = response.member_id.as_str().to_owned();
                }
                // The coordinator is still loading its offsets partition (it just took
                // up its leadership): clients retry.
                COORDINATOR_LOAD_IN_PROGRESS => std::thread::sleep(Duration::from_millis(100)),
                NONE => {
                    self.generation = response.generation_id;
                    return Ok(Joined {
                        generation: response.generation_id,
                        leader: response.leader.as_str().to_owned(),
                        protocol: response
                            .protocol_name
                            .map(|p| p.as_str().to_owned())
                            .unwrap_or_default(),
                        members: response
                            .members
                            .iter()
                            .map(|m| m.member_id.as_str().to_owned())
                            .collect(),
                    });
                }
                code => return Err(code),
            }
        }
    }

    /// SyncGroup v3 in this member's generation; the leader hands in `assignments`. Its
    /// own assignment, or the error code.
    pub fn sync(&mut self, assignments: &[(String, Vec<u8>)]) -> Result<Vec<u8>, i16> {
        let request = SyncGroupRequest::default()
            .with_group_id(GroupId(s(&self.group)))
            .with_generation_id(self.generation)
            .with_member_id(s(&self.id))
            .with_assignments(
                assignments
                    .iter()
                    .map(|(member, a)| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(s(member))
                            .with_assignment(Bytes::from(a.clone()))
                    })
                    .collect(),
            );
        let response: SyncGroupResponse = self
            .conn
            .call(ApiKey::SyncGroup, 3, &request)
            .expect("sync");
        match response.error_code {
            NONE => Ok(response.assignment.to_vec()),
            code => Err(code),
        }
    }

    /// Heartbeat v3 in this member's generation: its error code.
    pub fn heartbeat(&mut self) -> i16 {
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(s(&self.group)))
            .with_generation_id(self.generation)
            .with_member_id(s(&self.id));
        let response: HeartbeatResponse = self
            .conn
            .call(ApiKey::Heartbeat, 3, &request)
            .expect("heartbeat");
        response.error_code
    }

    /// OffsetCommit v7 of `offsets` (topic, partition, offset) in `generation`: each
    /// partition's error code.
    pub fn commit(&mut self, generation: i32, offsets: &[(&str, i32, i64)]) -> Vec<i16> {
        commit(
            &mut self.conn,
            &self.group,
            generation,
            &self.id.clone(),
            offsets,
        )
    }
}

/// OffsetCommit v7 on `conn`: each partition's error code, in order.
pub fn commit(
    conn: &mut KafkaConn,
    group: &str,
    generation: i32,
    member_id: &str,
    offsets: &[(&str, i32, i64)],
) -> Vec<i16> {
    let topics = offsets
        .iter()
        .map(|(topic, partition, offset)| {
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(*partition)
                        .with_committed_offset(*offset)
                        .with_committed_leader_epoch(-1)
                        .with_committed_metadata(Some(s("m"))),
                ])
        })
        .collect();
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member_id))
        .with_topics(topics);
    let response: OffsetCommitResponse = conn
        .call(ApiKey::OffsetCommit, 7, &request)
        .expect("commit");
    response
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect()
}

/// OffsetFetch v`version` of `wanted` (`None`: every partition the group committed; v2+):
/// `(topic, partition, offset)` sorted, or the error code.
pub fn fetch_offsets(
    conn: &mut KafkaConn,
    group: &str,
    version: i16,
    wanted: Option<&[(&str, i32)]>,
) -> Result<Vec<(String, i32, i64)>, i16> {
    let topics = wanted.map(|wanted| {
        wanted
            .iter()
            .map(|(topic, partition)| {
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partition_indexes(vec![*partition])
            })
            .collect()
    });
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(topics);
    let response: OffsetFetchResponse = conn
        .call(ApiKey::OffsetFetch, version, &request)
        .expect("offset fetch");
    if response.error_code != NONE {
        return Err(response.error_code);
    }
    let mut out = Vec::new();
    for topic in &response.topics {
        for p in &topic.partitions {
            if p.error_code != NONE {
                return Err(p.error_code);
            }
            out.push((
                topic.name.0.as_str().to_owned(),
                p.partition_index,
                p.committed_offset,
            ));
        }
    }
    out.sort();
    Ok(out)
}
