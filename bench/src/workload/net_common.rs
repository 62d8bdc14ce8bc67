//! What the network workloads share: the run's clock and phases (connect, start together,
//! warm-up, stop), counters and latency histograms every executor thread writes to, the
//! executors themselves, and the batches producers send.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use shardlog_engine::TimestampMs;
use shardlog_engine::record::BatchBuilder;
use shardlog_net::api::Acks;

use crate::args::{AcksArg, NetArgs};
use crate::latency::histogram;
use crate::timeline::{SecondPoint, Timeline};

/// glommio I/O memory of each bench executor: the bench does no file I/O.
pub const IO_MEMORY: usize = 1 << 20;

/// How often waiting tasks look at the shared flags.
pub const POLL: Duration = Duration::from_millis(1);

/// Maps the command-line acks to the wire's.
pub fn acks(arg: AcksArg) -> Acks {
    match arg {
        AcksArg::None => Acks::None,
        AcksArg::Leader => Acks::Leader,
        AcksArg::All => Acks::All,
    }
}

/// Warm-up in effect: `--warmup`, else none for `--count` runs and for a run that reads a
/// backlog (`consume --from beginning`: the records there may be all there is, and a
/// warm-up would read them unmeasured and report nothing), and 1 s for the other duration
/// runs (producing, or following the tail).
pub fn warmup(args: &NetArgs, reads_backlog: bool) -> Duration {
    let default = if args.count.is_some() || reads_backlog {
        0.0
    } else {
        1.0
    };
    Duration::from_secs_f64(args.warmup.unwrap_or(default).max(0.0))
}

/// Fails a run in which `side` measured no record, saying why, rather than report zeros
/// as a result: every record fell in the warm-up, or there was none.
pub fn check_measured(run: &Run, side: &Side, what: &str) -> anyhow::Result<()> {
    if side.measured.records() > 0 {
        return Ok(());
    }
    let seen = side.all.records();
    if seen > 0 {
        anyhow::bail!(
            "nothing measured: all {seen} records {what} fell in the {:.1} s warm-up \
             (lower --warmup, or give the run more records or time)",
            run.warmup.as_secs_f64()
        );
    }
    anyhow::bail!("nothing measured: no record {what} during the run");
}

/// Records, bytes and requests of one side (produce or consume).
#[derive(Debug, Default)]
pub struct Counter {
    /// Records.
    pub records: AtomicU64,
    /// Batch bytes.
    pub bytes: AtomicU64,
    /// Requests (produce requests or fetches).
    pub requests: AtomicU64,
}

impl Counter {
    /// Adds one request's worth.
    pub fn add(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Records so far.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Bytes so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Requests so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// One side's counters: everything, and what fell after the warm-up.
#[derive(Debug)]
pub struct Side {
    /// Everything, warm-up included (progress lines, stop conditions).
    pub all: Counter,
    /// After the warm-up only (the results).
    pub measured: Counter,
    /// Nanoseconds from the start to the side's last completion.
    pub last_ns: AtomicU64,
    /// Latency of the side's requests after the warm-up, microseconds.
    pub latency: Mutex<Histogram<u64>>,
    /// Requests that failed after the client's retries (the run went on), warm-up included.
    pub errors: AtomicU64,
    /// What completed and failed in each second from the start, warm-up included.
    pub timeline: Mutex<Timeline>,
}

impl Default for Side {
    fn default() -> Side {
        Side {
            all: Counter::default(),
            measured: Counter::default(),
            last_ns: AtomicU64::new(0),
            latency: Mutex::new(histogram()),
            errors: AtomicU64::new(0),
            timeline: Mutex::new(Timeline::default()),
        }
    }
}

impl Side {
    /// Counts a completed request at `done` and records its latency if measured.
    pub fn complete(&self, run: &Run, done: Instant, records: u64, bytes: u64, latency_us: u64) {
        self.all.add(records, bytes);
        lock_timeline(&self.timeline).complete(
            run.since_start_ns(done),
            records,
            bytes,
            latency_us,
        );
        if run.measured(done) {
            self.measured.add(records, bytes);
            record(&self.latency, latency_us, 1);
            self.last_ns
                .fetch_max(run.since_start_ns(done), Ordering::Relaxed);
        }
    }

    /// A copy of the measured latency histogram.
    pub fn latency(&self) -> Histogram<u64> {
        lock(&self.latency).clone()
    }

    /// Counts a request that failed at `at` after the client's retries.
    pub fn error(&self, run: &Run, at: Instant) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        lock_timeline(&self.timeline).error(run.since_start_ns(at));
    }

    /// Requests failed so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The per-second series up to now.
    pub fn series(&self, run: &Run) -> Vec<SecondPoint> {
        let end = run.since_start_ns(Instant::now());
        lock_timeline(&self.timeline).series(end)
    }
}

fn lock_timeline(timeline: &Mutex<Timeline>) -> std::sync::MutexGuard<'_, Timeline> {
    // Poisoned only if a thread panicked while bucketing: the buckets are still counts.
    timeline
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records `count` samples of `us` microseconds into a shared histogram.
pub fn record(histogram: &Mutex<Histogram<u64>>, us: u64, count: u64) {
    lock(histogram).saturating_record_n(us.max(1), count);
}

fn lock(histogram: &Mutex<Histogram<u64>>) -> std::sync::MutexGuard<'_, Histogram<u64>> {
    histogram
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The state of one run, shared by every executor thread and the progress printer.
#[derive(Debug)]
pub struct Run {
    /// The start (set once every task is connected and in place).
    start: OnceLock<Instant>,
    /// UNIX nanoseconds at `start` (the epoch of e2e send times).
    start_unix_ns: OnceLock<u64>,
    /// Warm-up left out of the results.
    pub warmup: Duration,
    /// Tasks that are connected and ready to start.
    ready: AtomicUsize,
    /// Set on the first failure, or when the run is over: every task winds down.
    stop: AtomicBool,
    /// e2e: nanoseconds from the start at which the producers were all done (0: not yet).
    producers_done_ns: AtomicU64,
    /// Produce side.
    pub produce: Side,
    /// Consume side (fetch latency).
    pub consume: Side,
    /// e2e: end-to-end latency per record after the warm-up, microseconds.
    pub e2e: Mutex<Histogram<u64>>,
    /// Open loop: how late producers sent each request after its intended time
    /// (the bench's own scheduling delay and window waits), microseconds.
    pub send_lag: Mutex<Histogram<u64>>,
    /// Why the run was stopped early, when no task failed (e.g. nothing left to read).
    failure: Mutex<Option<String>>,
}

impl Run {
    /// A run not yet started.
    pub fn new(warmup: Duration) -> Run {
        Run {
            start: OnceLock::new(),
            start_unix_ns: OnceLock::new(),
            warmup,
            ready: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            producers_done_ns: AtomicU64::new(0),
            produce: Side::default(),
            consume: Side::default(),
            e2e: Mutex::new(histogram()),
            send_lag: Mutex::new(histogram()),
            failure: Mutex::new(None),
        }
    }

