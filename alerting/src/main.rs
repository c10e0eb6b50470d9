//! The `etcd-monitor-relay` binary: flags and config file, tracing, then
//! [`alerting::run`]. Exit code 2 means bad configuration.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

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
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("etcd-monitor-relay: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let listener = match common::http::bind(config.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("etcd-monitor-relay: --listen: {e}");
                return ExitCode::from(2);
            }
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(common::shutdown::cancel_on_signal(shutdown.clone()));
        match alerting::run(config, listener, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("etcd-monitor-relay: {e:#}");
                ExitCode::from(1)
            }
        }
    })
}
