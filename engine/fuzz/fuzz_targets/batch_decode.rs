//! Fuzz target: batch decoding over arbitrary bytes. `BatchHeader::parse`, `validate`,
//! `validate_with_records` and `RecordIter` must never panic, and must agree: a batch that
//! passes the stricter check passes the looser one with the same header, and patching the
//! base offset and epoch keeps a valid batch valid. Each input is tried as it is and with
//! its CRC fixed up, so the fuzzer reaches the record decoder without forging CRC32C.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardlog_engine::batch::{self, BATCH_HEADER_SIZE, BatchHeader};
use shardlog_engine::record::RecordIter;
use shardlog_engine::{LeaderEpoch, Offset};

/// Where the CRC sits and where the bytes it covers start (Kafka RecordBatch v2).
const CRC_AT: usize = 17;
const CRC_COVERS_FROM: usize = 21;

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= BATCH_HEADER_SIZE {
        let mut fixed = data.to_vec();
        let crc = crc32c::crc32c(&fixed[CRC_COVERS_FROM..]);
        fixed[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        check(&fixed);
    }
    walk_batches(data);
});

fn check(data: &[u8]) {
    let parsed = BatchHeader::parse(data);
    let validated = batch::validate(data);
    let full = batch::validate_with_records(data);
    if let Ok(header) = validated {
        assert_eq!(parsed, Ok(header), "validate accepted what parse rejected");
        assert_eq!(header.size as usize, data.len());
        let mut patched = data.to_vec();
        batch::patch_base(&mut patched, Offset(u64::from(header.crc)), LeaderEpoch(7));
        let again = batch::validate(&patched).expect("patching base and epoch breaks the CRC");
        assert_eq!(again.base_offset, Offset(u64::from(header.crc)));
    }
    if let Ok(header) = full {
        assert_eq!(
            validated,
            Ok(header),
            "validate_with_records accepted what validate rejected"
        );
        assert!(header.record_count > 0 || header.compression() != batch::Compression::None);
    }
    if let Ok(header) = parsed {
        let _ = (
            header.next_offset(),
            header.compression(),
            header.is_control(),
        );
        let mut count = 0u32;
        for record in RecordIter::new(&header, data) {
            let Ok(record) = record else { break };
            let _ = (record.offset(&header), record.timestamp(&header));
            for (key, value) in record.headers() {
                std::hint::black_box((key, value));
            }
            count += 1;
        }
        if full.is_ok() && header.compression() == batch::Compression::None {
            assert_eq!(
                count, header.record_count,
                "validated batch iterates differently"
            );
        }
    }
}

/// Splits `data` into batches the way a read does (header length, then the next).
fn walk_batches(data: &[u8]) {
    let mut rest = data;
    while let Ok(header) = BatchHeader::parse(rest) {
        let Some(bytes) = rest.get(..header.size as usize) else {
            break;
        };
        let _ = batch::validate(bytes);
        rest = &rest[bytes.len()..];
    }
}
