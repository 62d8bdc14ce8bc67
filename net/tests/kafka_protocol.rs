//! The Kafka front end against a real `shardlogd`, spoken to with the `kafka-protocol`
//! crate's client codecs over a plain socket: every advertised api and version answers
//! something the client side decodes; ApiVersions' KIP-511 fallback; produce with acks
//! 0, 1 and -1 then fetch returns the same bytes; a fetch long poll; ListOffsets by time;
//! an unknown api, malformed and truncated requests, a forged array length and an
//! oversized frame close the connection while the server keeps serving others; and in a
//! three-node cluster, Metadata lists every broker with its Kafka port and a produce to a
//! follower is NOT_LEADER_OR_FOLLOWER naming the leader.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use shardlog_net::scram::{ClientExchange, Mechanism, new_nonce};
use shardlog_net::testing::Shardlogd;

use common::cluster::{Cluster, Links};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A client connection, requests numbered from 1.
struct Conn {
    stream: TcpStream,
    correlation: i32,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        Conn {
            stream,
            correlation: 0,
        }
    }

    /// Sends `request` as `api` v`version`; returns its correlation id.
    fn send<R: Encodable>(&mut self, api: ApiKey, version: i16, request: &R) -> i32 {
        self.correlation += 1;
        let mut body = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("kafka_protocol test")))
            .encode(&mut body, api.request_header_version(version))
            .unwrap();
        request.encode(&mut body, version).unwrap();
        self.send_raw(&body);
        self.correlation
    }

    fn send_raw(&mut self, body: &[u8]) {
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&i32::try_from(body.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(body);
        self.stream.write_all(&frame).unwrap();
    }

    /// The next reply's bytes after its size; `None` once the server closed.
    fn recv_raw(&mut self) -> Option<Bytes> {
        let mut size = [0u8; 4];
        match self.stream.read_exact(&mut size) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => panic!("no reply in time"),
            Err(_) => return None,
        }
        let mut body = vec![0u8; usize::try_from(i32::from_be_bytes(size)).unwrap()];
        self.stream.read_exact(&mut body).ok()?;
        Some(Bytes::from(body))
    }

    /// The next reply, decoded as `api` v`version`; checks its correlation id.
    fn recv<R: Decodable>(&mut self, api: ApiKey, version: i16, correlation: i32) -> R {
        let mut body = self.recv_raw().expect("the server closed the connection");
        let header =
            ResponseHeader::decode(&mut body, api.response_header_version(version)).unwrap();
        assert_eq!(header.correlation_id, correlation, "{api:?} v{version}");
        let response = R::decode(&mut body, version)
            .unwrap_or_else(|e| panic!("{api:?} v{version} does not decode: {e}"));
        assert!(!body.has_remaining(), "{api:?} v{version}: bytes left over");
        response
    }

    fn call<Q: Encodable, R: Decodable>(&mut self, api: ApiKey, version: i16, request: &Q) -> R {
        let correlation = self.send(api, version, request);
        self.recv(api, version, correlation)
    }

    /// Whether the server closed the connection (a read ends without a reply).
    fn closed(&mut self) -> bool {
        self.recv_raw().is_none()
    }
}

fn name(text: &str) -> TopicName {
    TopicName(StrBytes::from_string(text.to_owned()))
}

fn server(args: &[&str]) -> (tempfile::TempDir, Shardlogd) {
    let dir = common::data_dir();
    let server = Shardlogd::start(dir.path(), args).unwrap();
    (dir, server)
}

fn create_topic(conn: &mut Conn, topic: &str, partitions: i32) {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(-1),
        ])
        .with_timeout_ms(30_000);
    let response: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, 7, &request);
    assert_eq!(response.topics[0].error_code, 0, "{response:?}");
}

fn produce_request(topic: &str, acks: i16, batch: &Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch.clone())),
                ]),
        ])
}

fn fetch_request(topic: &str, offset: i64, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20)
                        .with_current_leader_epoch(-1),
                ]),
        ])
}