    /// Stops the run as failed, for `reason`.
    pub fn fail(&self, reason: String) {
        self.failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert(reason);
        self.stop();
    }

    /// The reason given to [`Run::fail`], if any.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Adds a producer's send lags.
    pub fn add_send_lag(&self, lag: &Histogram<u64>) {
        // Same bounds on both sides: adding cannot fail.
        let _ = lock(&self.send_lag).add(lag);
    }

    /// A copy of the send-lag histogram.
    pub fn send_lag(&self) -> Histogram<u64> {
        lock(&self.send_lag).clone()
    }

    /// A copy of the measured e2e histogram.
    pub fn e2e_latency(&self) -> Histogram<u64> {
        lock(&self.e2e).clone()
    }

    /// A task is connected and in place.
    pub fn set_ready(&self) {
        self.ready.fetch_add(1, Ordering::SeqCst);
    }

    /// Tasks ready so far.
    pub fn ready(&self) -> usize {
        self.ready.load(Ordering::SeqCst)
    }

    /// Starts the clock (once).
    pub fn start_now(&self) {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let _ = self.start_unix_ns.set(unix);
        let _ = self.start.set(Instant::now());
    }

    /// The start, once set.
    pub fn start(&self) -> Option<Instant> {
        self.start.get().copied()
    }

    /// Waits (polling) until the clock starts or the run stops; the start if it started.
    pub async fn wait_start(&self) -> Option<Instant> {
        loop {
            if self.stopped() {
                return None;
            }
            if let Some(start) = self.start() {
                return Some(start);
            }
            glommio::timer::sleep(POLL).await;
        }
    }

    /// Nanoseconds from the start to `at` (0 before the start).
    pub fn since_start_ns(&self, at: Instant) -> u64 {
        self.start().map_or(0, |start| {
            u64::try_from(at.saturating_duration_since(start).as_nanos()).unwrap_or(u64::MAX)
        })
    }

    /// `at` as UNIX nanoseconds on the run's clock (monotonic, one epoch for every thread).
    pub fn unix_ns(&self, at: Instant) -> u64 {
        self.start_unix_ns.get().copied().unwrap_or(0) + self.since_start_ns(at)
    }

    /// UNIX nanoseconds on the run's clock back to an instant.
    pub fn instant_of_unix_ns(&self, unix_ns: u64) -> Option<Instant> {
        let start = self.start()?;
        let since = unix_ns.checked_sub(*self.start_unix_ns.get()?)?;
        start.checked_add(Duration::from_nanos(since))
    }

