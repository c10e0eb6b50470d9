//! Serving an axum router on a bound listener until a shutdown token fires, with the drain
//! bounded so that a stuck client cannot hold the process open; optionally over TLS and
//! behind a bearer token ([`ServerSecurity`], [`serve_secured`]).

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::secret::Secret;

/// How long in-flight requests get to finish after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `addr`, naming the address in the error.
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then drains for at most
/// [`DRAIN_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let signal = shutdown.clone();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        signal.cancelled().await;
    });
    drain_bounded(server, shutdown).await
}

/// Runs `server` until it ends, or until [`DRAIN_TIMEOUT`] after `shutdown`.
async fn drain_bounded(
    server: impl IntoFuture<Output = std::io::Result<()>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let server = server.into_future();
    tokio::pin!(server);
    tokio::select! {
        res = &mut server => res,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => {
            tracing::warn!("HTTP drain timed out, closing remaining connections");
            Ok(())
        }
    }
}

/// An HTTP API error: a status code and a message safe to show, answered as
/// `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: axum::http::StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: axum::http::StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let body = serde_json::json!({ "error": self.message });
        (self.status, axum::Json(body)).into_response()
    }
}

/// The fallback for unknown paths: 404 naming the path.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
    )
}

/// The fallback for a known path with the wrong method: 405 naming the path.
pub async fn method_not_allowed(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed on {}", uri.path()),
    )
}

/// How one of our HTTP servers is reached: over TLS, and with a bearer token, each when
/// configured. `/health` stays open, for load balancers and probes.
#[derive(Clone, Default)]
pub struct ServerSecurity {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Accepted bearer tokens; empty means no authentication.
    pub tokens: Vec<Secret>,
}

impl std::fmt::Debug for ServerSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSecurity")
            .field("tls", &self.tls.is_some())
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

/// The file flags of [`ServerSecurity`], named as the binary spells them.
pub struct SecurityFlags<'a> {
    pub cert: (&'static str, Option<&'a Path>),
    pub key: (&'static str, Option<&'a Path>),
    pub token: (&'static str, Option<&'a Path>),
}

impl ServerSecurity {
    /// Reads and checks the certificate, key and token files; every error names its flag.
    pub fn from_files(flags: SecurityFlags<'_>) -> Result<Self, crate::etcd::ConfigError> {
        use crate::etcd::ConfigError;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let invalid = |flag: &'static str, message: String| ConfigError::Invalid { flag, message };
        let tls = match (flags.cert, flags.key) {
            ((_, None), (_, None)) => None,
            ((cert_flag, Some(_)), (key_flag, None)) => {
                return Err(invalid(key_flag, format!("is required with {cert_flag}")));
            }
            ((cert_flag, None), (key_flag, Some(_))) => {
                return Err(invalid(cert_flag, format!("is required with {key_flag}")));
            }
            ((cert_flag, Some(cert)), (key_flag, Some(key))) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                    .and_then(|it| it.collect::<Result<_, _>>())
                    .map_err(|e| invalid(cert_flag, format!("{}: {e}", cert.display())))?;
                if certs.is_empty() {
                    return Err(invalid(
                        cert_flag,
                        format!("{}: no PEM certificate in it", cert.display()),
                    ));
                }
                let key_der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| invalid(key_flag, format!("{}: {e}", key.display())))?;
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let mut config = rustls::ServerConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| invalid(cert_flag, e.to_string()))?
                    .with_no_client_auth()
                    .with_single_cert(certs, key_der)
                    .map_err(|e| {
                        invalid(
                            key_flag,
                            format!("does not go with {}: {e}", cert.display()),
                        )
                    })?;
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(Arc::new(config))
            }
        };
        let tokens = match flags.token {
            (flag, Some(path)) => vec![crate::etcd::read_token_file(flag, path, 1)?],
            (_, None) => Vec::new(),
        };
        Ok(ServerSecurity { tls, tokens })
    }
}

