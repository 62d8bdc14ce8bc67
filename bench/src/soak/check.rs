//! The checker: reads a whole history back and checks what the load was told against
//! what the cluster holds at the end.
//!
//! - Every acknowledged record is present exactly once, at the offset it was acknowledged
//!   with. A record below the final log start was deleted by retention: it counts as
//!   "verified" if a consumer read it at that offset, else "unverified" (never as kept).
//! - A producer's records of a partition appear in sequence order, and no sequence is
//!   missing between two present ones unless its batch failed (the client was told, so
//!   it may or may not have been stored).
//! - No consumer read a record that is not at that offset in the final log (lost or
//!   replaced after it was served).
//! - The high watermarks a consumer saw for a partition never went back.
//! - Every partition has a leader and a full ISR again once the faults are healed, and
//!   its final read reached the high watermark.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use serde::Serialize;

use super::history::{Event, RecordId};

/// Examples kept per violation kind.
const EXAMPLES: usize = 10;

/// What the checker found.
#[derive(Debug, Default, Serialize)]
pub struct Verdict {
    /// Faults begun, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Fault actions that failed: a node that hung on SIGTERM, a restart that did not
    /// come up. Reported, not counted as violations of the checked properties.
    pub fault_errors: u64,
    /// Records sent (attempts, first sends).
    pub sent: u64,
    /// Records acknowledged.
    pub acked: u64,
    /// Records whose produce failed for good (may or may not be stored).
    pub failed: u64,
    /// Records read by consumers.
    pub consumed: u64,
    /// Acknowledged records found at their offset in the final read.
    pub acked_present: u64,
    /// Acknowledged records below the final log start that a consumer read at their
    /// offset.
    pub retention_verified: u64,
    /// Acknowledged records below the final log start that no consumer read.
    pub retention_unverified: u64,
    /// Acknowledged records missing from their offset (or found elsewhere).
    pub lost: u64,
    /// Records found at more than one offset.
    pub duplicated: u64,
    /// Records of one producer and partition out of sequence order.
    pub out_of_order: u64,
    /// Sequences missing between two present records that no failed batch explains.
    pub gaps: u64,
    /// Records a consumer read that the final log does not hold at that offset.
    pub read_then_lost: u64,
    /// High watermarks a consumer saw go back.
    pub hw_regressions: u64,
    /// Records the soak did not write.
    pub foreign: u64,
    /// Partitions not fully read at the end.
    pub unfinished_partitions: u64,
    /// 1 when the cluster did not have every partition led with a full ISR after the
    /// faults were healed.
    pub unsettled: u64,
    /// Examples of each violation.
    pub examples: BTreeMap<String, Vec<String>>,
}

impl Verdict {
    /// The number of violations.
    pub fn violations(&self) -> u64 {
        self.lost
            + self.duplicated
            + self.out_of_order
            + self.gaps
            + self.read_then_lost
            + self.hw_regressions
            + self.foreign
            + self.unfinished_partitions
            + self.unsettled
    }

    fn example(&mut self, kind: &str, text: String) {
        let list = self.examples.entry(kind.to_owned()).or_default();
        if list.len() < EXAMPLES {
            list.push(text);
        }
    }

    /// The summary, one fact per line.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let total: u64 = self.faults.values().sum();
        let _ = writeln!(s, "faults injected: {total} ({})", faults.join(", "));
        let _ = writeln!(s, "fault actions that failed: {}", self.fault_errors);
        let _ = writeln!(
            s,
            "records: sent {}, acknowledged {}, failed {}, consumed {}",
            self.sent, self.acked, self.failed, self.consumed
        );
        let _ = writeln!(
            s,
            "acknowledged: present {}, deleted by retention {} (read before: {}, unread: {})",
            self.acked_present,
            self.retention_verified + self.retention_unverified,
            self.retention_verified,
            self.retention_unverified
        );
        let _ = writeln!(
            s,
            "violations: lost {}, duplicated {}, out of order {}, gaps {}, read then lost {}, \
             high watermark regressions {}, foreign records {}, partitions unfinished {}, \
             not in sync after healing {}",
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.gaps,
            self.read_then_lost,
            self.hw_regressions,
            self.foreign,
            self.unfinished_partitions,
            self.unsettled
        );
        for (kind, list) in &self.examples {
            for example in list {
                let _ = writeln!(s, "  {kind}: {example}");
            }
        }
        s
    }
}

