//! The closed loop over one connection, the same for both servers: a writer thread sends
//! requests while a slot is free, and this thread reads the replies, frees the slots and
//! times each request from its send to its reply.
//!
//! A slot stands for one outstanding request and holds its send time; there are
//! `inflight` of them, handed between the threads over a bounded channel (the free
//! list). The writer coalesces the requests of every free slot into one write, as the
//! servers' own clients buffer theirs. Once the run's time is up the writer stops sending
//! requests and sends a ping now and then instead; the servers answer a ping after
//! everything before it (NATS: after the publishes were read, Redis: after the replies),
//! so a reader waiting in `read` for the last replies always wakes up to check whether it
//! has them all.

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, sync_channel};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::input::Input;

/// The writer stops adding free slots' requests to a write past this many bytes.
const WRITE_BYTES: usize = 64 << 10;
/// How often the writer pings once it stopped sending, and how long it waits for a free
/// slot before it looks at the clock and the keep-alives again.
const WRITER_TICK: Duration = Duration::from_millis(20);

/// Writes requests.
pub trait Encoder: Send + 'static {
    /// Appends the request of `slot` to `out`.
    fn encode(&mut self, slot: usize, out: &mut Vec<u8>);
    /// Appends a ping to `out`: the server answers it after what came before it.
    fn ping(&self, out: &mut Vec<u8>);
}

/// Reads replies.
pub trait Decoder {
    /// Reads until a request completes or the server answers a ping. Sets
    /// `shared.pong_owed` when the server pings (NATS), for the writer to answer.
    fn next(&mut self, input: &mut Input, shared: &Shared) -> io::Result<Reply>;
}

/// What the server's next reply was.
pub enum Reply {
    /// The request of `slot` completed; `error` if the server refused any of its records.
    Done {
        /// The slot the request held.
        slot: usize,
        /// The server's error, if any.
        error: Option<String>,
    },
    /// The answer to a ping.
    Pong,
}

/// The state both threads see.
pub struct Shared {
    /// Per slot: when its request was sent, ns since the run's start.
    sent_at_ns: Box<[AtomicU64]>,
    /// Requests written to the socket.
    sent: AtomicU64,
    /// The writer sends no more requests (`sent` is final).
    writer_finished: AtomicBool,
    /// The reader has every reply, or failed: the writer stops.
    stop: AtomicBool,
    /// The server pinged; the writer answers.
    pub pong_owed: AtomicBool,
}

/// How the run goes.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Slots.
    pub inflight: usize,
    /// Records in one request.
    pub records_per_request: u64,
    /// Sending stops this long after the start.
    pub duration: Duration,
    /// Completions before this are left out of the results.
    pub warmup: Duration,
    /// The run fails when no request completes for this long while some are
    /// outstanding (answered pings do not count).
    pub reply_timeout: Duration,
}

/// What one run measured.
pub struct Outcome {
    /// Requests completed without error after the warm-up.
    pub requests: u64,
    /// Their records.
    pub records: u64,
    /// Records the server acknowledged, warm-up included (for the stored-count check).
    pub records_acked: u64,
    /// From the end of the warm-up to the last completion, at least the whole window.
    pub elapsed_s: f64,
    /// Requests the server refused (any record), warm-up included.
    pub errors: u64,
    /// The first refusal's text.
    pub first_error: Option<String>,
    /// Latency of each measured request, µs from its send to its reply.
    pub latency_us: Histogram<u64>,
}

/// Runs `plan` over the connection (`stream` writes, `input` reads).
pub fn run<E: Encoder, D: Decoder>(
    stream: TcpStream,
    input: &mut Input,
    encoder: E,
    decoder: &mut D,
    plan: &Plan,
) -> io::Result<Outcome> {
    assert!(plan.inflight > 0, "no slots");
    assert!(
        plan.warmup < plan.duration,
        "{:?} >= {:?}",
        plan.warmup,
        plan.duration
    );
    let shared = Arc::new(Shared {
        sent_at_ns: (0..plan.inflight).map(|_| AtomicU64::new(0)).collect(),
        sent: AtomicU64::new(0),
        writer_finished: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        pong_owed: AtomicBool::new(false),
    });
    let (free, free_slots) = sync_channel(plan.inflight);
    for slot in 0..plan.inflight {
        free.send(slot)
            .map_err(|_| io::Error::other("free list closed"))?;
    }
    let start = Instant::now();
    let writer = {
        let (shared, plan) = (Arc::clone(&shared), *plan);
        thread::Builder::new()
            .name("writer".to_string())
            .spawn(move || write_loop(stream, encoder, free_slots, &shared, &plan, start))?
    };
    let read = read_loop(input, decoder, &free, &shared, plan, start);
    shared.stop.store(true, Ordering::Release);
    if read.is_err() {
        // The writer may be blocked in a write to a server that stopped reading.
        let _ = input.stream().shutdown(Shutdown::Both);
    }
    let written = writer
        .join()
        .map_err(|_| io::Error::other("the writer thread panicked"))?;
    let outcome = read?;
    written?;
    Ok(outcome)
}

