//! The `etcd-monitor` binary: flags, tracing, then [`exporter::run`]. Exit code 2 means bad
//! configuration, 1 a failure while running.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

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
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("etcd-monitor: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let listener = match common::http::bind(config.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("etcd-monitor: --listen: {e}");
                return ExitCode::from(2);
            }
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(common::shutdown::cancel_on_signal(shutdown.clone()));
        match exporter::run(config, listener, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("etcd-monitor: {e:#}");
                ExitCode::from(1)
            }
        }
    })
}
