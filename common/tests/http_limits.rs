//! The HTTP server against slow and abusive clients, on real sockets on 127.0.0.1: the
//! header and idle timeouts, the connection cap, the bounded drain, TLS with a stalled
//! handshake, the bearer token and the caller's address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::routing::get;
use common::http::{SecurityFlags, ServerLimits, ServerSecurity, DRAIN_TIMEOUT};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
const HALF_HEADER: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n";

struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(limits: ServerLimits, security: ServerSecurity) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let router = axum::Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/health", get(|| async { "healthy" }))
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        common::http::serve_with_limits(listener, router, &security, limits, token).await
    });
    Server {
        addr,
        shutdown,
        task,
    }
}

fn limits(header_read_timeout: Duration, max_connections: usize) -> ServerLimits {
    ServerLimits {
        header_read_timeout,
        max_connections,
        ..ServerLimits::default()
    }
}

/// Reads one response (head and `Content-Length` body), failing after 5 s.
async fn read_response<S: AsyncRead + Unpin>(s: &mut S) -> String {
    tokio::time::timeout(Duration::from_secs(5), read_response_now(s))
        .await
        .expect("a response within 5 s")
}

async fn read_response_now<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return String::from_utf8_lossy(&buf[..end + 4 + len]).into_owned();
            }
        }
        let n = s.read(&mut chunk).await.expect("read a response");
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn request<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, req: &[u8]) -> String {
    s.write_all(req).await.expect("send a request");
    read_response(s).await
}

/// Waits until the server closes `s` (end of stream or reset) and returns when it did;
/// fails if it is still open after `within`.
async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, within: Duration) -> Instant {
    let deadline = tokio::time::Instant::now() + within;
    let mut chunk = [0u8; 256];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => panic!("the connection is still open after {within:?}"),
            Ok(Ok(0) | Err(_)) => return Instant::now(),
            // hyper sends nothing on a header timeout; do not depend on it.
            Ok(Ok(_)) => {}
        }
    }
}

fn assert_ok(response: &str, body: &str) {
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(body), "{response}");
}

#[tokio::test]
async fn half_a_header_is_cut_off_at_the_header_timeout_while_others_are_served() {
    let server = start(
        limits(Duration::from_secs(1), 16),
        ServerSecurity::default(),
    )
    .await;
    let mut slow = TcpStream::connect(server.addr).await.expect("connect");
    let sent = Instant::now();
    slow.write_all(HALF_HEADER)
        .await
        .expect("send half a header");

    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut other = TcpStream::connect(server.addr).await.expect("connect");
    assert_ok(&request(&mut other, GET).await, "ok");
    let other_served = Instant::now();

    let closed = closed_within(&mut slow, Duration::from_secs(3)).await;
    assert!(
        closed > other_served,
        "the slow client was closed before the other was served"
    );
    let after = closed - sent;
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}, before the timeout"
    );
    // The other connection was not touched.
    assert_ok(&request(&mut other, GET).await, "ok");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_timeout() {
    let server = start(
        limits(Duration::from_secs(2), 16),
        ServerSecurity::default(),
    )
    .await;
    let mut client = TcpStream::connect(server.addr).await.expect("connect");
    assert_ok(&request(&mut client, GET).await, "ok");
    // Kept alive: a second request on the same connection, before the timeout.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_ok(&request(&mut client, GET).await, "ok");
    let idle_from = Instant::now();

    let closed = closed_within(&mut client, Duration::from_secs(5)).await;
    let idle = closed - idle_from;
    assert!(
        idle >= Duration::from_millis(1900),
        "closed after {idle:?} idle"
    );
}

#[tokio::test]
async fn a_connection_over_the_cap_waits_until_one_closes() {
    let server = start(
        limits(Duration::from_secs(30), 2),
        ServerSecurity::default(),
    )
    .await;
    let mut first = TcpStream::connect(server.addr).await.expect("connect");
    assert_ok(&request(&mut first, GET).await, "ok");
    let mut second = TcpStream::connect(server.addr).await.expect("connect");
    assert_ok(&request(&mut second, GET).await, "ok");

    // The kernel completes the handshake (listen backlog), but the server does not accept.
    let mut third = TcpStream::connect(server.addr).await.expect("connect");
    third.write_all(GET).await.expect("send a request");
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(700), third.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "the third connection was answered: {early:?}"
    );

    drop(first);
    assert_ok(&read_response(&mut third).await, "ok");
    assert_ok(&request(&mut second, GET).await, "ok");
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_bounds_the_drain() {
    // The header timeout is longer than the drain, so only the drain can end the stuck one.
    let mut server = start(
        limits(Duration::from_secs(30), 16),
        ServerSecurity::default(),
    )
    .await;
    let mut idle = TcpStream::connect(server.addr).await.expect("connect");
    assert_ok(&request(&mut idle, GET).await, "ok");
    let mut stuck = TcpStream::connect(server.addr).await.expect("connect");
    stuck
        .write_all(HALF_HEADER)
        .await
        .expect("send half a header");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let cancelled = Instant::now();
    server.shutdown.cancel();
    closed_within(&mut idle, Duration::from_secs(1)).await;

    let ended = tokio::time::timeout(DRAIN_TIMEOUT + Duration::from_secs(3), &mut server.task)
        .await
        .expect("serve returns within the drain");
    ended.expect("serve task").expect("serve");
    let took = cancelled.elapsed();
    assert!(
        took >= DRAIN_TIMEOUT - Duration::from_millis(200),
        "returned after {took:?}, while a request head was still coming"
    );
    closed_within(&mut stuck, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn handlers_see_the_callers_address() {
    let server = start(ServerLimits::default(), ServerSecurity::default()).await;
    let mut client = TcpStream::connect(server.addr).await.expect("connect");
    let me = client.local_addr().expect("local address");
    let response = request(&mut client, b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_ok(&response, &me.to_string());
}

#[tokio::test]
async fn tls_is_served_while_a_handshake_stalls_until_its_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("self-signed certificate");
    let (cert, key, token) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("token"),
    );
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    std::fs::write(&token, "s3cret\n").expect("write token");
    let security = ServerSecurity::from_files(SecurityFlags {
        cert: ("--tls-cert-file", Some(&cert)),
        key: ("--tls-key-file", Some(&key)),
        token: ("--auth-token-file", Some(&token)),
    })
    .expect("server security");
    let server = start(
        ServerLimits {
            handshake_timeout: Duration::from_secs(1),
            ..ServerLimits::default()
        },
        security,
    )
    .await;

    // Connects and says nothing: its handshake must not hold up the next client.
    let mut stalled = TcpStream::connect(server.addr).await.expect("connect");
    let stalled_from = Instant::now();

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(certified.cert.der().clone())
        .expect("trust the certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    let mut tls = tokio::time::timeout(
        Duration::from_millis(800),
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("handshake while another one stalls")
    .expect("handshake");

    let denied = request(&mut tls, GET).await;
    assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
    assert_ok(
        &request(&mut tls, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await,
        "healthy",
    );
    let with_token = b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n\r\n";
    assert_ok(&request(&mut tls, with_token).await, "ok");

    let closed = closed_within(&mut stalled, Duration::from_secs(3)).await;
    let after = closed - stalled_from;
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}"
    );
}