/// A small valid request of `api` at `version`, or `None` for an api this test does
/// not know.
fn sample(conn: &mut Conn, api: ApiKey, version: i16) -> Option<()> {
    macro_rules! call {
        ($req:expr, $resp:ty) => {{
            let _: $resp = conn.call(api, version, &$req);
        }};
    }
    match api {
        ApiKey::ApiVersions => call!(ApiVersionsRequest::default(), ApiVersionsResponse),
        ApiKey::Metadata => {
            let topics = (version >= 1)
                .then(|| vec![MetadataRequestTopic::default().with_name(Some(name("sampled")))]);
            let request = MetadataRequest::default().with_topics(topics);
            call!(request, MetadataResponse);
        }
        ApiKey::Produce => {
            let batch = common::batch(&[b"sample".to_vec()]);
            call!(produce_request("sampled", 1, &batch), ProduceResponse);
        }
        ApiKey::Fetch => call!(fetch_request("sampled", 0, 0), FetchResponse),
        ApiKey::ListOffsets => {
            let request = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    ListOffsetsTopic::default()
                        .with_name(name("sampled"))
                        .with_partitions(vec![
                            ListOffsetsPartition::default()
                                .with_partition_index(0)
                                .with_timestamp(-1),
                        ]),
                ]);
            call!(request, ListOffsetsResponse);
        }
        // Without a mechanism the handshake is refused (UNSUPPORTED_SASL_MECHANISM), and a
        // token without a handshake is ILLEGAL_SASL_STATE: answers all the same.
        ApiKey::SaslHandshake => call!(SaslHandshakeRequest::default(), SaslHandshakeResponse),
        ApiKey::SaslAuthenticate => {
            call!(SaslAuthenticateRequest::default(), SaslAuthenticateResponse);
        }
        ApiKey::CreateTopics => call!(CreateTopicsRequest::default(), CreateTopicsResponse),
        ApiKey::DeleteTopics => call!(DeleteTopicsRequest::default(), DeleteTopicsResponse),
        ApiKey::InitProducerId => {
            let request = InitProducerIdRequest::default().with_transaction_timeout_ms(60_000);
            call!(request, InitProducerIdResponse);
        }
        ApiKey::OffsetForLeaderEpoch => {
            let request = OffsetForLeaderEpochRequest::default();
            call!(request, OffsetForLeaderEpochResponse);
        }
        ApiKey::DescribeConfigs => {
            let request = DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("sampled")),
            ]);
            call!(request, DescribeConfigsResponse);
        }
        ApiKey::FindCoordinator
        | ApiKey::JoinGroup
        | ApiKey::SyncGroup
        | ApiKey::Heartbeat
        | ApiKey::LeaveGroup
        | ApiKey::OffsetCommit
        | ApiKey::OffsetFetch
        | ApiKey::DescribeGroups
        | ApiKey::ListGroups => group_sample(conn, api, version),
        _ => return None,
    }
    Some(())
}

/// JoinGroup: v4+, a new member hears MEMBER_ID_REQUIRED; before, an unknown member.
fn join_sample(group: GroupId, version: i16) -> JoinGroupRequest {
    let member = if version >= 4 { "" } else { "nobody" };
    JoinGroupRequest::default()
        .with_group_id(group)
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(if version >= 1 { 10_000 } else { -1 })
        .with_member_id(StrBytes::from_static_str(member))
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![
            join_group_request::JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range")),
        ])
}

/// OffsetCommit from outside any generation (accepted while the group has no members).
fn commit_sample(group: GroupId) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(group)
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(name("sampled"))
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_committed_offset(1),
                ]),
        ])
}

