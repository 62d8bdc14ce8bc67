//! Compressed batches, as a Kafka client sends them: the `kafka-protocol` crate's record
//! encoder (an independent implementation of Kafka's clients' format, with its own gzip,
//! snappy, lz4 and zstd codecs) makes one batch per codec, and the engine stores it and
//! reads it back byte for byte (only the base offset and leader epoch patched, as for any
//! batch), before and after a reopen (recovery scans it from disk). The outer batch is
//! checked and the payload never decompressed: a batch whose header does not add up is
//! refused, a payload that is garbage under a valid CRC is stored as the client sent it.

use bytes::{Bytes, BytesMut};
use futures::executor::block_on;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use shardlog_engine::batch::{self, BATCH_HEADER_SIZE, Corruption};
use shardlog_engine::record::BatchBuilder;
use shardlog_engine::{
    EngineConfig, Error, LeaderEpoch, Offset, PartitionLog, SimStorage, TimestampMs,
};

const CODECS: [(Compression, u8); 4] = [
    (Compression::Gzip, 1),
    (Compression::Snappy, 2),
    (Compression::Lz4, 3),
    (Compression::Zstd, 4),
];
const RECORDS: i64 = 20;

/// `RECORDS` records a client would send, compressible (repeated text) and with keys,
/// null values and headers.
fn client_records(codec: u8) -> Vec<Record> {
    (0..RECORDS)
        .map(|i| {
            let mut headers = IndexMap::new();
            headers.insert(
                StrBytes::from_string(format!("h{i}")),
                Some(Bytes::from(format!("codec {codec}"))),
            );
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i,
                // The encoder groups records whose offset - sequence agree: base sequence -1.
                sequence: i32::try_from(i).expect("small") - 1,
                timestamp: 1_700_000_000_000 + i,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: (i % 7 != 3).then(|| Bytes::from(format!("value {i} ").repeat(40))),
                headers,
            }
        })
        .collect()
}

fn client_batch(compression: Compression, codec: u8) -> Vec<u8> {
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut out, &client_records(codec), &options).expect("encode");
    out.to_vec()
}

fn plain_batch(value: &[u8]) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    builder.push(TimestampMs(5), Some(b"k"), Some(value), &[]);
    builder.finish()
}

/// Every batch read from `from` on, as bytes.
async fn read_all(log: &PartitionLog<SimStorage>, from: Offset) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut next = from;
    while next < log.log_end() {
        let read = log.read(next, 1 << 20).await.expect("read");
        out.extend(read.batches().map(|(_, bytes)| bytes.to_vec()));
        next = read.next_offset;
    }
    out
}

#[test]
fn each_codec_is_stored_and_read_back_byte_for_byte() {
    let storage = SimStorage::new();
    let dir = std::path::Path::new("/compressed/topic/0");
    let mut sent = Vec::new();
    block_on(async {
        let log = PartitionLog::open(storage.clone(), dir, EngineConfig::default())
            .await
            .expect("open");
        for (compression, codec) in CODECS {
            let bytes = client_batch(compression, codec);
            let header = batch::validate_produced(&bytes).expect("a client's compressed batch");
            assert_eq!(header.compression(), batch::Compression::Codec(codec));
            // Compressed: the payload is far smaller than the records' values.
            assert!(bytes.len() < 4000, "codec {codec}: {} bytes", bytes.len());
            log.append(BytesMut::from(&bytes[..]), LeaderEpoch(2))
                .await
                .expect("append");
            sent.push(bytes);
            // An uncompressed batch between, so offsets after a compressed one are right.
            let plain = plain_batch(&[codec; 10]);
            log.append(BytesMut::from(&plain[..]), LeaderEpoch(2))
                .await
                .expect("append");
            sent.push(plain);
        }
        check_stored(&read_all(&log, Offset(0)).await, &sent);
        log.close().await.expect("close");
        let log = PartitionLog::open(storage.clone(), dir, EngineConfig::default())
            .await
            .expect("reopen");
        assert_eq!(log.log_end(), Offset(4 * (RECORDS as u64 + 1)));
        check_stored(&read_all(&log, Offset(0)).await, &sent);
        // A read from inside a compressed batch returns the whole batch.
        let inside = read_all(&log, Offset(5)).await;
        assert_eq!(inside.len(), sent.len());
        log.close().await.expect("close");
    });
}

