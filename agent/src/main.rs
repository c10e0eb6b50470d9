//! The `etcd-monitor-agent` binary: flags, tracing, then [`agent::run`] or the
//! `disk-check` subcommand. Exit code 2 means bad configuration.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

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
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(4)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("etcd-monitor-agent: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(async move {
        let listener = match common::http::bind(config.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("etcd-monitor-agent: --listen: {e}");
                return ExitCode::from(2);
            }
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(common::shutdown::cancel_on_signal(shutdown.clone()));
        match agent::run(config, listener, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("etcd-monitor-agent: {e:#}");
                ExitCode::from(1)
            }
        }
    });
    // A collection blocked on a hung disk must not keep the process from exiting.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}