/// A small valid request of a group api (part G's): each is answered at once (an
/// unknown member, MEMBER_ID_REQUIRED, a commit outside any generation).
fn group_sample(conn: &mut Conn, api: ApiKey, version: i16) {
    macro_rules! call {
        ($req:expr, $resp:ty) => {{
            let _: $resp = conn.call(api, version, &$req);
        }};
    }
    let group = GroupId(StrBytes::from_static_str("sampled-group"));
    let nobody = StrBytes::from_static_str("nobody");
    match api {
        ApiKey::FindCoordinator => {
            let mut request = FindCoordinatorRequest::default();
            if version >= 4 {
                request.coordinator_keys = vec![group.0.clone()];
            } else {
                request.key = group.0.clone();
            }
            call!(request, FindCoordinatorResponse);
        }
        ApiKey::JoinGroup => call!(join_sample(group, version), JoinGroupResponse),
        ApiKey::SyncGroup => {
            let request = SyncGroupRequest::default()
                .with_group_id(group)
                .with_generation_id(1)
                .with_member_id(nobody);
            call!(request, SyncGroupResponse);
        }
        ApiKey::Heartbeat => {
            let request = HeartbeatRequest::default()
                .with_group_id(group)
                .with_generation_id(1)
                .with_member_id(nobody);
            call!(request, HeartbeatResponse);
        }
        ApiKey::LeaveGroup => {
            let mut request = LeaveGroupRequest::default().with_group_id(group);
            if version >= 3 {
                request.members =
                    vec![leave_group_request::MemberIdentity::default().with_member_id(nobody)];
            } else {
                request.member_id = nobody;
            }
            call!(request, LeaveGroupResponse);
        }
        ApiKey::OffsetCommit => call!(commit_sample(group), OffsetCommitResponse),
        ApiKey::OffsetFetch => {
            let topics = vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(name("sampled"))
                    .with_partition_indexes(vec![0]),
            ];
            // v2+ may ask for every partition committed (null topics).
            let topics = (version < 2 || version % 2 == 0).then_some(topics);
            let request = OffsetFetchRequest::default()
                .with_group_id(group)
                .with_topics(topics);
            call!(request, OffsetFetchResponse);
        }
        ApiKey::DescribeGroups => {
            let request = DescribeGroupsRequest::default().with_groups(vec![group]);
            call!(request, DescribeGroupsResponse);
        }
        ApiKey::ListGroups => call!(ListGroupsRequest::default(), ListGroupsResponse),
        _ => unreachable!("not a group api: {api:?}"),
    }
}

#[test]
fn every_advertised_api_and_version_answers() {
    let (_dir, server) = server(&[]);
    let mut conn = Conn::open(server.kafka_addr);
    let versions: ApiVersionsResponse =
        conn.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(versions.error_code, 0);
    let advertised: Vec<(ApiKey, i16, i16)> = versions
        .api_keys
        .iter()
        .map(|k| {
            (
                ApiKey::try_from(k.api_key).unwrap(),
                k.min_version,
                k.max_version,
            )
        })
        .collect();
    // librdkafka 2.0 turns features on by these exact versions.
    for (api, version) in [
        (ApiKey::Produce, 3),
        (ApiKey::Produce, 7),
        (ApiKey::Fetch, 4),
        (ApiKey::Fetch, 10),
        (ApiKey::InitProducerId, 0),
        (ApiKey::ListOffsets, 1),
    ] {
        assert!(
            advertised
                .iter()
                .any(|(a, min, max)| *a == api && (*min..=*max).contains(&version)),
            "{api:?} v{version} not advertised: {advertised:?}"
        );
    }
    let mut untested = Vec::new();
    for (api, min, max) in advertised {
        for version in min..=max {
            if sample(&mut conn, api, version).is_none() {
                untested.push((api, version));
            }
        }
    }
    assert!(
        untested.is_empty(),
        "advertised but without a sample request in this test: {untested:?}"
    );
}

#[test]
fn api_versions_above_the_newest_gets_the_kip_511_answer() {
    let (_dir, server) = server(&[]);
    let mut conn = Conn::open(server.kafka_addr);
    // A version from the future: its body is whatever; only the header is read.
    let correlation = conn.send(ApiKey::ApiVersions, 4, &ApiVersionsRequest::default());
    let _: ApiVersionsResponse = conn.recv(ApiKey::ApiVersions, 4, correlation);
    let mut header = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(99)
        .with_correlation_id(77)
        .encode(&mut header, 2)
        .unwrap();
    header.put_slice(&[0, 0, 0]);
    conn.send_raw(&header);
    let response: ApiVersionsResponse = conn.recv(ApiKey::ApiVersions, 0, 77);
    assert_eq!(response.error_code, 35);
    assert_eq!(response.api_keys.len(), 1);
    let own = &response.api_keys[0];
    assert_eq!(
        (own.api_key, own.min_version, own.max_version),
        (ApiKey::ApiVersions as i16, 0, 4)
    );
}

