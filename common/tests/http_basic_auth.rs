//! The token check of `serve_secured` as a browser meets it, on a real socket: a GET or
//! HEAD may present the token as the password of HTTP Basic auth (any user name) and its
//! 401 asks for it; every other method still needs the bearer header.

use std::net::SocketAddr;

use axum::routing::get;
use common::http::{ServerLimits, ServerSecurity};
use common::secret::Secret;
use reqwest::{header, Method, StatusCode};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "s3cret-token";

struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start() -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local address");
    let router = axum::Router::new()
        .route("/", get(|| async { "page" }).post(|| async { "posted" }))
        .route("/health", get(|| async { "healthy" }));
    let security = ServerSecurity {
        tls: None,
        tokens: vec![Secret::new(TOKEN)],
    };
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        common::http::serve_with_limits(listener, router, &security, ServerLimits::default(), token)
            .await
    });
    Server { addr, shutdown }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

async fn call(
    server: &Server,
    method: Method,
    auth: Option<&str>,
) -> (StatusCode, Vec<String>, String) {
    let mut req = client().request(method, format!("http://{}/", server.addr));
    if let Some(auth) = auth {
        req = req.header(header::AUTHORIZATION, auth);
    }
    let resp = req.send().await.expect("response");
    let status = resp.status();
    let challenges = resp
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .collect();
    (status, challenges, resp.text().await.unwrap_or_default())
}

/// `Basic base64(user:password)`, as a browser sends it.
fn basic(user: &str, password: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("{user}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in raw.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from_be_bytes([0, b[0], b[1], b[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

#[tokio::test]
async fn a_browser_gets_in_with_the_token_as_basic_password() {
    let server = start().await;

    // No credentials: 401 with the JSON error and both challenges, so a browser prompts.
    let (status, challenges, body) = call(&server, Method::GET, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenges.iter().any(|c| c == "Bearer"), "{challenges:?}");
    assert!(
        challenges
            .iter()
            .any(|c| c == r#"Basic realm="etcd-monitor", charset="UTF-8""#),
        "{challenges:?}"
    );
    assert!(body.contains("bearer token is required"), "{body}");

    // The token as the password, whatever the user name.
    for user in ["admin", "", "x"] {
        let (status, _, body) = call(&server, Method::GET, Some(&basic(user, TOKEN))).await;
        assert_eq!(status, StatusCode::OK, "user {user:?}");
        assert_eq!(body, "page");
    }
    let (status, _, _) = call(&server, Method::HEAD, Some(&basic("ops", TOKEN))).await;
    assert_eq!(status, StatusCode::OK);

    // A wrong password, the token as user name, or garbage: refused.
    for auth in [
        basic("ops", "wrong"),
        basic(TOKEN, ""),
        basic("ops", &format!("{TOKEN}x")),
        "Basic not-base64!".to_owned(),
        format!("Basic {TOKEN}"),
    ] {
        let (status, _, _) = call(&server, Method::GET, Some(&auth)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth}");
    }

    // The bearer header still works, for every method.
    let bearer = format!("Bearer {TOKEN}");
    let (status, _, _) = call(&server, Method::GET, Some(&bearer)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = call(&server, Method::POST, Some(&bearer)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "posted");

    // `/health` stays open.
    let resp = client()
        .get(format!("http://{}/health", server.addr))
        .send()
        .await
        .expect("health");
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn basic_credentials_never_authorize_other_methods() {
    let server = start().await;
    // A cached Basic credential replayed by a cross-site form POST must not get through,
    // and the 401 does not invite the browser to offer one.
    let (status, challenges, _) = call(&server, Method::POST, Some(&basic("ops", TOKEN))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenges, vec!["Bearer".to_owned()]);
    let (status, challenges, _) = call(&server, Method::POST, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenges, vec!["Bearer".to_owned()]);
    let (status, _, _) = call(&server, Method::DELETE, Some(&basic("ops", TOKEN))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
