//! The process's shutdown signal: SIGINT or SIGTERM, whichever comes first.

/// Completes when the process receives SIGINT (Ctrl-C) or SIGTERM, then cancels `token`
/// (before logging, so that nothing can keep the shutdown from starting).
pub async fn cancel_on_signal(token: tokio_util::sync::CancellationToken) {
    let name = signal().await;
    token.cancel();
    tracing::info!("received {name}, shutting down");
}

/// Completes when the process receives SIGINT (Ctrl-C) or SIGTERM, naming it.
pub async fn signal() -> &'static str {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => "SIGINT",
        () = term => "SIGTERM",
    }
}