/// The bytes of a stored batch that its producer chose (not the base offset and leader
/// epoch the leader patches).
fn produced_part(batch: &[u8]) -> (&[u8], &[u8]) {
    (&batch[8..12], &batch[16..])
}

#[test]
fn produce_with_each_acks_then_fetch_returns_the_same_bytes() {
    let (_dir, server) = server(&[]);
    let mut conn = Conn::open(server.kafka_addr);
    create_topic(&mut conn, "orders", 1);
    let batches: Vec<Bytes> = (0..3)
        .map(|i| common::batch(&[format!("record {i}").into_bytes(), b"second".to_vec()]))
        .collect();
    let one: ProduceResponse = conn.call(
        ApiKey::Produce,
        7,
        &produce_request("orders", 1, &batches[0]),
    );
    let p = &one.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 0), "{one:?}");
    let all: ProduceResponse = conn.call(
        ApiKey::Produce,
        9,
        &produce_request("orders", -1, &batches[1]),
    );
    let p = &all.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 2), "{all:?}");
    // acks=0: no answer at all; the next answer is the next request's.
    conn.send(
        ApiKey::Produce,
        3,
        &produce_request("orders", 0, &batches[2]),
    );
    let metadata = MetadataRequest::default().with_topics(None);
    let _: MetadataResponse = conn.call(ApiKey::Metadata, 9, &metadata);
    for version in [4, 11, 12] {
        let deadline = Instant::now() + TIMEOUT;
        let records = loop {
            let fetched: FetchResponse =
                conn.call(ApiKey::Fetch, version, &fetch_request("orders", 0, 500));
            let p = &fetched.responses[0].partitions[0];
            assert_eq!(p.error_code, 0, "{fetched:?}");
            let records = p.records.clone().unwrap_or_default();
            if p.high_watermark == 6
                && records.len() == batches.iter().map(Bytes::len).sum::<usize>()
            {
                break records;
            }
            assert!(Instant::now() < deadline, "fetch v{version}: {fetched:?}");
        };
        let mut at = 0;
        for (i, batch) in batches.iter().enumerate() {
            let stored = &records[at..at + batch.len()];
            assert_eq!(produced_part(stored), produced_part(batch), "batch {i}");
            assert_eq!(
                i64::from_be_bytes(stored[..8].try_into().unwrap()),
                2 * i as i64
            );
            at += batch.len();
        }
    }
    // A fetch from the middle of a batch gets the batch that holds it.
    let fetched: FetchResponse = conn.call(ApiKey::Fetch, 11, &fetch_request("orders", 3, 0));
    let records = fetched.responses[0].partitions[0].records.clone().unwrap();
    assert_eq!(i64::from_be_bytes(records[..8].try_into().unwrap()), 2);
}

#[test]
fn a_fetch_at_the_end_waits_for_the_next_batch() {
    let (_dir, server) = server(&[]);
    let mut conn = Conn::open(server.kafka_addr);
    create_topic(&mut conn, "tail", 1);
    // Nothing there: the wait passes, the answer is empty.
    let empty: FetchResponse = conn.call(ApiKey::Fetch, 11, &fetch_request("tail", 0, 200));
    assert!(
        empty.responses[0].partitions[0]
            .records
            .as_ref()
            .is_none_or(Bytes::is_empty)
    );
    let waiting = conn.send(ApiKey::Fetch, 11, &fetch_request("tail", 0, 20_000));
    let started = Instant::now();
    let mut producer = Conn::open(server.kafka_addr);
    std::thread::sleep(Duration::from_millis(300));
    let batch = common::batch(&[b"late".to_vec()]);
    let _: ProduceResponse = producer.call(ApiKey::Produce, 7, &produce_request("tail", 1, &batch));
    let fetched: FetchResponse = conn.recv(ApiKey::Fetch, 11, waiting);
    let records = fetched.responses[0].partitions[0].records.clone().unwrap();
    assert_eq!(produced_part(&records), produced_part(&batch));
    // Answered by the produce, long before its 20 s wait.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn replies_leave_in_request_order_behind_a_long_poll() {
    let (_dir, server) = server(&[]);
    let mut conn = Conn::open(server.kafka_addr);
    create_topic(&mut conn, "quiet", 1);
    // A long poll that nothing answers, then a request answered at once: Kafka clients
    // match replies by order, so the second reply must wait for the first.
    let polling = conn.send(ApiKey::Fetch, 11, &fetch_request("quiet", 0, 1_500));
    let quick = conn.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let fetched: FetchResponse = conn.recv(ApiKey::Fetch, 11, polling);
    assert!(
        fetched.responses[0].partitions[0]
            .records
            .as_ref()
            .is_none_or(Bytes::is_empty)
    );
    let _: ApiVersionsResponse = conn.recv(ApiKey::ApiVersions, 3, quick);
}

