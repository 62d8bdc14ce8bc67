//! Our batches are Kafka's RecordBatch v2: the `kafka-protocol` crate's codec (an
//! independent implementation of Kafka's format) decodes what `BatchBuilder` writes, and
//! our decoder reads what it writes, field by field.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use shardlog_engine::batch::{self, BatchHeader};
use shardlog_engine::record::{BatchBuilder, ProducerFields, RecordIter};
use shardlog_engine::{LeaderEpoch, Offset, TimestampMs};

#[test]
fn kafka_decodes_our_batches() {
    let mut builder = BatchBuilder::new();
    builder.set_producer(ProducerFields {
        producer_id: 77,
        producer_epoch: 2,
        base_sequence: 10,
    });
    builder.push(
        TimestampMs(1_700_000_000_000),
        Some(b"k0"),
        Some(b"v0"),
        &[(b"h", Some(b"x"))],
    );
    builder.push(TimestampMs(1_700_000_000_005), None, None, &[]);
    builder.push(
        TimestampMs(1_699_999_999_999),
        Some(b""),
        Some(&[0u8, 255, 7]),
        &[(b"n", None)],
    );
    let mut bytes = builder.finish();
    batch::patch_base(&mut bytes, Offset(100), LeaderEpoch(3));

    let set = RecordBatchDecoder::decode(&mut Bytes::from(bytes)).expect("kafka decodes our batch");
    assert_eq!(set.version, 2);
    assert_eq!(set.compression, Compression::None);
    let offsets: Vec<i64> = set.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [100, 101, 102]);
    let first = &set.records[0];
    assert_eq!(
        (first.producer_id, first.producer_epoch, first.sequence),
        (77, 2, 10)
    );
    assert_eq!(first.partition_leader_epoch, 3);
    assert_eq!(first.timestamp, 1_700_000_000_000);
    assert_eq!(first.key.as_deref(), Some(&b"k0"[..]));
    assert_eq!(
        first.headers.get(&StrBytes::from_static_str("h")),
        Some(&Some(Bytes::from_static(b"x")))
    );
    assert_eq!(set.records[1].key, None);
    assert_eq!(set.records[1].value, None);
    assert_eq!(set.records[2].timestamp, 1_699_999_999_999);
    assert_eq!(set.records[2].value.as_deref(), Some(&[0u8, 255, 7][..]));
    assert_eq!(
        set.records[2].headers.get(&StrBytes::from_static_str("n")),
        Some(&None)
    );
}

#[test]
fn we_decode_kafka_batches() {
    let record = |i: i64, key: Option<&'static [u8]>, value: Option<&'static [u8]>| {
        let mut headers = IndexMap::new();
        if i == 1 {
            headers.insert(
                StrBytes::from_static_str("trace"),
                Some(Bytes::from_static(b"abc")),
            );
        }
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 9,
            producer_id: 5,
            producer_epoch: 1,
            timestamp_type: TimestampType::Creation,
            offset: 40 + i,
            sequence: 20 + i32::try_from(i).expect("small"),
            timestamp: 1000 + 10 * i,
            key: key.map(Bytes::from_static),
            value: value.map(Bytes::from_static),
            headers,
        }
    };
    let records = [
        record(0, Some(b"a"), Some(b"1")),
        record(1, None, Some(b"two")),
        record(2, Some(b"c"), None),
    ];
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut out, &records, &options).expect("kafka encodes");

    let header: BatchHeader = batch::validate_with_records(&out).expect("we accept kafka's batch");
    assert_eq!(header.base_offset, Offset(40));
    assert_eq!(header.record_count, 3);
    assert_eq!(header.leader_epoch, LeaderEpoch(9));
    assert_eq!(
        (
            header.producer_id,
            header.producer_epoch,
            header.base_sequence
        ),
        (5, 1, 20)
    );
    assert_eq!(header.max_timestamp, TimestampMs(1020));
    let decoded: Vec<_> = RecordIter::new(&header, &out)
        .collect::<Result<_, _>>()
        .expect("records parse");
    assert_eq!(decoded.len(), 3);
    assert_eq!(decoded[1].offset(&header), Offset(41));
    assert_eq!(decoded[1].timestamp(&header), TimestampMs(1010));
    assert_eq!(decoded[1].key, None);
    assert_eq!(decoded[1].value, Some(&b"two"[..]));
    assert_eq!(
        decoded[1].headers().collect::<Vec<_>>(),
        vec![(&b"trace"[..], Some(&b"abc"[..]))]
    );
    assert_eq!(decoded[2].value, None);
}
