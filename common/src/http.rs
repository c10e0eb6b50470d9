//! Serving an axum router on a bound listener until a shutdown token fires, with the drain
//! bounded so that a stuck client cannot hold the process open; optionally over TLS and
//! behind a bearer token ([`ServerSecurity`], [`serve_secured`]).
//!
//! The daemons answer clients we do not control, so no client may hold a connection for
//! long without making progress, and the number of connections is bounded
//! ([`ServerLimits`]):
//! - at most `max_connections` connections are open at once. A slot is taken before
//!   `accept`, so while all are taken the server accepts nothing and new clients wait in
//!   the kernel's listen backlog, to be served in turn as slots free up;
//! - each connection is one task that holds its slot until it ends. Over TLS, the handshake
//!   runs in that task, bounded by `handshake_timeout`, so a silent client holds up no one;
//! - a connection has `header_read_timeout` to deliver a complete request head, counted
//!   from accept and, on a keep-alive connection, from the end of the previous response.
//!   hyper arms this one timer whenever it waits for a request head, so it is also the idle
//!   keep-alive timeout;
//! - when shutdown fires, the server stops accepting, idle connections close at once,
//!   requests in flight get [`DRAIN_TIMEOUT`] to finish, and what remains is dropped.
//!
//! Handlers can extract the caller's address as `ConnectInfo<SocketAddr>`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinError, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::secret::Secret;

/// How long in-flight requests get to finish after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection may take to deliver a complete request head, counted from accept
/// and, on a keep-alive connection, from the end of the previous response; so this is
/// also the idle keep-alive timeout (hyper has one timer for both). 20 s: longer than the
/// 5-15 s between two Prometheus scrapes, so a scraper keeps its connection from one
/// scrape to the next; short enough that a client that sends nothing, or trickles a header
/// (slowloris), frees its slot soon.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(20);

/// How many connections are served at once. Our clients are a few Prometheus servers, the
/// exporter and operators, a handful of connections; 512 leaves room for bursts and keeps
/// memory (a task and buffers of some KiB each) and file descriptors (with etcd
/// connections, under the usual soft limit of 1024) bounded whatever clients do.
pub const MAX_CONNECTIONS: usize = 512;

/// How long a client gets to finish its TLS handshake: a few round trips and some
/// public-key arithmetic take well under a second, even across a continent.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause after a failed `accept` (out of file descriptors and the like): the failure
/// would come back at once, so retrying without a pause would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(200);

/// The limits of one server; [`Default`] gives [`HEADER_READ_TIMEOUT`],
/// [`MAX_CONNECTIONS`] and [`HANDSHAKE_TIMEOUT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// The time to deliver a complete request head, also the keep-alive idle timeout.
    pub header_read_timeout: Duration,
    /// Connections served at once (at least 1).
    pub max_connections: usize,
    /// The time to finish a TLS handshake.
    pub handshake_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

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
    let security = ServerSecurity::default();
    serve_with_limits(
        listener,
        router,
        &security,
        ServerLimits::default(),
        shutdown,
    )
    .await
}

/// Serves `router` as [`serve`] does, behind `security`: requests without an accepted
/// bearer token get 401 (but `/health`), and connections speak TLS when it is configured.
pub async fn serve_secured(
    listener: TcpListener,
    router: axum::Router,
    security: &ServerSecurity,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with_limits(
        listener,
        router,
        security,
        ServerLimits::default(),
        shutdown,
    )
    .await
}

/// Serves `router` as [`serve_secured`] does, within `limits` instead of the defaults.
pub async fn serve_with_limits(
    listener: TcpListener,
    router: axum::Router,
    security: &ServerSecurity,
    limits: ServerLimits,
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
    let router = router.layer(axum::middleware::map_response(close_if_body_refused));
    let tls = security.tls.clone().map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let mut connections = JoinSet::new();
    loop {
        // A slot first, then accept: while every slot is taken, new clients queue in the
        // listen backlog instead of being accepted and dropped.
        let slot = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(ended) = connections.join_next() => {
                report_panic(ended);
                continue;
            }
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                // The semaphore is never closed.
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        connections.spawn(connection(
            stream,
            peer,
            router.clone(),
            tls.clone(),
            limits,
            shutdown.clone(),
            slot,
        ));
    }
    // Refuse new connections while the open ones drain.
    drop(listener);
    let drain = async {
        while let Some(ended) = connections.join_next().await {
            report_panic(ended);
        }
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "HTTP drain timed out, closing remaining connections"
        );
        connections.shutdown().await;
    }
    Ok(())
}

fn report_panic(ended: Result<(), JoinError>) {
    if let Err(e) = ended {
        if e.is_panic() {
            tracing::error!(error = %e, "an HTTP connection task panicked");
        }
    }
}