#[test]
fn list_offsets_finds_earliest_latest_and_by_time() {
    let (_dir, server) = server(&[]);
    let mut conn = Conn::open(server.kafka_addr);
    create_topic(&mut conn, "times", 1);
    let t0 = common::now_ms() - 60_000;
    for (i, at) in [t0, t0 + 10_000, t0 + 20_000].into_iter().enumerate() {
        let batch = common::batch_at(at, &[format!("at {i}").into_bytes()]);
        let _: ProduceResponse =
            conn.call(ApiKey::Produce, 7, &produce_request("times", -1, &batch));
    }
    let lookup = |conn: &mut Conn, timestamp: i64, version: i16| -> i64 {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(name("times"))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(timestamp)
                            .with_current_leader_epoch(-1),
                    ]),
            ]);
        let response: ListOffsetsResponse = conn.call(ApiKey::ListOffsets, version, &request);
        let p = &response.topics[0].partitions[0];
        assert_eq!(p.error_code, 0, "{response:?}");
        p.offset
    };
    assert_eq!(lookup(&mut conn, -2, 1), 0);
    assert_eq!(lookup(&mut conn, -1, 6), 3);
    assert_eq!(lookup(&mut conn, t0 + 5_000, 1), 1);
    assert_eq!(lookup(&mut conn, t0 + 10_000, 4), 1);
    assert_eq!(lookup(&mut conn, t0 + 15_000, 6), 2);
    assert_eq!(lookup(&mut conn, t0 + 60_000, 2), -1);
}

#[test]
fn unknown_topics_are_created_unless_auto_creation_is_off() {
    let (_dir, lenient) = server(&[]);
    let created = kafka_metadata_creating(lenient.kafka_addr, "made-by-metadata");
    let topic = &created.topics[0];
    assert!(
        topic.error_code == 0 || topic.error_code == 5,
        "{created:?}"
    );
    let mut conn = Conn::open(lenient.kafka_addr);
    let batch = common::batch(&[b"made by produce".to_vec()]);
    let produced: ProduceResponse = conn.call(
        ApiKey::Produce,
        7,
        &produce_request("made-by-produce", 1, &batch),
    );
    assert_eq!(
        produced.responses[0].partition_responses[0].error_code, 0,
        "{produced:?}"
    );
    let (_strict_dir, strict) = server(&["--kafka-auto-create-topics", "false"]);
    let refused = kafka_metadata_creating(strict.kafka_addr, "not-made");
    assert_eq!(refused.topics[0].error_code, 3, "{refused:?}");
    let mut conn = Conn::open(strict.kafka_addr);
    let produced: ProduceResponse =
        conn.call(ApiKey::Produce, 7, &produce_request("not-made", 1, &batch));
    assert_eq!(
        produced.responses[0].partition_responses[0].error_code, 3,
        "{produced:?}"
    );
}

/// Metadata v9 of `topic`, allowing its creation.
fn kafka_metadata_creating(addr: SocketAddr, topic: &str) -> MetadataResponse {
    let mut conn = Conn::open(addr);
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name(topic))),
        ]))
        .with_allow_auto_topic_creation(true);
    conn.call(ApiKey::Metadata, 9, &request)
}

/// Whether a new connection still gets an ApiVersions answer.
fn serving(addr: SocketAddr) -> bool {
    let mut conn = Conn::open(addr);
    let versions: ApiVersionsResponse =
        conn.call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default());
    versions.error_code == 0
}

