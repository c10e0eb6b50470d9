//! The `etcd-monitor-relay` binary: flags and config file, tracing, then
//! [`alerting::run`]. Exit code 2 means bad configuration.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: alerting::Args = common::parse_args("etcd-monitor-relay");
    let config = match alerting::Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            // One line, whatever the message's source printed.
            let line: Vec<String> = e
                .to_string()
                .lines()
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("etcd-monitor-relay: {}", line.join(" "));
            return ExitCode::from(2);
        }
    };
    common::telemetry::init(config.log_format);
    let listen = config.listen;
    common::daemon::run(
        "etcd-monitor-relay",
        listen,
        2,
        move |listener, shutdown| alerting::run(config, listener, shutdown),
    )
}
