//! Pure decisions over the ISR: the high watermark and the `acks=all` answer.
//!
//! The high watermark is the smallest durable end over the ISR, and it does not advance
//! while the committed ISR is smaller than `min_insync` (KIP-966): a lone leader's disk is
//! not a quorum. The leader passes its *maximal* ISR (committed plus members being added,
//! minus none being removed) so that a change the controller has not confirmed yet never
//! lets the high watermark outrun a replica the controller may elect.

use shardlog_engine::Offset;

/// The high watermark the ISR's durable ends allow, or `None` if it must not advance:
/// the committed ISR has `isr_committed` members, fewer than `min_insync`.
#[must_use]
pub fn high_watermark(
    durable_ends: impl IntoIterator<Item = Offset>,
    isr_committed: usize,
    min_insync: usize,
) -> Option<Offset> {
    assert!(min_insync >= 1, "min_insync {min_insync}");
    if isr_committed < min_insync {
        return None;
    }
    durable_ends.into_iter().min()
}

/// What to tell an `acks=all` producer whose batch ends at `last_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckDecision {
    /// Not committed yet.
    Wait,
    /// Committed: every ISR member holds it durably.
    Ack,
}

/// Whether a new `acks=all` batch may be appended at all (Kafka refuses before appending).
#[must_use]
pub fn admits_acks_all(isr_committed: usize, min_insync: usize) -> bool {
    isr_committed >= min_insync
}

/// The answer for a waiting `acks=all` batch.
#[must_use]
pub fn acks_all(last_offset: Offset, high_watermark: Offset) -> AckDecision {
    if last_offset < high_watermark {
        AckDecision::Ack
    } else {
        AckDecision::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_watermark_table() {
        // (durable ends, committed isr, min_insync, expected)
        let cases: &[(&[u64], usize, usize, Option<u64>)] = &[
            (&[10, 7, 9], 3, 2, Some(7)),
            (&[10], 1, 1, Some(10)),
            (&[10], 1, 2, None),
            (&[10, 4], 1, 2, None),
            (&[10, 4], 2, 2, Some(4)),
        ];
        for &(ends, committed, min, expected) in cases {
            let got = high_watermark(ends.iter().map(|&o| Offset(o)), committed, min);
            assert_eq!(got, expected.map(Offset), "{ends:?} {committed} {min}");
        }
        assert!(!admits_acks_all(1, 2));
        assert_eq!(acks_all(Offset(4), Offset(5)), AckDecision::Ack);
        assert_eq!(acks_all(Offset(5), Offset(5)), AckDecision::Wait);
    }
}