/// The final state of a partition.
#[derive(Default)]
struct FinalLog {
    records: BTreeMap<u64, RecordId>,
    log_start: u64,
    hw: u64,
    complete: bool,
}

/// What the events say, indexed.
#[derive(Default)]
struct Index {
    /// (partition, offset) -> record, for every acknowledged record.
    acked: Vec<(u32, u64, RecordId)>,
    /// (producer, partition) -> sequences of failed batches.
    failed: HashMap<(u32, u32), HashSet<u64>>,
    /// (partition, offset) -> records consumers read there.
    reads: HashMap<(u32, u64), HashSet<RecordId>>,
    finals: BTreeMap<u32, FinalLog>,
}

/// Checks the events of one history.
pub fn check(events: &[Event]) -> Verdict {
    let mut verdict = Verdict::default();
    let mut index = Index::default();
    let mut hws: HashMap<(u32, u32), (u64, u64)> = HashMap::new();
    for event in events {
        tally(event, &mut verdict, &mut index, &mut hws);
    }
    check_acked(&index, &mut verdict);
    check_reads(&index, &mut verdict);
    check_producers(&index, &mut verdict);
    for (partition, log) in &index.finals {
        if !log.complete {
            verdict.unfinished_partitions += 1;
            verdict.example("unfinished", format!("partition {partition}"));
        }
    }
    verdict
}

fn tally(
    event: &Event,
    verdict: &mut Verdict,
    index: &mut Index,
    hws: &mut HashMap<(u32, u32), (u64, u64)>,
) {
    match event {
        Event::Send { count, .. } => verdict.sent += u64::from(*count),
        Event::Ack {
            producer,
            partition,
            seq,
            count,
            offset,
            ..
        } => {
            verdict.acked += u64::from(*count);
            for i in 0..u64::from(*count) {
                let at = offset.saturating_add(i);
                index.acked.push((*partition, at, (*producer, seq + i)));
            }
        }
        Event::Fail {
            producer,
            partition,
            seq,
            count,
            ..
        } => {
            verdict.failed += u64::from(*count);
            let set = index.failed.entry((*producer, *partition)).or_default();
            set.extend((0..u64::from(*count)).map(|i| seq + i));
        }
        Event::Read { .. } => tally_read(event, verdict, index, hws),
        Event::Foreign {
            partition,
            offset,
            seen_by,
            ..
        } => {
            verdict.foreign += 1;
            let text = format!("partition {partition} offset {offset} ({seen_by})");
            verdict.example("foreign", text);
        }
        Event::Fault { .. } => tally_fault(event, verdict),
        Event::Final { .. } | Event::FinalEnd { .. } => tally_final(event, index),
        Event::Settled { ok, state, .. } => {
            if !ok {
                verdict.unsettled += 1;
                verdict.example("unsettled", state.clone());
            }
        }
        Event::Start { .. } | Event::Skip { .. } => {}
    }
}

fn tally_read(
    event: &Event,
    verdict: &mut Verdict,
    index: &mut Index,
    hws: &mut HashMap<(u32, u32), (u64, u64)>,
) {
    let Event::Read {
        t,
        consumer,
        partition,
        hw,
        records,
        ..
    } = event
    else {
        return;
    };
    verdict.consumed += records.len() as u64;
    // Counted once per fall (the reads that follow at the lower mark are the same
    // regression); measured against the highest mark seen before.
    let (highest, last) = hws.entry((*consumer, *partition)).or_insert((0, 0));
    if *hw < *highest && *last >= *highest {
        verdict.hw_regressions += 1;
        let text = format!(
            "t={t:.0}ms consumer {consumer} partition {partition}: hw {hw} after {highest}"
        );
        verdict.example("hw_regression", text);
    }
    *highest = (*highest).max(*hw);
    *last = *hw;
    for &(offset, producer, seq) in records {
        let set = index.reads.entry((*partition, offset)).or_default();
        set.insert((producer, seq));
    }
}

fn tally_fault(event: &Event, verdict: &mut Verdict) {
    let Event::Fault {
        t,
        n,
        kind,
        target,
        phase,
        error,
    } = event
    else {
        return;
    };
    if phase == "begin" {
        *verdict.faults.entry(kind.clone()).or_default() += 1;
    }
    if let Some(error) = error {
        verdict.fault_errors += 1;
        let text = format!("t={t:.0}ms fault {n} {kind} {target} {phase}: {error}");
        verdict.example("fault_error", text);
    }
}

