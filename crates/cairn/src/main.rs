//! `cairn`: one binary for the storage node, the dev cluster and the admin CLI.
//!
//! Exit codes scripts can trust: 0 success; 1 failure; 2 bad usage; 3 a backup was committed
//! but is incomplete (some entries could not be read — the summary lists them).

mod cli;
mod demo;
mod enroll;
mod gateway;
mod init;
mod jobs;
mod output;
mod sys;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
