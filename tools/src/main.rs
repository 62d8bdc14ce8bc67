//! `shardlog`: the operator CLI. Online subcommands (topic, produce, consume, cluster, group) talk
//! to running brokers through `shardlog_net::client` on one glommio executor (`online.rs`).
//! Offline subcommands (dump, verify, stats, repair, export, import) read partition
//! directories with plain file I/O; `repair --apply` and `import` first take the data
//! directory's lock (`dir_locks.rs`), so they never write under a running `shardlogd`.
//!
//! This file only parses the command line, runs the subcommand and maps its result to the
//! exit code: 0 success (or stdout closed by its reader: `| head` is a normal end), 1
//! problems found in the data or a request the server refused or records that failed, 2
//! usage, I/O or connection error (clap's own usage errors also exit 2). Each subcommand lives in `command/<name>.rs`.

mod args;
mod broker_outage;
mod check;
mod command;
mod decompress;
mod dir_locks;
mod error;
mod exported_record;
mod exported_topic;
mod import_reader;
mod online;
mod output;
mod partitioner;
mod progress;
mod scan;

use std::process::ExitCode;

use clap::Parser;

/// What a subcommand that finished found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing wrong (exit 0).
    Clean,
    /// Problems in the data reported on stdout, or records that failed reported on
    /// stderr (exit 1).
    ProblemsFound,
}

/// With glibc's malloc, `shardlog produce` of 3,000,000 lines of 200 bytes took 1.23 to
/// 1.48 s; with mimalloc 1.08 to 1.23 s (README, "Issue 15, a sixth sitting").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = args::Args::parse();
    shardlog_net::logging::init_stderr("warn");
    match command::run(args.command) {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::ProblemsFound) => ExitCode::from(1),
        Err(error) => {
            let code = error.exit_code();
            // A closed stdout is a normal end: nothing to report.
            if code != 0 {
                // Display already carries the source (path and OS error); a chain would
                // repeat it.
                eprintln!("shardlog: {error}");
            }
            ExitCode::from(code)
        }
    }
}
