//! `peers-bench`: NATS JetStream and Redis Streams loaded the way `shardlog-bench produce`
//! loads shardlog (one connection, N requests in flight, closed loop, 1 KiB records), for
//! `bench/scripts/peers.sh`. It speaks both protocols itself over std TCP (a writer and a
//! reader thread; see `load.rs`), checks every acknowledgement, and at the end checks
//! that the server stores exactly the records it acknowledged.
//!
//! Exit codes: 0 every request acknowledged and the stored count matches; 1 a request was
//! refused or the count differs; 2 usage, connection or protocol error.

mod args;
mod input;
mod load;
mod nats;
mod redis;
mod report;

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::args::{Cli, Command, LoadArgs, MAX_BATCH_RECORDS, NatsArgs, RedisArgs};
use crate::load::{Outcome, Plan};
use crate::report::{Results, Setup};

/// How long a new cluster may take to answer JetStream API requests.
const JETSTREAM_PATIENCE: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ran = match &cli.command {
        Command::Nats(args) => run_nats(args),
        Command::Redis(args) => run_redis(args),
    };
    match ran {
        Ok(Checked::Clean) => ExitCode::SUCCESS,
        Ok(Checked::Failed) => ExitCode::from(1),
        Err(error) => {
            eprintln!("peers-bench: {error}");
            ExitCode::from(2)
        }
    }
}

enum Checked {
    Clean,
    Failed,
}

fn run_nats(args: &NatsArgs) -> io::Result<Checked> {
    usage(args.load.validate())?;
    usage(match (args.streams, args.replicas) {
        (1..=64, 1..=5) => Ok(()),
        _ => Err("--streams must be 1..=64 and --replicas 1..=5".to_string()),
    })?;
    let timeout = Duration::from_secs_f64(args.load.reply_timeout);
    let first = args.servers.first().map_or("", String::as_str);
    let mut setup_connection = nats::Connection::open(first, timeout)?;
    let names: Vec<String> = (0..args.streams)
        .map(|i| format!("{}{i}", args.stream))
        .collect();
    let subjects: Vec<String> = (0..args.streams)
        .map(|i| format!("{}.{i}", args.stream.to_lowercase()))
        .collect();
    let mut leaders = Vec::new();
    for (name, subject) in names.iter().zip(&subjects) {
        setup_connection.create_stream(name, subject, args.replicas, JETSTREAM_PATIENCE)?;
        leaders.push(setup_connection.stream_state(name)?.1);
    }
    if args.streams > 1 && args.replicas > 1 {
        spread_leaders(
            &mut setup_connection,
            &names,
            &mut leaders,
            &args.servers,
            timeout,
        )?;
    }
    for (name, leader) in names.iter().zip(&leaders) {
        let leader = leader.as_deref().unwrap_or("(this server)");
        eprintln!(
            "peers-bench: stream {name} (R{}) leader {leader}",
            args.replicas
        );
    }
    // One stream: publish to its leader's server, as shardlog's client sends to the
    // partition's leader; several: their leaders differ, so to the first server.
    let mut connection = match (&leaders[..], args.servers.len()) {
        ([Some(leader)], 2..) => leader_connection(&args.servers, leader, timeout)?,
        _ => setup_connection,
    };
    eprintln!(
        "peers-bench: load over one connection to server {}",
        connection.server_name
    );
    let (publisher, acks) = connection.load(&subjects, args.load.record_size);
    let plan = plan(&args.load, 1);
    let outcome = {
        let writer = connection.stream.try_clone()?;
        let mut acks = acks;
        load::run(writer, &mut connection.input, publisher, &mut acks, &plan)?
    };
    let mut stored = 0;
    for name in &names {
        stored += connection.stream_state(name)?.0;
    }
    let request_bytes = args.load.record_size;
    let setup = setup(
        "nats",
        names.join(","),
        args.streams,
        1,
        request_bytes,
        &args.load,
    );
    finish(&setup, &outcome, stored, &args.load)
}

