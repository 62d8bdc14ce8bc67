//! Fuzz target: a frame from untrusted bytes, decoded the way the server and the client do
//! it. Arbitrary bytes are copied into an aligned buffer (as the receive path reads them);
//! `FrameHeader::parse` must never panic, and what it accepts must hold together:
//! - its lengths fit the buffer and the limits; `parse_head` on the first 24 bytes agrees;
//! - `wire::read_frame` over the same bytes as a stream reads the same header, meta and
//!   data;
//! - the meta validates as each request and response message (the frame's own api first,
//!   then every other type, since any bytes may claim any api): `access_meta` (in place)
//!   and `decode_meta` (copy) agree, and a decoded message re-encodes into a frame that
//!   decodes to the same value;
//! - the data region of a Produce frame goes through `batch::validate_with_records` and
//!   its records through `RecordIter`; the data region of any frame is walked as fetched
//!   batches (`Fetched::batches`, the client's check of a fetch reply).
#![no_main]

use std::fmt::Debug;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rkyv::api::high::{HighDeserializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::util::AlignedVec;
use shardlog_engine::batch::{self, BatchHeader, Compression};
use shardlog_engine::record::RecordIter;
use shardlog_net::api::{
    AclRequest, AllocateProducerIdsRequest, AllocateProducerIdsResponse, Api, BindShardRequest,
    BindShardResponse, ControllerRequest, CreateTopicRequest, DeleteTopicRequest,
    DeleteUserRequest, DescribeGroupsRequest, DescribeGroupsResponse, DrainNodeRequest,
    ErrorResponse, FetchRequest, FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    GroupResponse, HeartbeatRequest, InitProducerIdRequest, InitProducerIdResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, ListAclsRequest, ListAclsResponse,
    ListGroupsRequest, ListGroupsResponse, ListOffsetsRequest, ListOffsetsResponse,
    ListReassignmentsRequest, ListReassignmentsResponse, ListUsersRequest, ListUsersResponse,
    MetadataRequest, MetadataResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetFetchRequest, OffsetFetchResponse, ProduceRequest, ProduceResponse,
    ReassignPartitionRequest, RebalanceReplicasRequest, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse, SyncGroupRequest,
    SyncGroupResponse, TopicResponse, UpsertUserRequest, valid_topic_name,
};
use shardlog_net::client::Fetched;
use shardlog_net::frame::{
    FrameHeader, HEADER_SIZE, META_BYTES_MAX, access_meta, decode_meta, encode_head,
};
use shardlog_net::wire::read_frame;

/// Frames larger than the input by more than this are not fed to the stream reader: it
/// would allocate their full size before finding the stream short (up to 64 MiB a run).
const STREAM_SLACK: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let mut buffer = AlignedVec::<16>::with_capacity(data.len());
    buffer.extend_from_slice(data);
    stream_never_panics(&buffer);
    let Ok(header) = FrameHeader::parse(&buffer) else {
        return;
    };
    assert!(header.frame_bytes <= buffer.len(), "frame past the buffer");
    assert!(header.meta_len <= META_BYTES_MAX);
    assert!(
        header.data_start() <= header.frame_bytes,
        "meta past the frame"
    );
    let head: &[u8; HEADER_SIZE] = buffer[..HEADER_SIZE].try_into().expect("24 bytes");
    assert_eq!(FrameHeader::parse_head(head), Ok(header));
    let frame = &buffer[..header.frame_bytes];
    assert_eq!(header.meta(frame).len(), header.meta_len);
    stream_agrees(&header, frame);

    // No wildcard arm: a new api must be added here (CI compiles this target).
    match Api::from_u16(header.api) {
        Some(Api::Produce) => produce(&header, frame),
        Some(Api::Replicate) => replicate(&header, frame),
        Some(Api::Metadata) => validates::<MetadataRequest>(&header, frame),
        Some(Api::CreateTopic) => validates::<CreateTopicRequest>(&header, frame),
        Some(Api::DeleteTopic) => validates::<DeleteTopicRequest>(&header, frame),
        Some(Api::Fetch) => validates::<FetchRequest>(&header, frame),
        Some(Api::ListOffsets) => validates::<ListOffsetsRequest>(&header, frame),
        Some(Api::Controller) => validates::<ControllerRequest>(&header, frame),
        Some(Api::InitProducerId) => validates::<InitProducerIdRequest>(&header, frame),
        Some(Api::AllocateProducerIds) => validates::<AllocateProducerIdsRequest>(&header, frame),
        Some(Api::FindCoordinator) => validates::<FindCoordinatorRequest>(&header, frame),
        Some(Api::JoinGroup) => validates::<JoinGroupRequest>(&header, frame),
        Some(Api::SyncGroup) => validates::<SyncGroupRequest>(&header, frame),
        Some(Api::Heartbeat) => validates::<HeartbeatRequest>(&header, frame),
        Some(Api::LeaveGroup) => validates::<LeaveGroupRequest>(&header, frame),
        Some(Api::OffsetCommit) => validates::<OffsetCommitRequest>(&header, frame),
        Some(Api::OffsetFetch) => validates::<OffsetFetchRequest>(&header, frame),
        Some(Api::DescribeGroups) => validates::<DescribeGroupsRequest>(&header, frame),
        Some(Api::ListGroups) => validates::<ListGroupsRequest>(&header, frame),
        Some(Api::ReassignPartition) => validates::<ReassignPartitionRequest>(&header, frame),
        Some(Api::ListReassignments) => validates::<ListReassignmentsRequest>(&header, frame),
        Some(Api::DrainNode) => validates::<DrainNodeRequest>(&header, frame),
        Some(Api::RebalanceReplicas) => validates::<RebalanceReplicasRequest>(&header, frame),
        Some(Api::SaslHandshake) => validates::<SaslHandshakeRequest>(&header, frame),
        Some(Api::SaslAuthenticate) => validates::<SaslAuthenticateRequest>(&header, frame),
        Some(Api::UpsertUser) => validates::<UpsertUserRequest>(&header, frame),
        Some(Api::DeleteUser) => validates::<DeleteUserRequest>(&header, frame),
        Some(Api::ListUsers) => validates::<ListUsersRequest>(&header, frame),
        Some(Api::CreateAcl | Api::DeleteAcl) => validates::<AclRequest>(&header, frame),
        Some(Api::ListAcls) => validates::<ListAclsRequest>(&header, frame),
        Some(Api::BindShard) => validates::<BindShardRequest>(&header, frame),
        None => {}
    }
    every_message(&header, frame);
    fetched_batches(header.data(frame));
});

