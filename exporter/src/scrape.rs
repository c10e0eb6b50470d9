//! Fetching a member's own `/metrics` and `/health` over HTTP(S), with the etcd TLS
//! settings, a deadline and a size limit.
//!
//! What a member (or whatever answers on its port) sends is not trusted: a body over its
//! cap is refused as it streams in, a redirect is an error (never followed: it would take
//! the client certificate elsewhere), the parse runs on a blocking thread so a slow one
//! holds up no other task, and the fetch and the parse together end by the caller's
//! deadline. Errors name the URL without any user or password in it.

use tokio::time::{timeout_at, Instant};

pub use common::remote::{get_body, redacted};

use crate::textformat::{self, Exposition};

/// The largest `/metrics` body accepted from a member. A real etcd 3.4/3.5 member serves
/// 150-250 KB; many gRPC methods and codes, clients and a long uptime's histograms take
/// it to 1-2 MB at most, so 8 MiB is four times the worst we expect, and bounds both the
/// memory one scrape can take and the parse's work (with the parser's own caps).
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// The largest `/health` body accepted: etcd's is `{"health":"true","reason":""}`.
pub const MAX_HEALTH_BODY: usize = 64 * 1024;

fn join(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

/// The member's `/metrics`, parsed. The fetch and the parse together end by `deadline`:
/// the parse runs on a blocking thread and is abandoned (reported as timed out) when the
/// deadline passes; it stops on its own soon after, since it looks at the same deadline.
pub async fn metrics(
    http: &reqwest::Client,
    base: &str,
    deadline: Instant,
) -> Result<Exposition, String> {
    let url = join(base, "/metrics");
    let shown = redacted(&url);
    let (status, body) = get_body(http, &url, MAX_BODY, deadline).await?;
    if !status.is_success() {
        return Err(format!("GET {shown}: status {status}"));
    }
    let parse_deadline = deadline.into_std();
    let parse = tokio::task::spawn_blocking(move || {
        let text = std::str::from_utf8(&body).map_err(|e| format!("not UTF-8: {e}"))?;
        textformat::parse_before(text, parse_deadline)
            .map_err(|e| format!("not Prometheus text: {e}"))
    });
    match timeout_at(deadline, parse).await {
        Ok(Ok(Ok(exposition))) => Ok(exposition),
        // The parse noticed the deadline before the timer did.
        Ok(Ok(Err(_))) if Instant::now() >= deadline => {
            Err(format!("GET {shown}: timed out parsing the body"))
        }
        Ok(Ok(Err(e))) => Err(format!("GET {shown}: {e}")),
        // Only a panic (a bug) or a runtime shutting down ends the task otherwise.
        Ok(Err(e)) => Err(format!("GET {shown}: parsing the body failed: {e}")),
        Err(_) => Err(format!("GET {shown}: timed out parsing the body")),
    }
}

/// The member's `/health` verdict: `Ok(true)` when it says `{"health":"true"}`.
pub async fn health(http: &reqwest::Client, base: &str, deadline: Instant) -> Result<bool, String> {
    #[derive(serde::Deserialize)]
    struct Health {
        health: String,
    }
    let url = join(base, "/health");
    let (_, body) = get_body(http, &url, MAX_HEALTH_BODY, deadline).await?;
    // etcd answers 503 with the same body when unhealthy, so the body decides.
    let h: Health = serde_json::from_slice(&body)
        .map_err(|e| format!("GET {}: unexpected answer: {e}", redacted(&url)))?;
    Ok(h.health == "true")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use axum::http::{header, StatusCode};
    use axum::routing::get;
    use axum::Router;

    use super::*;

    /// Serves `/metrics` as a redirect to `/elsewhere`, which counts its visitors, and
    /// `/big-health` as a body over the health cap; the base URL and the counter.
    async fn server() -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let app = Router::new()
            .route(
                "/metrics",
                get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/elsewhere")]) }),
            )
            .route(
                "/elsewhere",
                get(move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async { "# TYPE m gauge\nm 1\n" }
                }),
            )
            .route(
                "/big/health",
                get(|| async { " ".repeat(MAX_HEALTH_BODY + 1) }),
            )
            .route("/bad/metrics", get(|| async { "m 1\nm{ 2\n" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), hits)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test]
    async fn a_redirect_is_an_error_naming_where_it_pointed_and_is_not_followed() {
        let (base, hits) = server().await;
        // As common::etcd builds the member client.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let err = get_body(&http, &format!("{base}/metrics"), MAX_BODY, soon())
            .await
            .expect_err("a redirect");
        assert!(
            err.contains("302") && err.contains("\"/elsewhere\""),
            "{err}"
        );
        let err = metrics(&http, &base, soon()).await.expect_err("a redirect");
        assert!(err.contains("not followed"), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing went to /elsewhere");

        // A client with reqwest's default policy follows it inside `send`; what it got
        // there is still refused.
        let following = reqwest::Client::new();
        let err = metrics(&following, &base, soon())
            .await
            .expect_err("a redirected answer");
        assert!(err.contains("after a redirect"), "{err}");
    }

    #[tokio::test]
    async fn caps_garbage_and_deadlines_are_errors() {
        let (base, _) = server().await;
        let http = reqwest::Client::new();
        let err = health(&http, &format!("{base}/big"), soon())
            .await
            .expect_err("over the cap");
        assert!(err.contains("larger than 65536 bytes"), "{err}");
        let err = metrics(&http, &format!("{base}/bad/"), soon())
            .await
            .expect_err("garbage");
        assert!(err.contains("not Prometheus text: line 2"), "{err}");
        // A deadline already past: the first poll of the request cannot finish it (a
        // deadline of "now" could, on a fast loopback within the timer's millisecond).
        let past = Instant::now()
            .checked_sub(std::time::Duration::from_millis(50))
            .unwrap_or_else(Instant::now);
        let err = metrics(&http, &base, past).await.expect_err("no time");
        assert!(err.contains("timed out"), "{err}");
    }

    #[test]
    fn urls_are_shown_without_credentials() {
        for (url, shown) in [
            ("http://u:pw@h:1/x", "http://***:***@h:1/x"),
            ("https://u@h/", "https://***@h/"),
            ("http://:pw@h/", "http://:***@h/"),
            ("http://h:1/metrics", "http://h:1/metrics"),
            ("http://u:p@w@[::1", "http://***:***@[::1"),
            ("u:pw@h:1/x@y", "***:***@h:1/x@y"),
            ("HTTP://H:1/M", "HTTP://H:1/M"),
            ("u:pw@h://x", "***:***@h://x"),
            ("http:u:pw@h", "***:***@h"),
        ] {
            assert_eq!(redacted(url), shown, "{url}");
        }
    }
}