fn tally_final(event: &Event, index: &mut Index) {
    match event {
        Event::Final {
            partition, records, ..
        } => {
            let log = index.finals.entry(*partition).or_default();
            for &(offset, producer, seq) in records {
                log.records.insert(offset, (producer, seq));
            }
        }
        Event::FinalEnd {
            partition,
            log_start,
            hw,
            error,
            ..
        } => {
            let log = index.finals.entry(*partition).or_default();
            log.log_start = *log_start;
            log.hw = *hw;
            log.complete = error.is_none();
        }
        _ => {}
    }
}

fn check_acked(index: &Index, verdict: &mut Verdict) {
    // Where each record is in the final logs.
    let mut found: HashMap<(u32, RecordId), Vec<u64>> = HashMap::new();
    for (&partition, log) in &index.finals {
        for (&offset, &record) in &log.records {
            found.entry((partition, record)).or_default().push(offset);
        }
    }
    for &(partition, offset, record) in &index.acked {
        let Some(log) = index.finals.get(&partition) else {
            verdict.lost += 1;
            verdict.example(
                "lost",
                format!("partition {partition} never read at the end"),
            );
            continue;
        };
        if offset < log.log_start {
            let read = index
                .reads
                .get(&(partition, offset))
                .is_some_and(|set| set.contains(&record));
            if read {
                verdict.retention_verified += 1;
            } else {
                verdict.retention_unverified += 1;
            }
            continue;
        }
        if log.records.get(&offset) == Some(&record) {
            verdict.acked_present += 1;
            continue;
        }
        verdict.lost += 1;
        let elsewhere = found.get(&(partition, record)).cloned().unwrap_or_default();
        let holds = log.records.get(&offset);
        let text = format!(
            "partition {partition} offset {offset}: acked producer {} seq {}, final log has \
             {holds:?} there (log start {}, hw {}); the record is at {elsewhere:?}",
            record.0, record.1, log.log_start, log.hw
        );
        verdict.example("lost", text);
    }
    // A record at two offsets of the final log, or read at an offset where the final log
    // holds it elsewhere, was stored twice.
    let mut at: HashMap<(u32, RecordId), HashSet<u64>> = HashMap::new();
    for (&(partition, record), offsets) in &found {
        at.entry((partition, record))
            .or_default()
            .extend(offsets.iter().copied());
    }
    for (&(partition, offset), records) in &index.reads {
        for &record in records {
            at.entry((partition, record)).or_default().insert(offset);
        }
    }
    let mut duplicated: Vec<_> = at.iter().filter(|(_, o)| o.len() > 1).collect();
    duplicated.sort_by_key(|((p, r), _)| (*p, *r));
    for ((partition, record), offsets) in duplicated {
        verdict.duplicated += offsets.len() as u64 - 1;
        let mut offsets: Vec<_> = offsets.iter().collect();
        offsets.sort();
        let text = format!(
            "partition {partition}: producer {} seq {} at offsets {offsets:?}",
            record.0, record.1
        );
        verdict.example("duplicated", text);
    }
}

fn check_reads(index: &Index, verdict: &mut Verdict) {
    let mut reads: Vec<_> = index.reads.iter().collect();
    reads.sort_by_key(|(k, _)| **k);
    for (&(partition, offset), records) in reads {
        let Some(log) = index.finals.get(&partition) else {
            continue;
        };
        if offset < log.log_start {
            continue;
        }
        for record in records {
            if log.records.get(&offset) != Some(record) {
                verdict.read_then_lost += 1;
                let text = format!(
                    "partition {partition} offset {offset}: read producer {} seq {}, final log \
                     has {:?}",
                    record.0,
                    record.1,
                    log.records.get(&offset)
                );
                verdict.example("read_then_lost", text);
            }
        }
    }
}