/// The receiving node's path for a Replicate frame: meta, then the replicator's envelope.
fn replicate(header: &FrameHeader, frame: &[u8]) {
    let mut meta = rkyv::util::AlignedVec::<16>::new();
    meta.extend_from_slice(header.meta(frame));
    let frame = shardlog_net::wire::Frame {
        header: *header,
        meta,
        data: bytes::BytesMut::from(header.data(frame)),
    };
    let _ = shardlog_net::peer::decode(frame);
}

/// The server's path for a Produce frame: the request, the topic name, the batch.
fn produce(header: &FrameHeader, frame: &[u8]) {
    if let Some(request) = check::<ProduceRequest>(header, frame) {
        let _ = valid_topic_name(&request.topic);
    }
    let data = header.data(frame);
    let Ok(batch_header) = batch::validate_with_records(data) else {
        return;
    };
    assert_eq!(batch::validate(data), Ok(batch_header));
    if batch_header.compression() == Compression::None {
        let mut records = 0_u64;
        for record in RecordIter::new(&batch_header, data) {
            record.expect("a validated batch has valid records");
            records += 1;
        }
        assert_eq!(records, u64::from(batch_header.record_count));
    }
}

/// Every message type on any frame, whatever its api says.
fn every_message(header: &FrameHeader, frame: &[u8]) {
    macro_rules! each {
        ($($message:ty),* $(,)?) => {
            $(validates::<$message>(header, frame);)*
        };
    }
    each!(
        MetadataRequest,
        CreateTopicRequest,
        DeleteTopicRequest,
        ProduceRequest,
        FetchRequest,
        ListOffsetsRequest,
        ControllerRequest,
        InitProducerIdRequest,
        AllocateProducerIdsRequest,
        FindCoordinatorRequest,
        JoinGroupRequest,
        SyncGroupRequest,
        HeartbeatRequest,
        LeaveGroupRequest,
        OffsetCommitRequest,
        OffsetFetchRequest,
        DescribeGroupsRequest,
        ListGroupsRequest,
        ReassignPartitionRequest,
        ListReassignmentsRequest,
        DrainNodeRequest,
        RebalanceReplicasRequest,
        SaslHandshakeRequest,
        SaslAuthenticateRequest,
        UpsertUserRequest,
        DeleteUserRequest,
        ListUsersRequest,
        AclRequest,
        ListAclsRequest,
        BindShardRequest,
        MetadataResponse,
        TopicResponse,
        ProduceResponse,
        FetchResponse,
        ListOffsetsResponse,
        ErrorResponse,
        InitProducerIdResponse,
        AllocateProducerIdsResponse,
        FindCoordinatorResponse,
        JoinGroupResponse,
        SyncGroupResponse,
        GroupResponse,
        OffsetCommitResponse,
        OffsetFetchResponse,
        DescribeGroupsResponse,
        ListGroupsResponse,
        ListReassignmentsResponse,
        ListUsersResponse,
        SaslHandshakeResponse,
        SaslAuthenticateResponse,
        ListAclsResponse,
        BindShardResponse,
    );
}