/// Moves stream i's leader to server i (mod the servers), as shardlog spreads the
/// leaders of a topic's partitions over the nodes. JetStream places leaders at random.
fn spread_leaders(
    connection: &mut nats::Connection,
    names: &[String],
    leaders: &mut [Option<String>],
    servers: &[String],
    timeout: Duration,
) -> io::Result<()> {
    let mut server_names = Vec::new();
    for server in servers {
        server_names.push(nats::Connection::open(server, timeout)?.server_name);
    }
    for (i, (name, leader)) in names.iter().zip(leaders.iter_mut()).enumerate() {
        let wanted = &server_names[i % server_names.len()];
        if leader.as_ref() != Some(wanted) {
            *leader = connection.move_leader(name, wanted, JETSTREAM_PATIENCE)?;
        }
    }
    Ok(())
}

/// A connection to the server named `leader`.
fn leader_connection(
    servers: &[String],
    leader: &str,
    timeout: Duration,
) -> io::Result<nats::Connection> {
    for server in servers {
        let connection = nats::Connection::open(server, timeout)?;
        if connection.server_name == leader {
            return Ok(connection);
        }
    }
    Err(io::Error::other(format!(
        "no server in {servers:?} is named {leader}, the stream's leader"
    )))
}

fn run_redis(args: &RedisArgs) -> io::Result<Checked> {
    usage(args.load.validate())?;
    if !(1..=MAX_BATCH_RECORDS).contains(&args.batch_records) {
        usage(Err(format!(
            "--batch-records must be 1..={MAX_BATCH_RECORDS}"
        )))?;
    }
    let timeout = Duration::from_secs_f64(args.load.reply_timeout);
    let mut connection = redis::Connection::open(&args.server, &args.key, timeout)?;
    let (adds, mut ids) = redis::Connection::load(
        &args.key,
        args.load.record_size,
        args.batch_records,
        args.load.inflight,
    );
    let request_bytes = adds.request_bytes();
    let plan = plan(&args.load, args.batch_records);
    let writer = connection.stream.try_clone()?;
    let outcome = load::run(writer, &mut connection.input, adds, &mut ids, &plan)?;
    let stored = connection.stream_length(&args.key)?;
    let setup = setup(
        "redis",
        args.key.clone(),
        1,
        args.batch_records,
        request_bytes,
        &args.load,
    );
    finish(&setup, &outcome, stored, &args.load)
}

fn plan(load: &LoadArgs, batch_records: usize) -> Plan {
    Plan {
        inflight: load.inflight,
        records_per_request: batch_records as u64,
        duration: Duration::from_secs_f64(load.duration),
        warmup: Duration::from_secs_f64(load.warmup),
        reply_timeout: Duration::from_secs_f64(load.reply_timeout),
    }
}

fn setup(
    protocol: &'static str,
    topic: String,
    partitions: u32,
    batch_records: usize,
    request_bytes: usize,
    load: &LoadArgs,
) -> Setup {
    Setup {
        protocol,
        topic,
        partitions,
        inflight: load.inflight,
        batch_records,
        record_size: load.record_size,
        request_bytes,
        duration_s: load.duration,
        warmup_s: load.warmup,
    }
}

/// Prints the report and decides the exit: clean only if nothing was refused and the
/// server stores exactly what it acknowledged.
fn finish(setup: &Setup, outcome: &Outcome, stored: u64, load: &LoadArgs) -> io::Result<Checked> {
    let results = Results { outcome, stored };
    report::print(setup, &results, &mut io::stdout().lock())?;
    if let Some(path) = &load.json {
        report::write_json(setup, &results, path)?;
    }
    let mut checked = Checked::Clean;
    if let Some(error) = &outcome.first_error {
        eprintln!(
            "peers-bench: {} requests refused; the first: {error}",
            outcome.errors
        );
        checked = Checked::Failed;
    }
    if stored != outcome.records_acked {
        eprintln!(
            "peers-bench: the server stores {stored} records but acknowledged {}",
            outcome.records_acked
        );
        checked = Checked::Failed;
    }
    Ok(checked)
}

fn usage(check: Result<(), String>) -> io::Result<()> {
    check.map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))
}