/// Serves `router` as [`serve`] does, behind `security`: requests without an accepted
/// bearer token get 401 (but `/health`), and connections speak TLS when it is configured.
pub async fn serve_secured(
    listener: TcpListener,
    router: axum::Router,
    security: &ServerSecurity,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = if security.tokens.is_empty() {
        router
    } else {
        let tokens = Arc::new(security.tokens.clone());
        router.layer(axum::middleware::from_fn(move |req, next| {
            require_bearer(tokens.clone(), req, next)
        }))
    };
    let Some(tls) = &security.tls else {
        return serve(listener, router, shutdown).await;
    };
    let listener = TlsListener::new(listener, tls.clone())?;
    drain_bounded(
        axum::serve(listener, router).with_graceful_shutdown({
            let signal = shutdown.clone();
            async move { signal.cancelled().await }
        }),
        shutdown,
    )
    .await
}

async fn require_bearer(
    tokens: Arc<Vec<Secret>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if tokens.iter().any(|t| constant_time_eq(t.expose(), given)) {
        return next.run(req).await;
    }
    let mut resp = ApiError::new(
        axum::http::StatusCode::UNAUTHORIZED,
        "a valid bearer token is required (Authorization: Bearer <token>)",
    )
    .into_response();
    resp.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    resp
}

/// Compares without an early exit on the first differing byte, so the time taken does not
/// tell how much of a guessed token was right.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// How long a client gets to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener that hands axum finished TLS connections. Handshakes run in their own
/// tasks, so a slow or silent client cannot hold up the others.
struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        let tls = tokio_rustls::TlsAcceptor::from(config);
        let acceptor = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let (tls, tx) = (tls.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(conn)) => {
                            let _ = tx.send((conn, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            local,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The acceptor task holds a sender until the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Declares `$name`, the clap flags of a [`ServerSecurity`] (`--tls-cert-file`,
/// `--tls-key-file`, `--auth-token-file`), each also read from the environment variable
/// `$prefix` + `TLS_CERT_FILE` and so on, with `load()` to check and read them.
#[macro_export]
macro_rules! server_security_args {
    ($name:ident, $prefix:literal) => {
        /// How this server is reached: TLS and a bearer token.
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct $name {
            /// Serve HTTPS with this certificate chain (PEM, leaf first); needs
            /// --tls-key-file.
            #[arg(long, env = concat!($prefix, "TLS_CERT_FILE"), value_name = "FILE")]
            pub tls_cert_file: Option<std::path::PathBuf>,

            /// The private key (PEM) of --tls-cert-file.
            #[arg(long, env = concat!($prefix, "TLS_KEY_FILE"), value_name = "FILE")]
            pub tls_key_file: Option<std::path::PathBuf>,

            /// File holding a bearer token that every request but `/health` must carry
            /// (`Authorization: Bearer <token>`). Without it the server is open.
            #[arg(long, env = concat!($prefix, "AUTH_TOKEN_FILE"), value_name = "FILE")]
            pub auth_token_file: Option<std::path::PathBuf>,
        }

        impl $name {
            /// Reads and checks the files.
            pub fn load(&self) -> Result<$crate::http::ServerSecurity, $crate::etcd::ConfigError> {
                $crate::http::ServerSecurity::from_files($crate::http::SecurityFlags {
                    cert: ("--tls-cert-file", self.tls_cert_file.as_deref()),
                    key: ("--tls-key-file", self.tls_key_file.as_deref()),
                    token: ("--auth-token-file", self.auth_token_file.as_deref()),
                })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq("s3cret", "s3cret"));
        assert!(!constant_time_eq("s3cret", "s3creT"));
        assert!(!constant_time_eq("s3cret", "s3cre"));
        assert!(!constant_time_eq("s3cret", "s3cret!"));
        assert!(!constant_time_eq("s3cret", ""));
        assert!(constant_time_eq("", ""));
    }
}
