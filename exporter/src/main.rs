//! The `etcd-monitor` binary: flags, tracing, then [`exporter::run`]. Exit code 2 means bad
//! configuration, 1 a failure while running.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: exporter::Args = common::parse_args("etcd-monitor");
    let config = match exporter::Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("etcd-monitor: {e}");
            return ExitCode::from(2);
        }
    };
    common::telemetry::init(config.log_format);
    let listen = config.listen;
    common::daemon::run("etcd-monitor", listen, 2, move |listener, shutdown| {
        exporter::run(config, listener, shutdown)
    })
}