#[test]
fn bad_frames_close_the_connection_and_the_server_keeps_serving() {
    let (_dir, server) = server(&[]);
    let addr = server.kafka_addr;
    // An open connection with a request outstanding rides through the others' trouble.
    let mut bystander = Conn::open(addr);
    // An api key that does not exist.
    let mut conn = Conn::open(addr);
    conn.send_raw(&[0x03, 0xe7, 0, 0, 0, 0, 0, 1, 0xff, 0xff]);
    assert!(conn.closed(), "unknown api key");
    // An api that exists, but is not served (Kafka's LeaderAndIsr, a broker-to-broker api).
    let mut conn = Conn::open(addr);
    conn.send_raw(&[0, 4, 0, 0, 0, 0, 0, 1, 0xff, 0xff]);
    assert!(conn.closed(), "an api not served");
    // A served api at a version not served.
    let mut conn = Conn::open(addr);
    conn.send(ApiKey::Fetch, 13, &fetch_request("t", 0, 0));
    assert!(conn.closed(), "fetch v13");
    // A truncated body.
    let mut conn = Conn::open(addr);
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(7)
        .with_correlation_id(1)
        .encode(&mut body, 1)
        .unwrap();
    produce_request("t", 1, &common::batch(&[b"x".to_vec()]))
        .encode(&mut body, 7)
        .unwrap();
    conn.send_raw(&body[..body.len() - 20]);
    assert!(conn.closed(), "truncated produce");
    // A forged array length: a Metadata request whose topics claim i32::MAX entries.
    let mut conn = Conn::open(addr);
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Metadata as i16)
        .with_request_api_version(4)
        .with_correlation_id(1)
        .encode(&mut body, 1)
        .unwrap();
    body.put_i32(i32::MAX);
    body.put_slice(&[0; 16]);
    conn.send_raw(&body);
    assert!(conn.closed(), "forged array length");
    // Frame sizes out of bounds: 200 MiB, negative, zero.
    for size in [200 << 20, -5, 0] {
        let mut conn = Conn::open(addr);
        conn.stream.write_all(&i32::to_be_bytes(size)).unwrap();
        conn.stream.write_all(&[0; 64]).unwrap();
        assert!(conn.closed(), "frame size {size}");
    }
    // A header shorter than its fields.
    let mut conn = Conn::open(addr);
    conn.send_raw(&[0, 3, 0]);
    assert!(conn.closed(), "short header");
    assert!(serving(addr));
    let _: ApiVersionsResponse =
        bystander.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
}

/// The Kafka Metadata of `topic` from `addr`.
fn kafka_metadata(addr: SocketAddr, topic: &str) -> MetadataResponse {
    let mut conn = Conn::open(addr);
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name(topic))),
        ]))
        .with_allow_auto_topic_creation(false);
    conn.call(ApiKey::Metadata, 12, &request)
}

#[test]
fn a_cluster_names_every_broker_and_a_follower_refuses_a_produce() {
    let mut cluster = Cluster::start(3, Links::Direct);
    cluster.wait_for_controller(TIMEOUT);
    let kafka: Vec<SocketAddr> = (0..3).map(|n| cluster.kafka_addr(n)).collect();
    let mut conn = Conn::open(kafka[0]);
    let request = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name("replicated"))
                .with_num_partitions(1)
                .with_replication_factor(3),
        ])
        .with_timeout_ms(30_000);
    let created: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, 7, &request);
    assert_eq!(created.topics[0].error_code, 0, "{created:?}");
    let (metadata, _) = cluster.wait_for("every broker and a leader", TIMEOUT, |_| {
        let metadata = kafka_metadata(kafka[1], "replicated");
        let leader = metadata.topics[0].partitions.first().map(|p| p.leader_id.0);
        if metadata.brokers.len() == 3 && leader.is_some_and(|l| l >= 0) {
            Ok(metadata)
        } else {
            Err(format!("{metadata:?}"))
        }
    });
    let mut brokers: Vec<(i32, String, i32)> = metadata
        .brokers
        .iter()
        .map(|b| (b.node_id.0, b.host.to_string(), b.port))
        .collect();
    brokers.sort();
    let expected: Vec<(i32, String, i32)> = (0..3)
        .map(|n| {
            (
                n,
                "127.0.0.1".to_owned(),
                i32::from(kafka[n as usize].port()),
            )
        })
        .collect();
    assert_eq!(brokers, expected);
    assert!(metadata.controller_id.0 >= 0);
    let partition = &metadata.topics[0].partitions[0];
    let leader = partition.leader_id.0;
    let follower = (0..3).find(|n| *n != leader).unwrap();
    let batch = common::batch(&[b"to a follower".to_vec()]);
    let mut conn = Conn::open(kafka[follower as usize]);
    let refused: ProduceResponse = conn.call(
        ApiKey::Produce,
        10,
        &produce_request("replicated", -1, &batch),
    );
    let p = &refused.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 6, "{refused:?}");
    assert_eq!(p.current_leader.leader_id.0, leader, "{refused:?}");
    assert_eq!(p.current_leader.leader_epoch, partition.leader_epoch);
    let endpoint = refused
        .node_endpoints
        .iter()
        .find(|e| e.node_id.0 == leader)
        .unwrap();
    assert_eq!(endpoint.port, i32::from(kafka[leader as usize].port()));
    // The leader takes it.
    let mut conn = Conn::open(kafka[leader as usize]);
    let taken: ProduceResponse = conn.call(
        ApiKey::Produce,
        10,
        &produce_request("replicated", -1, &batch),
    );
    assert_eq!(
        taken.responses[0].partition_responses[0].error_code, 0,
        "{taken:?}"
    );
}