/// `stored` are the `sent` batches with offsets and epoch 2 patched in, the rest byte for
/// byte; Kafka's decoder reads the records of each compressed one at their offsets.
fn check_stored(stored: &[Vec<u8>], sent: &[Vec<u8>]) {
    assert_eq!(stored.len(), sent.len());
    let mut base = 0u64;
    for (stored, sent) in stored.iter().zip(sent) {
        let mut expected = sent.clone();
        batch::patch_base(&mut expected, Offset(base), LeaderEpoch(2));
        assert_eq!(stored, &expected, "the batch at offset {base}");
        let header = batch::validate(stored).expect("stored batch valid");
        if let batch::Compression::Codec(codec) = header.compression() {
            let set = RecordBatchDecoder::decode(&mut Bytes::from(stored.clone()))
                .expect("kafka decodes what we stored");
            let expected = client_records(codec);
            assert_eq!(set.records.len(), expected.len());
            for (i, (got, want)) in set.records.iter().zip(&expected).enumerate() {
                assert_eq!(
                    got.offset,
                    i64::try_from(base).expect("small") + want.offset
                );
                assert_eq!(
                    (&got.key, &got.value),
                    (&want.key, &want.value),
                    "record {i}"
                );
                assert_eq!(got.headers, want.headers);
                assert_eq!(got.timestamp, want.timestamp);
            }
        }
        base = header.next_offset().0;
    }
}

/// Sets a header field and recomputes the CRC: the batch is valid as far as bytes go.
fn with_field(mut bytes: Vec<u8>, at: usize, value: &[u8]) -> Vec<u8> {
    bytes[at..at + value.len()].copy_from_slice(value);
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    bytes
}

#[test]
fn a_compressed_batch_whose_header_does_not_add_up_is_refused() {
    let good = client_batch(Compression::Lz4, 3);
    assert!(batch::validate_produced(&good).is_ok());
    let refused = |bytes: &[u8], field: &str| match batch::validate_produced(bytes) {
        Err(Corruption::BadField { field: got, .. }) => assert_eq!(got, field),
        other => panic!("{field}: {other:?}"),
    };
    // Codec 5..=7 is no codec.
    for codec in 5u8..=7 {
        refused(&with_field(good.clone(), 22, &[codec]), "compression");
    }
    // More records than offsets, and fewer.
    let count = u32::try_from(RECORDS).expect("small");
    refused(
        &with_field(good.clone(), 57, &(count + 1).to_be_bytes()),
        "last_offset_delta",
    );
    refused(
        &with_field(good.clone(), 57, &(count - 1).to_be_bytes()),
        "last_offset_delta",
    );
    refused(
        &with_field(good.clone(), 57, &0u32.to_be_bytes()),
        "record_count",
    );
    // No payload at all.
    let mut empty = good[..BATCH_HEADER_SIZE].to_vec();
    empty[8..12]
        .copy_from_slice(&(u32::try_from(BATCH_HEADER_SIZE).expect("small") - 12).to_be_bytes());
    refused(&with_field(empty, 22, &[3]), "compressed payload bytes");
    // A payload byte flipped without a new CRC.
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    assert!(matches!(
        batch::validate_produced(&flipped),
        Err(Corruption::CrcMismatch { .. })
    ));
    // An uncompressed batch must not skip offsets either.
    let plain = plain_batch(b"v");
    refused(
        &with_field(plain, 23, &1u32.to_be_bytes()),
        "last_offset_delta",
    );
}

#[test]
fn the_log_refuses_what_validation_refuses() {
    let storage = SimStorage::new();
    let dir = std::path::Path::new("/compressed/refused/0");
    block_on(async {
        let log = PartitionLog::open(storage, dir, EngineConfig::default())
            .await
            .expect("open");
        let bad = with_field(client_batch(Compression::Gzip, 1), 22, &[6]);
        let result = log.append(BytesMut::from(&bad[..]), LeaderEpoch(1)).await;
        assert!(matches!(result, Err(Error::InvalidBatch(_))), "{result:?}");
        assert_eq!(log.log_end(), Offset(0));
        log.close().await.expect("close");
    });
}
