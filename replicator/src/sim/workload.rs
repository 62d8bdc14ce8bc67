//! Simulated clients: idempotent producers that retry in order, and a consumer.

use std::collections::BTreeMap;

use shardlog_engine::TimestampMs;
use shardlog_engine::record::{BatchBuilder, ProducerFields};

use crate::ids::{RequestId, Tick};
use crate::replica::Acks;

/// One outstanding batch of a producer.
#[derive(Clone, Debug)]
pub struct Outstanding {
    /// The batch as the client sends it.
    pub bytes: Vec<u8>,
    /// The request carrying it now, if sent.
    pub request: Option<(RequestId, Tick)>,
}

/// An idempotent producer.
#[derive(Clone, Debug)]
pub struct Producer {
    /// Its producer id.
    pub producer_id: i64,
    /// Its acks setting.
    pub acks: Acks,
    next_sequence: i32,
    /// Batches not yet acknowledged, by base sequence.
    pub outstanding: BTreeMap<i32, Outstanding>,
}

/// Batches a producer has unacknowledged at once (Kafka allows 5).
pub const OUTSTANDING_MAX: usize = 3;

impl Producer {
    /// A producer with no batches yet.
    #[must_use]
    pub fn new(producer_id: i64, acks: Acks) -> Producer {
        Producer {
            producer_id,
            acks,
            next_sequence: 0,
            outstanding: BTreeMap::new(),
        }
    }

    /// Makes a new batch of `records` records if there is room.
    pub fn make_batch(&mut self, records: u32, now: Tick) {
        if self.outstanding.len() >= OUTSTANDING_MAX {
            return;
        }
        let mut builder = BatchBuilder::new();
        builder.set_producer(ProducerFields {
            producer_id: self.producer_id,
            producer_epoch: 0,
            base_sequence: self.next_sequence,
        });
        for i in 0..records {
            let value = format!(
                "p{}-s{}",
                self.producer_id,
                self.next_sequence + i32::try_from(i).unwrap_or(0)
            );
            let timestamp = TimestampMs(i64::try_from(now.0).unwrap_or(0));
            builder.push(timestamp, None, Some(value.as_bytes()), &[]);
        }
        let bytes = builder.finish();
        let sequence = self.next_sequence;
        self.next_sequence += i32::try_from(records).unwrap_or(1);
        self.outstanding.insert(
            sequence,
            Outstanding {
                bytes,
                request: None,
            },
        );
    }

    /// Marks every batch from `sequence` on as unsent, to resend in order.
    pub fn rewind(&mut self, from_sequence: i32) {
        for (_, batch) in self.outstanding.range_mut(from_sequence..) {
            batch.request = None;
        }
    }
}
