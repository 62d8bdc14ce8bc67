//! The controller's Raft file: the record format that makes raft-rs's log and hard state
//! durable while the controller stays sans-IO.
//!
//! Why it exists: raft-rs keeps its log and [`HardState`] in `MemStorage`, which a restart
//! loses, and Raft is only safe if a node remembers its term, vote and log across restarts.
//! The controller does no IO, so it hands the driver encoded records
//! (`Action::Persist`) to append to one append-only file per node and fdatasync; at start
//! the driver reads the file back and [`recover`] replays it into a [`Recovered`] state
//! for `Controller::recover`.
//!
//! ```text
//! record:  offset size field
//!               0    4  payload_len   u32 LE, at most RECORD_PAYLOAD_BYTES_MAX
//!               4    4  crc           u32 LE, crc32c of kind and payload
//!               8    1  kind          1 = entries, 2 = hard state
//!               9    -  payload
//! entries:     repeated [u32 LE entry_len][entry_len bytes: protobuf raft Entry],
//!              at least one, indexes consecutive
//! hard state:  term, vote, commit: three u64 LE (24 bytes)
//! ```
//! Replay follows Raft's append: an entries record starting at index `i` replaces the
//! entries from `i` on. A record must keep the state one raft-rs can start from, else it is
//! invalid: entries start at `1..=last_index + 1`, above the commit index (committed entries
//! are never replaced), with terms `>= 1` that never decrease along the log; a hard state's
//! term and commit never decrease, and its commit is at most the last index.
//!
//! Durability: the driver makes every record durable (fdatasync) before it performs any
//! later action, so after a crash at most the last write (the records of one
//! `Action::Persist`) can be incomplete, and nothing was ever done on its bytes. Replay
//! stops at the first record that is not whole (cut short, a length over the bound, a crc
//! mismatch) and tells a torn tail from damage by what follows it, as the partition logs'
//! recovery does (`engine/src/recovery.rs`: only zeros after the bad batch is a torn
//! tail, more data is damage). This file is not preallocated, so "what follows" is whether
//! a whole record does:
//!
//! - Torn tail: no whole record (a known kind, a length that fits, 24 bytes for a hard
//!   state, a matching crc) starts after the bad record's first byte: the bad bytes are
//!   the end of the file, the remains of the last write. Replay keeps the state before
//!   it; [`Recovered::valid_len`] says where the driver cuts the file before appending
//!   again and [`Recovered::torn`] says why.
//! - Damage: a whole record starts after it. A crash leaves the last write cut short, or
//!   zeros where its pages did not reach the disk, not a whole record after a partial one
//!   (but see below), so the later records were synced after the bad one, and the bad one
//!   was synced too: peers may have relied on the votes and acknowledgements it and the
//!   later records hold. Cutting there could let this voter vote twice in one term or forget
//!   entries it acknowledged, so [`recover`] returns [`Damage`], naming the bad record's
//!   offset, and the driver refuses to start.
//! - A whole record that breaks the rules above (its crc matches, so no torn write made
//!   it) is damage wherever it is.
//!
//! The search for a whole record after a bad one first follows the chain of length fields
//! from the bad record (its length field may be intact), then tries every later byte (it
//! may not be). A position costs a few comparisons unless its header is plausible (kind
//! 1 or 2, a length that fits in the file, 24 for a hard state, an entry length that fits
//! in the payload); then the crc of its payload is computed, at most
//! [`SCAN_CRC_BYTES_MAX`] bytes of crc in all: past that the bytes cannot be shown to be a
//! torn tail, and they are reported as damage.
//!
//! What the rule cannot tell: damage inside the last record reads as a torn write and is
//! cut (the partition logs have the same limit); a crash that persisted a later page of
//! the last write but not an earlier one leaves a whole record after a torn one and reads
//! as damage (the safe mistake: the node waits for the operator); and random bytes pass
//! a crc with a chance of 2^-32 per plausible position. The bytes are untrusted input:
//! lengths are bounded before use, and no input panics.
#![deny(clippy::indexing_slicing)]

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState};

/// Bytes of a record header: payload length, crc and kind.
pub const RECORD_HEADER_BYTES: usize = 9;
/// The largest record payload written or accepted (64 MiB).
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 64 << 20;

/// The largest encoded raft `Entry` a record holds.
pub const ENTRY_BYTES_MAX: usize = RECORD_PAYLOAD_BYTES_MAX - ENTRY_LEN_BYTES;

