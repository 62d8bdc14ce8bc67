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
//! Durability: the driver makes every record durable before it performs any later action,
//! so the bytes after the first invalid or incomplete record were never acted upon (a write
//! torn by a crash); replay stops there, and [`Recovered::valid_len`] says where the driver
//! truncates the file before appending again. The bytes are untrusted input: lengths are
//! bounded before use, and no input panics.
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
    /// Why replay stopped before the end of the file (a torn or corrupt record), if it did.
    pub torn: Option<String>,
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

/// Replays a Raft file: the state after its longest prefix of valid records.
#[must_use]
pub fn recover(bytes: &[u8]) -> Recovered {
    let mut recovered = Recovered::default();
    while let Some(rest) = bytes.get(recovered.valid_len..).filter(|r| !r.is_empty()) {
        match replay_record(rest, &mut recovered) {
            Ok(record_len) => recovered.valid_len += record_len,
            Err(reason) => {
                let at = recovered.valid_len;
                recovered.torn = Some(format!("record at byte {at}: {reason}"));
                break;
            }
        }
    }
    recovered
}

/// Checks the record at the start of `bytes` and applies it to `state`; its length.
fn replay_record(bytes: &[u8], state: &mut Recovered) -> Result<usize, String> {
    let header = bytes
        .get(..RECORD_HEADER_BYTES)
        .ok_or("incomplete record header")?;
    let (len_bytes, rest) = header.split_at(4);
    let (crc_bytes, kind) = rest.split_at(4);
    let payload_len = usize::try_from(read_u32(len_bytes)).unwrap_or(usize::MAX);
    if payload_len > RECORD_PAYLOAD_BYTES_MAX {
        return Err(format!(
            "payload length {payload_len} > {RECORD_PAYLOAD_BYTES_MAX}"
        ));
    }
    let record_len = RECORD_HEADER_BYTES + payload_len;
    let payload = bytes
        .get(RECORD_HEADER_BYTES..record_len)
        .ok_or("incomplete record payload")?;
    let crc = crc32c::crc32c_append(crc32c::crc32c(kind), payload);
    if crc != read_u32(crc_bytes) {
        return Err("crc mismatch".into());
    }
    match kind {
        [KIND_ENTRIES] => replay_entries(payload, state)?,
        [KIND_HARD_STATE] => replay_hard_state(payload, state)?,
        _ => return Err(format!("unknown record kind {kind:?}")),
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
        let recovered = recover(&bytes);
        assert_eq!(recovered.torn, None);
        assert_eq!(recovered.valid_len, bytes.len());
        assert_eq!(recovered.hard_state, hard_state(2, 1, 4));
        let mut expected = entries(1..=2, 1);
        expected.push(entry(3, 2));
        expected[2].entry_type = EntryType::EntryConfChange;
        expected.push(entry(4, 2));
        assert_eq!(recovered.entries, expected);
        assert_eq!(recovered.check(), Ok(()));
        assert_eq!(recover(&[]), Recovered::default());
    }

    #[test]
    fn torn_last_record_is_dropped_at_every_cut() {
        let (bytes, starts) = sample();
        let last = *starts.last().unwrap();
        let before = recover(&bytes[..last]);
        assert_eq!(before.torn, None);
        assert_eq!(before.hard_state, hard_state(1, 2, 2));
        for cut in last + 1..bytes.len() {
            let recovered = recover(&bytes[..cut]);
            assert_eq!(recovered.valid_len, last, "cut at {cut}");
            assert!(recovered.torn.is_some(), "cut at {cut}");
            assert_eq!(
                (&recovered.hard_state, &recovered.entries),
                (&before.hard_state, &before.entries),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_flipped_byte_stops_replay_before_its_record() {
        let (bytes, starts) = sample();
        for position in 0..bytes.len() {
            let start = *starts.iter().rfind(|s| **s <= position).unwrap();
            let before = recover(&bytes[..start]);
            for mask in [0x01, 0x80, 0xff] {
                let mut flipped = bytes.clone();
                flipped[position] ^= mask;
                let recovered = recover(&flipped);
                let at = format!("byte {position} ^ {mask:#x}");
                assert_eq!(recovered.valid_len, start, "{at}");
                assert!(recovered.torn.is_some(), "{at}");
                assert_eq!(recovered.hard_state, before.hard_state, "{at}");
                assert_eq!(recovered.entries, before.entries, "{at}");
            }
        }
    }

    /// Well-formed records that no raft-rs log could have written.
    #[test]
    fn records_raft_could_not_have_written_stop_replay() {
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
            ("length over the bound", over_the_bound),
        ];
        let mut valid = entries_record(entries(1..=3, 2));
        valid.extend(hard_state_record(2, 1, 2));
        let before = recover(&valid);
        assert_eq!(before.torn, None);
        for (name, bad) in &cases {
            let mut bytes = valid.clone();
            bytes.extend_from_slice(bad);
            // A valid record after the bad one is not replayed either.
            bytes.extend(hard_state_record(9, 9, 3));
            let recovered = recover(&bytes);
            assert_eq!(recovered.valid_len, valid.len(), "{name}");
            assert!(recovered.torn.is_some(), "{name}");
            assert_eq!(recovered.hard_state, before.hard_state, "{name}");
            assert_eq!(recovered.entries, before.entries, "{name}");
        }
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

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let recovered = recover(&bytes);
            prop_assert!(recovered.valid_len <= bytes.len());
            prop_assert_eq!(recovered.check(), Ok(()));
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
            let recovered = recover(&bytes);
            prop_assert!(recovered.valid_len <= bytes.len());
            prop_assert_eq!(recovered.check(), Ok(()));
        }

        #[test]
        fn any_cut_recovers_the_longest_valid_prefix(
            ops in proptest::collection::vec((any::<bool>(), any::<u8>(), any::<u8>()), 0..24),
            cut in any::<prop::sample::Index>(),
            garbage in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let (bytes, states) = history(&ops);
            prop_assert_eq!(&recover(&bytes), &states.last().unwrap().1);
            let cut = cut.index(bytes.len() + 1);
            let (end, expected) = states.iter().rfind(|(end, _)| *end <= cut).unwrap();
            let recovered = recover(&bytes[..cut]);
            prop_assert_eq!(recovered.valid_len, *end);
            prop_assert_eq!(recovered.torn.is_some(), cut != *end);
            prop_assert_eq!(&recovered.hard_state, &expected.hard_state);
            prop_assert_eq!(&recovered.entries, &expected.entries);
            prop_assert_eq!(recovered.check(), Ok(()));
            // Garbage after the last whole record never adds state.
            let mut tail = bytes[..*end].to_vec();
            tail.extend_from_slice(&garbage);
            let recovered = recover(&tail);
            prop_assert_eq!(&recovered.entries, &expected.entries);
            prop_assert_eq!(&recovered.hard_state, &expected.hard_state);
        }
    }
}