/// Serves one accepted connection, holding its `_slot` until it ends: the TLS handshake
/// when TLS is configured, then HTTP/1.1.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: axum::Router,
    tls: Option<TlsAcceptor>,
    limits: ServerLimits,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let Some(tls) = tls else {
        return serve_connection(stream, peer, router, limits, shutdown).await;
    };
    let handshake = tokio::time::timeout(limits.handshake_timeout, tls.accept(stream));
    let handshake = tokio::select! {
        handshake = handshake => handshake,
        () = shutdown.cancelled() => return,
    };
    match handshake {
        Ok(Ok(stream)) => serve_connection(stream, peer, router, limits, shutdown).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// Serves HTTP/1.1 on `io` until the client leaves, the header timeout closes it, or
/// shutdown lets the request in flight finish.
async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    router: axum::Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // What axum's `into_make_service_with_connect_info` would give handlers.
    let service = router.map_request(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        () = shutdown.cancelled() => {
            // An idle connection closes now; a request in flight finishes first, within
            // the drain.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        // Header timeouts, resets and malformed requests: the client's business.
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
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

/// A request refused for its size (413) has its body still on the wire: close the
/// connection after answering, so the client does not send its next request on a
/// connection that hyper is about to close.
async fn close_if_body_refused(mut resp: axum::response::Response) -> axum::response::Response {
    if resp.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    resp
}

/// The bearer-token check of [`serve_secured`]. A browser cannot send a bearer header, so a
/// GET or HEAD may also carry the token as the password of HTTP Basic auth (any user
/// name), and the 401 for those methods invites the browser to ask for it. Every other
/// method still needs the bearer header: a browser replays cached Basic credentials on
/// any request to the origin, so accepting them for a POST would let another site's
/// form act with the operator's login (cross-site request forgery).
async fn require_bearer(
    tokens: Arc<Vec<Secret>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let safe = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| presented_token(v, safe));
    if let Some(given) = given {
        if tokens.iter().any(|t| constant_time_eq(t.expose(), &given)) {
            return next.run(req).await;
        }
    }
    let mut resp = ApiError::new(
        axum::http::StatusCode::UNAUTHORIZED,
        "a valid bearer token is required (Authorization: Bearer <token>)",
    )
    .into_response();
    let headers = resp.headers_mut();
    headers.insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    if safe {
        headers.append(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static(r#"Basic realm="etcd-monitor", charset="UTF-8""#),
        );
    }
    resp
}

/// The token an `Authorization` header presents: `Bearer TOKEN`, or, when `basic_allowed`,
/// `Basic base64(USER:TOKEN)` (the scheme name in any case, as RFC 9110 has it).
fn presented_token(header: &str, basic_allowed: bool) -> Option<String> {
    if let Some(token) = header.strip_prefix("Bearer ") {
        return Some(token.to_owned());
    }
    let (scheme, credentials) = header.split_once(' ')?;
    if !basic_allowed || !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = decode_base64(credentials.trim())?;
    let (_user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some(password.to_owned())
}

/// Standard base64 with padding (RFC 4648), as Basic credentials are encoded; `None` when
/// `s` is anything else.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
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
            /// (`Authorization: Bearer <token>`; a browser may give it, for GET, as the
            /// password of HTTP Basic, any user name). Without it the server is open.
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
    use super::{constant_time_eq, decode_base64, presented_token};

    #[test]
    fn basic_credentials_give_the_password_only_when_allowed() {
        // "ops:s3cret" and "x:pa:ss" (a colon in the password stays in it).
        assert_eq!(
            presented_token("Basic b3BzOnMzY3JldA==", true).as_deref(),
            Some("s3cret")
        );
        assert_eq!(
            presented_token("basic eDpwYTpzcw==", true).as_deref(),
            Some("pa:ss")
        );
        assert_eq!(presented_token("Basic b3BzOnMzY3JldA==", false), None);
        assert_eq!(presented_token("Basic !!!!", true), None);
        assert_eq!(presented_token("Basic bm9jb2xvbg==", true), None);
        assert_eq!(
            presented_token("Bearer s3cret", false).as_deref(),
            Some("s3cret")
        );
        assert_eq!(presented_token("Digest x", true), None);
    }

    #[test]
    fn base64_decodes_strictly() {
        assert_eq!(decode_base64("").as_deref(), Some(&b""[..]));
        assert_eq!(decode_base64("Zg==").as_deref(), Some(&b"f"[..]));
        assert_eq!(decode_base64("Zm8=").as_deref(), Some(&b"fo"[..]));
        assert_eq!(decode_base64("Zm9v").as_deref(), Some(&b"foo"[..]));
        assert_eq!(decode_base64("Zm9vYmFy").as_deref(), Some(&b"foobar"[..]));
        assert_eq!(decode_base64("Zm9"), None);
        assert_eq!(decode_base64("Zg==Zg=="), None);
        assert_eq!(decode_base64("Z==="), None);
        assert_eq!(decode_base64("Zm9v\n"), None);
    }

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
