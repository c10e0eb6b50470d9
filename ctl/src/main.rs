//! The `etcd-monitor-ctl` binary: see [`ctl::cli`] for the commands and exit codes.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(ctl::cli::main(std::env::args_os()))
}