fn write_loop<E: Encoder>(
    mut stream: TcpStream,
    mut encoder: E,
    free_slots: Receiver<usize>,
    shared: &Shared,
    plan: &Plan,
    start: Instant,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(WRITE_BYTES * 2);
    while !shared.stop.load(Ordering::Acquire) && start.elapsed() < plan.duration {
        let first = match free_slots.recv_timeout(WRITER_TICK) {
            Ok(slot) => Some(slot),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut count = 0;
        if let Some(first) = first {
            let now_ns = elapsed_ns(start);
            let mut slot = first;
            loop {
                shared.sent_at_ns[slot].store(now_ns, Ordering::Release);
                encoder.encode(slot, &mut out);
                count += 1;
                if out.len() >= WRITE_BYTES {
                    break;
                }
                match free_slots.try_recv() {
                    Ok(next) => slot = next,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
        }
        answer_pings(shared, &mut out);
        if !out.is_empty() {
            stream.write_all(&out)?;
            out.clear();
        }
        shared.sent.fetch_add(count, Ordering::AcqRel);
    }
    shared.writer_finished.store(true, Ordering::Release);
    while !shared.stop.load(Ordering::Acquire) {
        answer_pings(shared, &mut out);
        encoder.ping(&mut out);
        stream.write_all(&out)?;
        out.clear();
        thread::sleep(WRITER_TICK);
    }
    Ok(())
}

fn answer_pings(shared: &Shared, out: &mut Vec<u8>) {
    if shared.pong_owed.swap(false, Ordering::AcqRel) {
        out.extend_from_slice(b"PONG\r\n");
    }
}

fn read_loop<D: Decoder>(
    input: &mut Input,
    decoder: &mut D,
    free: &SyncSender<usize>,
    shared: &Shared,
    plan: &Plan,
    start: Instant,
) -> io::Result<Outcome> {
    let warmup_ns = duration_ns(plan.warmup);
    let mut outcome = Outcome {
        requests: 0,
        records: 0,
        records_acked: 0,
        elapsed_s: 0.0,
        errors: 0,
        first_error: None,
        latency_us: latency_histogram(),
    };
    let (mut completed, mut last_ns, mut progress_ns) = (0u64, warmup_ns, 0);
    loop {
        if shared.writer_finished.load(Ordering::Acquire)
            && completed == shared.sent.load(Ordering::Acquire)
        {
            break;
        }
        let (slot, error) = match decoder.next(input, shared)? {
            Reply::Pong => {
                let stalled_ns = elapsed_ns(start).saturating_sub(progress_ns);
                if stalled_ns > duration_ns(plan.reply_timeout) {
                    let outstanding = shared.sent.load(Ordering::Acquire) - completed;
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "{outstanding} requests unanswered for {:?}",
                            plan.reply_timeout
                        ),
                    ));
                }
                continue;
            }
            Reply::Done { slot, error } => (slot, error),
        };
        assert!(slot < plan.inflight, "decoder returned slot {slot}");
        let now_ns = elapsed_ns(start);
        progress_ns = now_ns;
        let sent_ns = shared.sent_at_ns[slot].load(Ordering::Acquire);
        completed += 1;
        // The writer may be gone (its time is up): a free slot nobody takes is fine.
        let _ = free.try_send(slot);
        if let Some(error) = error {
            outcome.errors += 1;
            outcome.first_error.get_or_insert(error);
            continue;
        }
        outcome.records_acked += plan.records_per_request;
        if now_ns >= warmup_ns {
            outcome.requests += 1;
            outcome.records += plan.records_per_request;
            outcome
                .latency_us
                .saturating_record(now_ns.saturating_sub(sent_ns) / 1_000);
            last_ns = now_ns;
        }
    }
    let window_s = (plan.duration - plan.warmup).as_secs_f64();
    outcome.elapsed_s = ((last_ns - warmup_ns) as f64 / 1e9).max(window_s);
    Ok(outcome)
}

/// A record's value: the same bytes for every record (none of the servers compresses
/// or deduplicates values).
pub fn record_value(size: usize) -> Vec<u8> {
    (0..=250u8).cycle().take(size).collect()
}

/// Latencies in µs: 1 µs to 10 min, 3 significant digits (as shardlog-bench).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static histogram bounds are valid")
}

fn elapsed_ns(start: Instant) -> u64 {
    duration_ns(start.elapsed())
}

fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