fn check_producers(index: &Index, verdict: &mut Verdict) {
    for (&partition, log) in &index.finals {
        // producer -> (offset, seq) in offset order.
        let mut by_producer: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
        for (&offset, &(producer, seq)) in &log.records {
            by_producer.entry(producer).or_default().push((offset, seq));
        }
        for (producer, records) in by_producer {
            let failed = index.failed.get(&(producer, partition));
            for pair in records.windows(2) {
                let [(o1, s1), (o2, s2)] = [pair[0], pair[1]];
                if s2 <= s1 {
                    verdict.out_of_order += 1;
                    let text = format!(
                        "partition {partition} producer {producer}: seq {s1} at {o1}, then \
                         seq {s2} at {o2}"
                    );
                    verdict.example("out_of_order", text);
                    continue;
                }
                let unexplained = (s1 + 1..s2)
                    .filter(|s| !failed.is_some_and(|f| f.contains(s)))
                    .count() as u64;
                if unexplained > 0 {
                    verdict.gaps += unexplained;
                    let text = format!(
                        "partition {partition} producer {producer}: {unexplained} sequences \
                         between seq {s1} at {o1} and seq {s2} at {o2} missing, not failed"
                    );
                    verdict.example("gap", text);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(partition: u32, producer: u32, seq: u64, count: u32, offset: u64) -> Event {
        Event::Ack {
            t: 0.0,
            producer,
            partition,
            seq,
            count,
            offset,
        }
    }

    fn fin(partition: u32, records: Vec<(u64, u32, u64)>, log_start: u64, hw: u64) -> [Event; 2] {
        [
            Event::Final {
                t: 0.0,
                partition,
                records,
            },
            Event::FinalEnd {
                t: 0.0,
                partition,
                log_start,
                hw,
                error: None,
            },
        ]
    }

    #[test]
    fn a_clean_history_has_no_violation() {
        let mut events = vec![ack(0, 1, 0, 2, 0), ack(0, 1, 2, 2, 2)];
        events.extend(fin(
            0,
            vec![(0, 1, 0), (1, 1, 1), (2, 1, 2), (3, 1, 3)],
            0,
            4,
        ));
        let verdict = check(&events);
        assert_eq!(verdict.violations(), 0, "{}", verdict.summary());
        assert_eq!(verdict.acked_present, 4);
    }

    #[test]
    fn a_missing_acked_record_is_lost_and_a_gap() {
        let mut events = vec![ack(0, 1, 0, 2, 0), ack(0, 1, 2, 1, 2)];
        events.extend(fin(0, vec![(0, 1, 0), (2, 1, 2)], 0, 3));
        let verdict = check(&events);
        assert_eq!(
            (verdict.lost, verdict.gaps),
            (1, 1),
            "{}",
            verdict.summary()
        );
    }

    #[test]
    fn a_failed_batch_may_be_missing_but_not_twice_stored() {
        let mut events = vec![
            ack(0, 1, 0, 1, 0),
            Event::Fail {
                t: 0.0,
                producer: 1,
                partition: 0,
                seq: 1,
                count: 1,
                error: "timeout".into(),
            },
            ack(0, 1, 2, 1, 1),
        ];
        events.extend(fin(0, vec![(0, 1, 0), (1, 1, 2), (2, 1, 2)], 0, 3));
        let verdict = check(&events);
        assert_eq!(
            (verdict.lost, verdict.gaps),
            (0, 0),
            "{}",
            verdict.summary()
        );
        assert_eq!(verdict.duplicated, 1);
    }

    #[test]
    fn a_read_record_replaced_later_and_a_falling_hw_are_violations() {
        let read = |hw, records| Event::Read {
            t: 0.0,
            consumer: 0,
            partition: 0,
            hw,
            log_start: 0,
            records,
        };
        let mut events = vec![read(5, vec![(0, 2, 7)]), read(3, vec![])];
        events.extend(fin(0, vec![(0, 1, 0)], 0, 1));
        let verdict = check(&events);
        assert_eq!(verdict.read_then_lost, 1, "{}", verdict.summary());
        assert_eq!(verdict.hw_regressions, 1);
    }

    #[test]
    fn records_below_the_log_start_count_as_retention() {
        let read = Event::Read {
            t: 0.0,
            consumer: 0,
            partition: 0,
            hw: 2,
            log_start: 0,
            records: vec![(0, 1, 0)],
        };
        let mut events = vec![ack(0, 1, 0, 2, 0), read, ack(0, 1, 2, 1, 2)];
        events.extend(fin(0, vec![(2, 1, 2)], 2, 3));
        let verdict = check(&events);
        assert_eq!(verdict.violations(), 0, "{}", verdict.summary());
        assert_eq!(
            (verdict.retention_verified, verdict.retention_unverified),
            (1, 1)
        );
    }
}