/// [`check`], for a message whose value is not needed.
fn validates<T>(header: &FrameHeader, frame: &[u8])
where
    T: rkyv::Archive + PartialEq + Debug + shardlog_net::frame::Meta,
    T::Archived: rkyv::Portable
        + for<'b> CheckBytes<HighValidator<'b, rancor::Error>>
        + rkyv::Deserialize<T, HighDeserializer<rancor::Error>>,
{
    let _ = check::<T>(header, frame);
}

/// Validates the meta as `T` in place and by copy (they must agree); a message that
/// decodes must re-encode into a frame that decodes to the same value.
fn check<T>(header: &FrameHeader, frame: &[u8]) -> Option<T>
where
    T: rkyv::Archive + PartialEq + Debug + shardlog_net::frame::Meta,
    T::Archived: rkyv::Portable
        + for<'b> CheckBytes<HighValidator<'b, rancor::Error>>
        + rkyv::Deserialize<T, HighDeserializer<rancor::Error>>,
{
    let accessed = access_meta::<T::Archived>(header, frame).is_ok();
    let decoded = decode_meta::<T>(header, frame);
    assert_eq!(
        accessed,
        decoded.is_ok(),
        "access_meta and decode_meta disagree on {}",
        std::any::type_name::<T>()
    );
    let value = decoded.ok()?;
    let mut head = Vec::new();
    encode_head(
        &mut head,
        header.api,
        header.version,
        header.correlation,
        header.flags,
        &value,
        0,
    )
    .expect("a decoded message re-encodes");
    let mut again = AlignedVec::<16>::with_capacity(head.len());
    again.extend_from_slice(&head);
    let again_header = FrameHeader::parse(&again).expect("a re-encoded frame parses");
    let round_trip = decode_meta::<T>(&again_header, &again).expect("a re-encoded frame decodes");
    assert_eq!(round_trip, value);
    Some(value)
}

/// `read_frame` over a stream of the frame's bytes sees what `parse` saw.
fn stream_agrees(header: &FrameHeader, frame: &[u8]) {
    let mut stream = futures::io::Cursor::new(frame);
    let read = futures::executor::block_on(read_frame(&mut stream))
        .expect("the stream reader accepts a frame parse accepted")
        .expect("a whole frame is not the end of the stream");
    assert_eq!(read.header, *header);
    assert_eq!(&read.meta[..], header.meta(frame));
    assert_eq!(&read.data[..], header.data(frame));
}

/// `read_frame` over any bytes (short or not) returns, never panics.
fn stream_never_panics(bytes: &[u8]) {
    if let Some(prefix) = bytes.get(..4) {
        let claimed = u32::from_le_bytes(prefix.try_into().expect("4 bytes")) as usize;
        if claimed > bytes.len() + STREAM_SLACK {
            return;
        }
    }
    let mut stream = futures::io::Cursor::new(bytes);
    let _ = futures::executor::block_on(read_frame(&mut stream));
}

/// The client's walk over a fetch reply's data: it yields every whole valid batch the
/// data starts with (found here by an independent walk), then stops at the first bad one.
fn fetched_batches(data: &[u8]) {
    let mut valid = Vec::new();
    let mut rest = data;
    while let Ok(batch_header) = BatchHeader::parse(rest) {
        let Some(bytes) = rest.get(..batch_header.size as usize) else {
            break;
        };
        if batch::validate(bytes).is_err() {
            break;
        }
        valid.push(bytes);
        rest = &rest[bytes.len()..];
    }
    let fetched = Fetched {
        high_watermark: 0,
        log_start: 0,
        next_offset: 0,
        data: Bytes::copy_from_slice(data),
    };
    let mut yielded = fetched.batches();
    for (index, expected) in valid.iter().enumerate() {
        let item = yielded.next();
        let Some(Ok((batch_header, bytes))) = item else {
            panic!(
                "Fetched::batches rejected valid batch {index} of {}: {item:?}",
                valid.len()
            );
        };
        assert_eq!(bytes, *expected, "batch {index} differs");
        assert_eq!(batch::validate(bytes), Ok(batch_header));
    }
    if rest.is_empty() {
        assert!(yielded.next().is_none(), "a batch after the data's end");
    } else {
        assert!(
            matches!(yielded.next(), Some(Err(_))),
            "bytes after the valid batches yield no error"
        );
    }
}