const KIND_ENTRIES: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const HARD_STATE_BYTES: usize = 24;
const ENTRY_LEN_BYTES: usize = 4;

/// The most bytes of crc the search for a whole record after a bad one computes (1 GiB,
/// well under a second with the CPU's crc32c instructions).
pub const SCAN_CRC_BYTES_MAX: usize = 1 << 30;

const _: () = assert!(RECORD_PAYLOAD_BYTES_MAX <= u32::MAX as usize);

/// The Raft state replayed from a controller's Raft file; [`Default`] is a new node's
/// (empty) state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recovered {
    /// The last hard state recorded (term, vote, commit).
    pub hard_state: HardState,
    /// The log after replay: consecutive indexes from 1.
    pub entries: Vec<Entry>,
    /// Bytes of the file that hold valid records; the driver truncates the file to this
    /// length before appending again.
    pub valid_len: usize,
    /// Why replay stopped before the end of the file, if it did: a torn tail (see the
    /// module docs), cut at `valid_len`.
    pub torn: Option<String>,
}

/// Damage inside records that were synced: the file cannot be replayed, and cutting it
/// could take back votes and acknowledgements (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("record at byte {offset}: {reason}")]
pub struct Damage {
    /// Where the first bad record starts; the records before it are whole.
    pub offset: usize,
    /// What is wrong with it, and what shows it is not a torn tail.
    pub reason: String,
}

/// Why replay stopped at a record.
enum Stop {
    /// The record is not whole (cut short, a length over the bound, a crc mismatch): a torn
    /// tail, unless a whole record follows.
    NotWhole(String),
    /// A whole record (its crc matches) that no raft-rs log could have written.
    Impossible(String),
}

impl Recovered {
    /// Whether raft-rs can start from this state (the rules of the module docs); a state
    /// built by [`recover`] always can, one built by hand maybe not.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        let mut previous: Option<&Entry> = None;
        for entry in &self.entries {
            let expected = previous.map_or(Some(1), |p| p.index.checked_add(1));
            if Some(entry.index) != expected {
                return Err("entries are not consecutive from index 1");
            }
            if entry.term == 0 || previous.is_some_and(|p| entry.term < p.term) {
                return Err("entry terms are 0 or decrease");
            }
            previous = Some(entry);
        }
        if self.hard_state.commit > last_index(&self.entries) {
            return Err("commit index beyond the last entry");
        }
        Ok(())
    }
}

fn last_index(entries: &[Entry]) -> u64 {
    entries.last().map_or(0, |e| e.index)
}

/// Why an entries record cannot be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// protobuf refused the entry.
    #[error("raft entry encoding: {0}")]
    Protobuf(#[from] protobuf::ProtobufError),
    /// One entry does not fit in a record.
    #[error("raft entry {index} is {bytes} bytes, over the record bound")]
    EntryTooLarge {
        /// The entry's index.
        index: u64,
        /// Its encoded size.
        bytes: usize,
    },
}

/// Appends the records of `entries` (consecutive, as raft-rs hands them out) to `out`:
/// one record, or several if they exceed [`RECORD_PAYLOAD_BYTES_MAX`].
pub(crate) fn encode_entries(entries: &[Entry], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mut payload = Vec::new();
    for entry in entries {
        let bytes = entry.write_to_bytes()?;
        let entry_len = u32::try_from(bytes.len())
            .ok()
            .filter(|_| bytes.len() <= ENTRY_BYTES_MAX)
            .ok_or(EncodeError::EntryTooLarge {
                index: entry.index,
                bytes: bytes.len(),
            })?;
        if payload.len() + ENTRY_LEN_BYTES + bytes.len() > RECORD_PAYLOAD_BYTES_MAX {
            push_record(KIND_ENTRIES, &payload, out);
            payload.clear();
        }
        payload.extend_from_slice(&entry_len.to_le_bytes());
        payload.extend_from_slice(&bytes);
    }
    if !payload.is_empty() {
        push_record(KIND_ENTRIES, &payload, out);
    }
    Ok(())
}

/// Appends the record of `hard_state` to `out`.
pub(crate) fn encode_hard_state(hard_state: &HardState, out: &mut Vec<u8>) {
    let mut payload = [0u8; HARD_STATE_BYTES];
    for (field, value) in
        payload
            .chunks_exact_mut(8)
            .zip([hard_state.term, hard_state.vote, hard_state.commit])
    {
        field.copy_from_slice(&value.to_le_bytes());
    }
    push_record(KIND_HARD_STATE, &payload, out);
}

