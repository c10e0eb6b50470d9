//! What every daemon's `main` does after its configuration is valid: start the runtime,
//! bind `--listen`, cancel on SIGINT/SIGTERM, run, and map the outcome to an exit code
//! (2 when the address cannot be bound, 1 when running failed). A task stuck in blocking
//! I/O (a hung disk) cannot hold the exit for more than a few seconds.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Runs `run(listener, shutdown)` on a runtime with `worker_threads` workers.
pub fn run<F, Fut>(program: &str, listen: SocketAddr, worker_threads: usize, run: F) -> ExitCode
where
    F: FnOnce(TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{program}: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(async move {
        let listener = match crate::http::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{program}: --listen: {e}");
                return ExitCode::from(2);
            }
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(crate::shutdown::cancel_on_signal(shutdown.clone()));
        match run(listener, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{program}: {e:#}");
                ExitCode::from(1)
            }
        }
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    code
}

/// The end of every daemon's `run`: serves `app` behind `security` until `shutdown`,
/// then cancels the background `tasks` and waits for them at most 5 s (a task stuck in
/// blocking I/O must not hold the exit).
pub async fn serve_until_shutdown(
    program: &str,
    listener: TcpListener,
    app: axum::Router,
    security: &crate::http::ServerSecurity,
    shutdown: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
) -> anyhow::Result<()> {
    let served = crate::http::serve_secured(listener, app, security, shutdown.clone()).await;
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop within 5s");
    }
    served?;
    tracing::info!("{program} stopped");
    Ok(())
}