/// The superuser of the SASL tests' server.
const ADMIN_PASSWORD: &str = "admin-password";

/// A server that requires SASL, with the superuser `admin` from a `--superuser-file`.
fn sasl_server() -> (tempfile::TempDir, Shardlogd) {
    let dir = common::data_dir();
    let file = dir.path().join("superuser");
    std::fs::write(&file, format!("admin:{ADMIN_PASSWORD}")).unwrap();
    let owner_only = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(&file, owner_only).unwrap();
    let file = file.display().to_string();
    let data = dir.path().join("data");
    let args = [
        "--authentication",
        "sasl",
        "--superuser-file",
        file.as_str(),
    ];
    let server = Shardlogd::start(&data, &args).unwrap();
    (dir, server)
}

/// A SCRAM exchange on `conn` (SaslHandshake v1, SaslAuthenticate v`version`); the error
/// code of the last step (0: authenticated).
fn scram(conn: &mut Conn, version: i16, mechanism: Mechanism, password: &str) -> i16 {
    let handshake =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism.name()));
    let answer: SaslHandshakeResponse = conn.call(ApiKey::SaslHandshake, 1, &handshake);
    assert_eq!(answer.error_code, 0);
    let nonce = new_nonce().unwrap();
    let (client, first) = ClientExchange::start(mechanism, "admin", password, &nonce).unwrap();
    let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(first));
    let answer: SaslAuthenticateResponse = conn.call(ApiKey::SaslAuthenticate, version, &request);
    if answer.error_code != 0 {
        return answer.error_code;
    }
    let (client, last) = client.answer(&answer.auth_bytes).unwrap();
    let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(last));
    let answer: SaslAuthenticateResponse = conn.call(ApiKey::SaslAuthenticate, version, &request);
    if answer.error_code == 0 {
        client.verify(&answer.auth_bytes).unwrap();
    }
    answer.error_code
}

