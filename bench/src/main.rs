//! The `etcd-monitor-bench` binary: see [`bench::cli::main`] for the exit codes.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(bench::cli::main(std::env::args_os()))
}
