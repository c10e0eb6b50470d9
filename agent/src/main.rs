//! The `etcd-monitor-agent` binary: flags, tracing, then [`agent::run`] or the
//! `disk-check` subcommand. Exit code 2 means bad configuration.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: agent::Args = common::parse_args("etcd-monitor-agent");
    if let Some(agent::config::Command::DiskCheck(dc)) = &args.command {
        return agent::disk_check::main(dc);
    }
    let config = match agent::Config::from_args(args.daemon) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("etcd-monitor-agent: {e}");
            return ExitCode::from(2);
        }
    };
    common::telemetry::init(args.log_format);
    let listen = config.listen;
    // One worker is plenty; collections and the probe run on blocking threads.
    common::daemon::run(
        "etcd-monitor-agent",
        listen,
        1,
        move |listener, shutdown| agent::run(config, listener, shutdown),
    )
}