/// Waits until the bootstrap superuser exists (created as the node starts serving).
fn wait_for_superuser(server: &Shardlogd) {
    let started = Instant::now();
    while scram(
        &mut Conn::open(server.kafka_addr),
        2,
        Mechanism::Sha256,
        ADMIN_PASSWORD,
    ) != 0
    {
        assert!(
            started.elapsed() < TIMEOUT,
            "the superuser never authenticated"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A wrong password, garbage tokens, PLAIN without TLS and a truncated exchange are
/// refused, and the server keeps serving.
#[test]
fn sasl_refuses_wrong_passwords_garbage_plain_without_tls_and_truncated_exchanges() {
    let (_dir, server) = sasl_server();
    wait_for_superuser(&server);
    let metadata = MetadataRequest::default().with_topics(Some(Vec::new()));
    // A wrong password: SASL_AUTHENTICATION_FAILED, and nothing else is served after it.
    let mut conn = Conn::open(server.kafka_addr);
    assert_eq!(scram(&mut conn, 2, Mechanism::Sha256, "wrong"), 58);
    conn.send(ApiKey::Metadata, 9, &metadata);
    assert!(conn.closed());
    // Garbage as the first token.
    let mut conn = Conn::open(server.kafka_addr);
    let handshake =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("SCRAM-SHA-512"));
    let _: SaslHandshakeResponse = conn.call(ApiKey::SaslHandshake, 1, &handshake);
    let request = SaslAuthenticateRequest::default()
        .with_auth_bytes(Bytes::from_static(b"\xff\x00n,,n=admin"));
    let answer: SaslAuthenticateResponse = conn.call(ApiKey::SaslAuthenticate, 1, &request);
    assert_eq!(answer.error_code, 58);
    // PLAIN is not offered without TLS.
    let mut conn = Conn::open(server.kafka_addr);
    let handshake =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"));
    let answer: SaslHandshakeResponse = conn.call(ApiKey::SaslHandshake, 1, &handshake);
    assert_eq!(answer.error_code, 33);
    let offered: Vec<&str> = answer.mechanisms.iter().map(|m| m.as_str()).collect();
    assert_eq!(offered, ["SCRAM-SHA-256", "SCRAM-SHA-512"]);
    // A truncated exchange: the client leaves after its first token.
    let mut conn = Conn::open(server.kafka_addr);
    let handshake =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("SCRAM-SHA-256"));
    let _: SaslHandshakeResponse = conn.call(ApiKey::SaslHandshake, 1, &handshake);
    let request =
        SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from_static(b"n,,n=admin,r=abc"));
    let answer: SaslAuthenticateResponse = conn.call(ApiKey::SaslAuthenticate, 1, &request);
    assert_eq!(answer.error_code, 0);
    drop(conn);
    // The server still serves.
    let mut conn = Conn::open(server.kafka_addr);
    assert_eq!(scram(&mut conn, 2, Mechanism::Sha256, ADMIN_PASSWORD), 0);
}

/// With `--authentication sasl`: before authenticating, ApiVersions and the SASL apis
/// are answered and anything else closes the connection; SCRAM-SHA-256 and -512 (every
/// SaslAuthenticate version, and SaslHandshake v0's bare tokens) open the connection to
/// every api.
#[test]
fn sasl_gates_every_request_until_a_scram_exchange_succeeds() {
    let (_dir, server) = sasl_server();
    let metadata = MetadataRequest::default().with_topics(Some(Vec::new()));
    wait_for_superuser(&server);
    for (version, mechanism) in [
        (0, Mechanism::Sha256),
        (1, Mechanism::Sha512),
        (2, Mechanism::Sha512),
    ] {
        let mut conn = Conn::open(server.kafka_addr);
        let versions: ApiVersionsResponse =
            conn.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        assert!(
            versions
                .api_keys
                .iter()
                .any(|k| k.api_key == ApiKey::SaslAuthenticate as i16)
        );
        assert_eq!(scram(&mut conn, version, mechanism, ADMIN_PASSWORD), 0);
        let answer: MetadataResponse = conn.call(ApiKey::Metadata, 9, &metadata);
        assert_eq!(answer.brokers.len(), 1);
    }
    // Unauthenticated: Metadata closes the connection.
    let mut conn = Conn::open(server.kafka_addr);
    conn.send(ApiKey::Metadata, 9, &metadata);
    assert!(conn.closed());
    // SaslHandshake v0: the tokens go bare (a size, then the token), both ways.
    let mut conn = Conn::open(server.kafka_addr);
    let handshake =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("SCRAM-SHA-256"));
    let answer: SaslHandshakeResponse = conn.call(ApiKey::SaslHandshake, 0, &handshake);
    assert_eq!(answer.error_code, 0);
    let nonce = new_nonce().unwrap();
    let (client, first) =
        ClientExchange::start(Mechanism::Sha256, "admin", ADMIN_PASSWORD, &nonce).unwrap();
    conn.send_raw(&first);
    let server_first = conn.recv_raw().unwrap();
    let (client, last) = client.answer(&server_first).unwrap();
    conn.send_raw(&last);
    client.verify(&conn.recv_raw().unwrap()).unwrap();
    let answer: MetadataResponse = conn.call(ApiKey::Metadata, 9, &metadata);
    assert_eq!(answer.brokers.len(), 1);
}