    /// Whether `at` is after the warm-up.
    pub fn measured(&self, at: Instant) -> bool {
        self.start()
            .is_some_and(|start| at.saturating_duration_since(start) >= self.warmup)
    }

    /// Asks every task to wind down.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Whether the run is stopping.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// e2e: marks the producers done now.
    pub fn set_producers_done(&self) {
        let ns = self
            .start()
            .map_or(1, |_| self.since_start_ns(Instant::now()).max(1));
        self.producers_done_ns.store(ns, Ordering::SeqCst);
    }

    /// e2e: when the producers were all done, if they are.
    pub fn producers_done(&self) -> Option<Instant> {
        let ns = self.producers_done_ns.load(Ordering::SeqCst);
        (ns > 0).then(|| self.start().map(|s| s + Duration::from_nanos(ns)))?
    }

    /// Seconds from the end of the warm-up to a side's last measured completion.
    pub fn measured_secs(&self, side: &Side) -> f64 {
        let last = Duration::from_nanos(side.last_ns.load(Ordering::Relaxed));
        last.saturating_sub(self.warmup).as_secs_f64()
    }
}

/// Runs `task(index)` on `threads` glommio executors (Placement::Unbound, small I/O
/// memory), task `i` on executor `i % threads`, and returns their results in order once
/// all are done. A task that fails stops the run (`run.stop()`).
pub fn spawn_tasks<T, F, Fut>(
    name: &str,
    threads: usize,
    tasks: usize,
    run: &std::sync::Arc<Run>,
    task: F,
) -> anyhow::Result<Vec<glommio::ExecutorJoinHandle<anyhow::Result<Vec<T>>>>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>> + 'static,
{
    let threads = threads.clamp(1, tasks.max(1));
    let mut handles = Vec::with_capacity(threads);
    for thread in 0..threads {
        let task = task.clone();
        let run = run.clone();
        let handle = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("{name}-{thread}"))
            .io_memory(IO_MEMORY)
            .spawn(move || async move {
                let spawned: Vec<_> = (thread..tasks)
                    .step_by(threads)
                    .map(|i| {
                        let task = task.clone();
                        let run = run.clone();
                        glommio::spawn_local(async move {
                            let result = task(i).await;
                            if result.is_err() {
                                run.stop();
                            }
                            result
                        })
                    })
                    .collect();
                let mut results = Vec::with_capacity(spawned.len());
                let mut first_error = None;
                for handle in spawned {
                    match handle.await {
                        Ok(value) => results.push(value),
                        Err(error) => {
                            first_error.get_or_insert(error);
                        }
                    }
                }
                first_error.map_or(Ok(results), Err)
            })
            .map_err(|e| anyhow::anyhow!("starting executor {name}-{thread}: {e}"))?;
        handles.push(handle);
    }
    Ok(handles)
}

/// Joins executors from [`spawn_tasks`]; the first error wins.
pub fn join_tasks<T: Send + 'static>(
    handles: Vec<glommio::ExecutorJoinHandle<anyhow::Result<Vec<T>>>>,
) -> anyhow::Result<Vec<T>> {
    let mut all = Vec::new();
    let mut first_error = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok(values)) => all.extend(values),
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            Err(error) => {
                first_error.get_or_insert(anyhow::anyhow!("executor failed: {error}"));
            }
        }
    }
    first_error.map_or(Ok(all), Err)
}

/// Runs one future on a fresh executor and returns its result (setup steps).
pub fn on_executor<T, F, Fut>(task: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .name("bench-setup")
        .io_memory(IO_MEMORY)
        .spawn(move || async move { task().await })
        .map_err(|e| anyhow::anyhow!("starting the setup executor: {e}"))?
        .join()
        .map_err(|e| anyhow::anyhow!("setup executor failed: {e}"))?
}

/// Waits until `expected` tasks are ready (or the run fails), then starts the clock.
pub fn start_when_ready(run: &Run, expected: usize) -> anyhow::Result<()> {
    let waited = Instant::now();
    while run.ready() < expected {
        if run.stopped() {
            return Ok(()); // a task failed; its error comes out of the join
        }
        if waited.elapsed() > Duration::from_secs(60) {
            run.stop();
            anyhow::bail!("only {} of {expected} tasks connected in 60 s", run.ready());
        }
        std::thread::sleep(POLL);
    }
    run.start_now();
    Ok(())
}

/// The value bytes every record carries (varied, not compressible to nothing).
pub fn value_bytes(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| ((i * 31) % 251).to_le_bytes()[0])
        .collect()
}

/// One batch of `records` records of `value` each, timestamped `now`.
pub fn build_batch(builder: &mut BatchBuilder, records: usize, value: &[u8]) -> Bytes {
    let now = TimestampMs::now();
    for _ in 0..records {
        builder.push(now, None, Some(value), &[]);
    }
    Bytes::from(builder.finish())
}

/// Microseconds between two instants (at least 1).
pub fn micros(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}