fn push_record(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    assert!(
        payload.len() <= RECORD_PAYLOAD_BYTES_MAX,
        "{} > {RECORD_PAYLOAD_BYTES_MAX}",
        payload.len()
    );
    let payload_len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload);
    out.reserve(RECORD_HEADER_BYTES + payload.len());
    out.extend_from_slice(&payload_len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

/// Replays a Raft file: the state after its records, a torn tail cut off; [`Damage`] if
/// the file is damaged inside records that were synced (see the module docs).
pub fn recover(bytes: &[u8]) -> Result<Recovered, Damage> {
    recover_within(bytes, SCAN_CRC_BYTES_MAX)
}

/// [`recover`], computing at most `scan_budget` bytes of crc to look for a whole record
/// after a bad one.
fn recover_within(bytes: &[u8], scan_budget: usize) -> Result<Recovered, Damage> {
    let mut recovered = Recovered::default();
    while let Some(rest) = bytes.get(recovered.valid_len..).filter(|r| !r.is_empty()) {
        let offset = recovered.valid_len;
        match replay_record(rest, &mut recovered) {
            Ok(record_len) => recovered.valid_len += record_len,
            Err(Stop::Impossible(reason)) => {
                let reason = format!("{reason}, in a whole record (its crc matches)");
                return Err(Damage { offset, reason });
            }
            Err(Stop::NotWhole(reason)) => match whole_record_after(bytes, offset, scan_budget) {
                Ok(None) => {
                    recovered.torn = Some(format!("record at byte {offset}: {reason}"));
                    break;
                }
                Ok(Some(next)) => {
                    let reason = format!("{reason}; a whole record follows at byte {next}");
                    return Err(Damage { offset, reason });
                }
                Err(()) => {
                    let reason = format!(
                        "{reason}; the {} bytes from it on hold too many record-like \
                         positions to rule out a whole record after it (over \
                         {SCAN_CRC_BYTES_MAX} bytes of crc)",
                        bytes.len() - offset
                    );
                    return Err(Damage { offset, reason });
                }
            },
        }
    }
    Ok(recovered)
}

/// Where a whole record after the bad one at `bad` starts, if one does: looked for along
/// the chain of length fields from `bad`, then at every later byte. `Err` once the crc
/// work would pass `budget` bytes.
fn whole_record_after(bytes: &[u8], bad: usize, mut budget: usize) -> Result<Option<usize>, ()> {
    let mut next = bad;
    while let Some(len) = bytes.get(next..).and_then(claimed_payload_len) {
        next = match next.checked_add(RECORD_HEADER_BYTES + len) {
            Some(next) if next < bytes.len() => next,
            _ => break,
        };
        if is_whole_record(bytes, next, &mut budget)? {
            return Ok(Some(next));
        }
    }
    for position in bad + 1..bytes.len() {
        if is_whole_record(bytes, position, &mut budget)? {
            return Ok(Some(position));
        }
    }
    Ok(None)
}

/// The payload length a record header at the start of `bytes` claims, if within bounds.
fn claimed_payload_len(bytes: &[u8]) -> Option<usize> {
    let len = usize::try_from(read_u32(bytes.get(..4)?)).ok()?;
    (len <= RECORD_PAYLOAD_BYTES_MAX).then_some(len)
}

/// Whether a whole record starts at `position`: a plausible header and a matching crc
/// (computing the crc spends `budget`; `Err` if it would run out).
fn is_whole_record(bytes: &[u8], position: usize, budget: &mut usize) -> Result<bool, ()> {
    let Some(rest) = bytes.get(position..) else {
        return Ok(false);
    };
    let Some((header, after)) = rest.split_at_checked(RECORD_HEADER_BYTES) else {
        return Ok(false);
    };
    let (len_bytes, crc_and_kind) = header.split_at(4);
    let (crc_bytes, kind) = crc_and_kind.split_at(4);
    let len = usize::try_from(read_u32(len_bytes)).unwrap_or(usize::MAX);
    let Some(payload) = after.get(..len) else {
        return Ok(false);
    };
    let plausible = match kind {
        [KIND_HARD_STATE] => len == HARD_STATE_BYTES,
        [KIND_ENTRIES] if len <= RECORD_PAYLOAD_BYTES_MAX => payload
            .get(..ENTRY_LEN_BYTES)
            .map(|entry_len| usize::try_from(read_u32(entry_len)).unwrap_or(usize::MAX))
            .is_some_and(|entry_len| entry_len > 0 && entry_len <= len - ENTRY_LEN_BYTES),
        _ => false,
    };
    if !plausible {
        return Ok(false);
    }
    *budget = budget.checked_sub(len + 1).ok_or(())?;
    Ok(crc32c::crc32c_append(crc32c::crc32c(kind), payload) == read_u32(crc_bytes))
}

/// Checks the record at the start of `bytes` and applies it to `state`; its length.
fn replay_record(bytes: &[u8], state: &mut Recovered) -> Result<usize, Stop> {
    let not_whole = |reason: &str| Stop::NotWhole(reason.to_owned());
    let header = bytes
        .get(..RECORD_HEADER_BYTES)
        .ok_or_else(|| not_whole("incomplete record header"))?;
    let (len_bytes, rest) = header.split_at(4);
    let (crc_bytes, kind) = rest.split_at(4);
    let payload_len = usize::try_from(read_u32(len_bytes)).unwrap_or(usize::MAX);
    if payload_len > RECORD_PAYLOAD_BYTES_MAX {
        return Err(Stop::NotWhole(format!(
            "payload length {payload_len} > {RECORD_PAYLOAD_BYTES_MAX}"
        )));
    }
    let record_len = RECORD_HEADER_BYTES + payload_len;
    let payload = bytes
        .get(RECORD_HEADER_BYTES..record_len)
        .ok_or_else(|| not_whole("incomplete record payload"))?;
    let crc = crc32c::crc32c_append(crc32c::crc32c(kind), payload);
    if crc != read_u32(crc_bytes) {
        return Err(not_whole("crc mismatch"));
    }
    match kind {
        [KIND_ENTRIES] => replay_entries(payload, state).map_err(Stop::Impossible)?,
        [KIND_HARD_STATE] => replay_hard_state(payload, state).map_err(Stop::Impossible)?,
        _ => return Err(Stop::Impossible(format!("unknown record kind {kind:?}"))),
    }
    Ok(record_len)
}

fn read_u32(bytes: &[u8]) -> u32 {
    let mut value = [0u8; 4];
    value.copy_from_slice(bytes);
    u32::from_le_bytes(value)
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut value = [0u8; 8];
    value.copy_from_slice(bytes);
    u64::from_le_bytes(value)
}

fn replay_entries(mut payload: &[u8], state: &mut Recovered) -> Result<(), String> {
    let mut entries: Vec<Entry> = Vec::new();
    while !payload.is_empty() {
        let len_bytes = payload
            .get(..ENTRY_LEN_BYTES)
            .ok_or("entry length cut off")?;
        let entry_len = usize::try_from(read_u32(len_bytes)).unwrap_or(usize::MAX);
        let entry_bytes = payload
            .get(ENTRY_LEN_BYTES..)
            .and_then(|rest| rest.get(..entry_len))
            .ok_or("entry longer than its record")?;
        let entry = Entry::parse_from_bytes(entry_bytes)
            .map_err(|e| format!("entry does not decode: {e}"))?;
        if let Some(previous) = entries.last() {
            if previous.index.checked_add(1) != Some(entry.index) {
                return Err(format!(
                    "entry index {} after {}",
                    entry.index, previous.index
                ));
            }
        }
        entries.push(entry);
        payload = payload
            .get(ENTRY_LEN_BYTES + entry_len..)
            .ok_or("entry longer than its record")?;
    }
    let first = entries.first().ok_or("entries record without entries")?;
    let last = last_index(&state.entries);
    if first.index == 0 || first.index > last.saturating_add(1) {
        return Err(format!(
            "entries from {} after last index {last}",
            first.index
        ));
    }
    if first.index <= state.hard_state.commit {
        return Err(format!(
            "entries from {} replace committed ones (commit {})",
            first.index, state.hard_state.commit
        ));
    }
    // The log keeps indexes 1..first.index, the entries before the first one replaced.
    let kept = usize::try_from(first.index - 1).map_err(|_| "index overflows usize")?;
    let mut term = kept
        .checked_sub(1)
        .and_then(|i| state.entries.get(i))
        .map_or(1, |e| e.term);
    for entry in &entries {
        if entry.term < term {
            return Err(format!(
                "entry {} has term {} below {term}",
                entry.index, entry.term
            ));
        }
        term = entry.term;
    }
    state.entries.truncate(kept);
    state.entries.extend(entries);
    Ok(())
}

fn replay_hard_state(payload: &[u8], state: &mut Recovered) -> Result<(), String> {
    if payload.len() != HARD_STATE_BYTES {
        return Err(format!(
            "hard state of {} bytes, not {HARD_STATE_BYTES}",
            payload.len()
        ));
    }
    let (term, rest) = payload.split_at(8);
    let (vote, commit) = rest.split_at(8);
    let mut hard_state = HardState::new();
    hard_state.term = read_u64(term);
    hard_state.vote = read_u64(vote);
    hard_state.commit = read_u64(commit);
    let previous = &state.hard_state;
    if hard_state.term < previous.term || hard_state.commit < previous.commit {
        return Err(format!(
            "hard state (term {}, commit {}) goes back from (term {}, commit {})",
            hard_state.term, hard_state.commit, previous.term, previous.commit
        ));
    }
    let last = last_index(&state.entries);
    if hard_state.commit > last {
        return Err(format!(
            "commit {} beyond last index {last}",
            hard_state.commit
        ));
    }
    state.hard_state = hard_state;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use raft::eraftpb::EntryType;

    fn entry(index: u64, term: u64) -> Entry {
        let mut entry = Entry::new();
        entry.index = index;
        entry.term = term;
        entry.data = format!("data {index}.{term}").into_bytes().into();
        entry.context = index.to_le_bytes().to_vec().into();
        entry
    }

    fn entries(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        indexes.map(|i| entry(i, term)).collect()
    }

    fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
        let mut hard_state = HardState::new();
        hard_state.term = term;
        hard_state.vote = vote;
        hard_state.commit = commit;
        hard_state
    }

    /// A file of four records, and where each record starts.
    fn sample() -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        starts.push(bytes.len());
        encode_entries(&entries(1..=3, 1), &mut bytes).unwrap();
        starts.push(bytes.len());
        encode_hard_state(&hard_state(1, 2, 2), &mut bytes);
        starts.push(bytes.len());
        let mut config_change = entry(3, 2);
        config_change.entry_type = EntryType::EntryConfChange;
        let mut replacing = vec![config_change];
        replacing.push(entry(4, 2));
        encode_entries(&replacing, &mut bytes).unwrap();
        starts.push(bytes.len());
        encode_hard_state(&hard_state(2, 1, 4), &mut bytes);
        (bytes, starts)
    }

    #[test]
    fn round_trip_replaces_from_the_first_index() {
        let (bytes, _) = sample();
        let recovered = recover(&bytes).unwrap();
        assert_eq!(recovered.torn, None);
        assert_eq!(recovered.valid_len, bytes.len());
        assert_eq!(recovered.hard_state, hard_state(2, 1, 4));
        let mut expected = entries(1..=2, 1);
        expected.push(entry(3, 2));
        expected[2].entry_type = EntryType::EntryConfChange;
        expected.push(entry(4, 2));
        assert_eq!(recovered.entries, expected);
        assert_eq!(recovered.check(), Ok(()));
        assert_eq!(recover(&[]), Ok(Recovered::default()));
    }

    /// The state of the records before `start`, and that the file cut there is whole.
    fn prefix(bytes: &[u8], start: usize) -> Recovered {
        let before = recover(&bytes[..start]).unwrap();
        assert_eq!(before.torn, None);
        before
    }

    /// `recovered` is `before` with a torn tail cut at `before.valid_len`.
    fn assert_torn(recovered: Result<Recovered, Damage>, before: &Recovered, at: &str) {
        let recovered = recovered.unwrap_or_else(|e| panic!("{at}: {e}"));
        assert_eq!(recovered.valid_len, before.valid_len, "{at}");
        assert!(recovered.torn.is_some(), "{at}");
        assert_eq!(
            (&recovered.hard_state, &recovered.entries),
            (&before.hard_state, &before.entries),
            "{at}"
        );
    }

    #[test]
    fn torn_last_record_is_dropped_at_every_cut() {
        let (bytes, starts) = sample();
        let last = *starts.last().unwrap();
        let before = prefix(&bytes, last);
        assert_eq!(before.hard_state, hard_state(1, 2, 2));
        for cut in last + 1..bytes.len() {
            assert_torn(recover(&bytes[..cut]), &before, &format!("cut at {cut}"));
        }
    }

    #[test]
    fn a_flipped_byte_in_the_last_record_is_a_torn_tail() {
        let (bytes, starts) = sample();
        let last = *starts.last().unwrap();
        let before = prefix(&bytes, last);
        for position in last..bytes.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut flipped = bytes.clone();
                flipped[position] ^= mask;
                let at = format!("byte {position} ^ {mask:#x}");
                assert_torn(recover(&flipped), &before, &at);
            }
        }
    }

    /// The flip the issue is about: cutting the file there would drop the synced records
    /// after it (a vote among them), so replay refuses, naming the record.
    #[test]
    fn a_flipped_byte_in_a_record_others_follow_is_damage_naming_its_offset() {
        let (bytes, starts) = sample();
        for (record, window) in starts.windows(2).enumerate() {
            let (start, next) = (window[0], window[1]);
            for position in start..next {
                for mask in [0x01, 0x80, 0xff] {
                    let mut flipped = bytes.clone();
                    flipped[position] ^= mask;
                    let at = format!("record {record}, byte {position} ^ {mask:#x}");
                    let damage = recover(&flipped).expect_err(&at);
                    assert_eq!(damage.offset, start, "{at}");
                    let message = damage.to_string();
                    assert!(
                        message.starts_with(&format!("record at byte {start}: ")),
                        "{at}: {message}"
                    );
                    assert!(
                        message.contains(&format!("a whole record follows at byte {next}")),
                        "{at}: {message}"
                    );
                }
            }
        }
    }

    /// What a crash can leave on a file system that made the new length durable before
    /// the data: zeros where the last write did not reach the disk.
    #[test]
    fn zeros_in_or_after_the_last_record_are_a_torn_tail_and_before_a_record_damage() {
        let (bytes, starts) = sample();
        let last = *starts.last().unwrap();
        let before = prefix(&bytes, last);
        let mut zeros_after = bytes.clone();
        zeros_after.resize(bytes.len() + 4096, 0);
        let recovered = recover(&zeros_after).unwrap();
        assert_eq!(recovered.valid_len, bytes.len());
        assert!(recovered.torn.is_some());
        for from in last..bytes.len() {
            if bytes[from..].iter().all(|b| *b == 0) {
                continue; // the record ends in zeros of its own
            }
            let mut zeroed = bytes.clone();
            zeroed[from..].fill(0);
            zeroed.resize(bytes.len() + 100, 0);
            assert_torn(recover(&zeroed), &before, &format!("zeros from {from}"));
        }
        let mut zeroed = bytes.clone();
        zeroed[starts[1]..starts[1] + 4].fill(0);
        assert_eq!(recover(&zeroed).unwrap_err().offset, starts[1]);
    }

    /// Well-formed records that no raft-rs log could have written: damage wherever they
    /// are (their crc matches: no torn write made them), and a bad record that a valid one
    /// follows is damage too.
    #[test]
    fn records_raft_could_not_have_written_are_damage() {
        let entries_record = |list: Vec<Entry>| {
            let mut bytes = Vec::new();
            encode_entries(&list, &mut bytes).unwrap();
            bytes
        };
        let hard_state_record = |term, vote, commit| {
            let mut bytes = Vec::new();
            encode_hard_state(&hard_state(term, vote, commit), &mut bytes);
            bytes
        };
        let record = |kind, payload: &[u8]| {
            let mut bytes = Vec::new();
            push_record(kind, payload, &mut bytes);
            bytes
        };
        let mut not_consecutive = entries(1..=3, 2);
        not_consecutive[2].index = 5;
        let mut over_the_bound = u32::try_from(RECORD_PAYLOAD_BYTES_MAX + 1)
            .unwrap()
            .to_le_bytes()
            .to_vec();
        over_the_bound.extend_from_slice(&[0; 5]);
        let cases = [
            ("gap", entries_record(entries(5..=5, 2))),
            ("index 0", entries_record(entries(0..=0, 2))),
            ("replaces committed", entries_record(entries(2..=2, 3))),
            ("term goes back", entries_record(entries(4..=4, 1))),
            ("term 0", entries_record(entries(4..=4, 0))),
            ("not consecutive", entries_record(not_consecutive)),
            ("commit beyond log", hard_state_record(2, 1, 4)),
            ("commit goes back", hard_state_record(2, 1, 1)),
            ("hard state term goes back", hard_state_record(1, 1, 2)),
            ("hard state short", record(KIND_HARD_STATE, &[0; 16])),
            ("no entries", record(KIND_ENTRIES, &[])),
            ("entry cut off", record(KIND_ENTRIES, &[9, 0, 0, 0, 8])),
            ("not protobuf", record(KIND_ENTRIES, &[1, 0, 0, 0, 0xff])),
            ("unknown kind", record(3, &[])),
        ];
        let mut valid = entries_record(entries(1..=3, 2));
        valid.extend(hard_state_record(2, 1, 2));
        let before = recover(&valid).unwrap();
        assert_eq!(before.torn, None);
        let followed = |bad: &[u8]| {
            let mut bytes = valid.clone();
            bytes.extend_from_slice(bad);
            bytes.extend(hard_state_record(9, 9, 3));
            bytes
        };
        for (name, bad) in &cases {
            let alone = [valid.as_slice(), bad].concat();
            for bytes in [alone, followed(bad)] {
                let damage = recover(&bytes).expect_err(name);
                assert_eq!(damage.offset, valid.len(), "{name}");
                assert!(
                    damage.reason.contains("its crc matches"),
                    "{name}: {damage}"
                );
            }
        }
        // A length over the bound is not a whole record: torn at the end, damage before one.
        let alone = [valid.as_slice(), &over_the_bound].concat();
        let recovered = recover(&alone).unwrap();
        assert_eq!(recovered.valid_len, valid.len());
        assert!(recovered.torn.is_some());
        let damage = recover(&followed(&over_the_bound)).unwrap_err();
        assert_eq!(damage.offset, valid.len());
    }

    /// Bytes after a bad record with a plausible header at every position: the crc work
    /// is bounded, and past the bound the bytes are not taken for a torn tail.
    #[test]
    fn the_search_for_a_record_after_a_bad_one_is_bounded() {
        let (bytes, starts) = sample();
        let last = *starts.last().unwrap();
        // A hard state header (24 bytes, kind 2, a wrong crc) repeated, shifted so that
        // many positions parse as one.
        let mut tail = Vec::new();
        for _ in 0..64 {
            tail.extend_from_slice(&24u32.to_le_bytes());
            tail.extend_from_slice(&[0xee; 4]);
            tail.push(KIND_HARD_STATE);
        }
        let file = [&bytes[..last], &tail].concat();
        let recovered = recover_within(&file, 64 * 25).unwrap();
        assert_eq!(recovered.valid_len, last);
        let damage = recover_within(&file, 10 * 25).unwrap_err();
        assert_eq!(damage.offset, last);
        assert!(
            damage.reason.contains("too many record-like positions"),
            "{damage}"
        );
    }

    #[test]
    fn hand_built_states_are_checked() {
        let mut state = Recovered {
            entries: entries(1..=2, 1),
            hard_state: hard_state(1, 0, 2),
            ..Recovered::default()
        };
        assert_eq!(state.check(), Ok(()));
        state.hard_state.commit = 3;
        assert!(state.check().is_err());
        state.hard_state.commit = 0;
        state.entries[1].index = 3;
        assert!(state.check().is_err());
        state.entries[1].index = 2;
        state.entries[1].term = 0;
        assert!(state.check().is_err());
    }

    /// A raft-like history from random numbers, with the state after each record.
    fn history(ops: &[(bool, u8, u8)]) -> (Vec<u8>, Vec<(usize, Recovered)>) {
        let mut model = Recovered::default();
        let mut bytes = Vec::new();
        let mut states = vec![(0, model.clone())];
        for &(is_entries, a, b) in ops {
            let last = last_index(&model.entries);
            let commit = model.hard_state.commit;
            let (a, b) = (u64::from(a), u64::from(b));
            if is_entries {
                let first = commit + 1 + a % (last - commit + 1);
                let previous = model.entries.len().min(usize::try_from(first).unwrap() - 1);
                let term = previous.checked_sub(1).map_or(1, |i| model.entries[i].term) + b % 2;
                let new = entries(first..=first + b % 3, term);
                encode_entries(&new, &mut bytes).unwrap();
                model.entries.truncate(previous);
                model.entries.extend(new);
            } else {
                let last_term = model.entries.last().map_or(0, |e| e.term);
                let term = model.hard_state.term.max(last_term) + b % 2;
                model.hard_state = hard_state(term, b, commit + a % (last - commit + 1));
                encode_hard_state(&model.hard_state, &mut bytes);
            }
            model.valid_len = bytes.len();
            states.push((bytes.len(), model.clone()));
        }
        (bytes, states)
    }

    /// Where each record of `states` (from [`history`]) starts and ends.
    fn spans(states: &[(usize, Recovered)]) -> Vec<(usize, usize)> {
        states.windows(2).map(|w| (w[0].0, w[1].0)).collect()
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            match recover(&bytes) {
                Ok(recovered) => {
                    prop_assert!(recovered.valid_len <= bytes.len());
                    prop_assert_eq!(recovered.check(), Ok(()));
                }
                Err(damage) => prop_assert!(damage.offset < bytes.len()),
            }
        }

        #[test]
        fn random_records_never_panic(
            records in proptest::collection::vec(
                (1u8..=3, proptest::collection::vec(any::<u8>(), 0..64)), 0..8),
        ) {
            // Valid framing and crc around random payloads reach the payload decoders.
            let mut bytes = Vec::new();
            for (kind, payload) in &records {
                push_record(*kind, payload, &mut bytes);
            }
            match recover(&bytes) {
                Ok(recovered) => {
                    prop_assert!(recovered.valid_len <= bytes.len());
                    prop_assert_eq!(recovered.check(), Ok(()));
                }
                Err(damage) => prop_assert!(damage.offset < bytes.len()),
            }
        }

        #[test]
        fn any_cut_is_a_torn_tail_and_recovers_the_longest_valid_prefix(
            ops in proptest::collection::vec((any::<bool>(), any::<u8>(), any::<u8>()), 0..24),
            cut in any::<prop::sample::Index>(),
            garbage in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let (bytes, states) = history(&ops);
            prop_assert_eq!(&recover(&bytes).unwrap(), &states.last().unwrap().1);
            let cut = cut.index(bytes.len() + 1);
            let (end, expected) = states.iter().rfind(|(end, _)| *end <= cut).unwrap();
            let recovered = recover(&bytes[..cut]).unwrap();
            prop_assert_eq!(recovered.valid_len, *end);
            prop_assert_eq!(recovered.torn.is_some(), cut != *end);
            prop_assert_eq!(&recovered.hard_state, &expected.hard_state);
            prop_assert_eq!(&recovered.entries, &expected.entries);
            prop_assert_eq!(recovered.check(), Ok(()));
            // Garbage after the last whole record never adds state.
            let mut tail = bytes[..*end].to_vec();
            tail.extend_from_slice(&garbage);
            let recovered = recover(&tail).unwrap();
            prop_assert_eq!(&recovered.entries, &expected.entries);
            prop_assert_eq!(&recovered.hard_state, &expected.hard_state);
        }

        /// Random damage in a record that others follow (bytes flipped, a range zeroed, or
        /// bytes inserted before it) is reported as damage at that record; the same in the
        /// last record is a torn tail.
        #[test]
        fn damage_before_a_whole_record_is_reported_and_in_the_last_one_cut(
            ops in proptest::collection::vec((any::<bool>(), any::<u8>(), any::<u8>()), 2..24),
            which in any::<prop::sample::Index>(),
            how in 0u8..3,
            places in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
            inserted in proptest::collection::vec(any::<u8>(), 1..40),
        ) {
            let (bytes, states) = history(&ops);
            let spans = spans(&states);
            let record = which.index(spans.len());
            let (start, end) = spans[record];
            let mut damaged = bytes.clone();
            match how {
                0 => {
                    for (place, mask) in &places {
                        damaged[start + place.index(end - start)] ^= mask;
                    }
                }
                1 => {
                    let a = start + places[0].0.index(end - start);
                    let b = a + 1 + places.last().unwrap().0.index(end - a);
                    damaged[a..b].fill(0);
                    if damaged == bytes {
                        damaged[a] = 0xff; // the range was zeros already
                    }
                }
                _ => {
                    damaged.splice(start..start, inserted.iter().copied());
                }
            }
            prop_assume!(damaged != bytes);
            let before = &states[record].1;
            let expect_damage = record + 1 < spans.len() || how == 2;
            match recover(&damaged) {
                Ok(recovered) => {
                    prop_assert!(!expect_damage, "record {} of {}: {:?}", record, spans.len(), recovered.torn);
                    prop_assert_eq!(recovered.valid_len, start);
                    prop_assert!(recovered.torn.is_some());
                    prop_assert_eq!(&recovered.hard_state, &before.hard_state);
                    prop_assert_eq!(&recovered.entries, &before.entries);
                }
                Err(damage) => {
                    prop_assert!(expect_damage, "record {} of {}: {}", record, spans.len(), damage);
                    prop_assert_eq!(damage.offset, start, "{}", damage);
                }
            }
        }
    }
}
