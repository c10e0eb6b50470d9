//! Fetching a member's own `/metrics` and `/health` over HTTP(S), with the etcd TLS
//! settings, a deadline and a size limit.
//!
//! What a member (or whatever answers on its port) sends is not trusted: a body over its
//! cap is refused as it streams in, a redirect is an error (never followed: it would take
//! the client certificate elsewhere), the parse runs on a blocking thread so a slow one
//! holds up no other task, and the fetch and the parse together end by the caller's
//! deadline. Errors name the URL without any user or password in it.

use tokio::time::{timeout_at, Instant};

use crate::textformat::{self, Exposition};

/// The largest `/metrics` body accepted from a member. A real etcd 3.4/3.5 member serves
/// 150-250 KB; many gRPC methods and codes, clients and a long uptime's histograms take
/// it to 1-2 MB at most, so 8 MiB is four times the worst we expect, and bounds both the
/// memory one scrape can take and the parse's work (with the parser's own caps).
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// The largest `/health` body accepted: etcd's is `{"health":"true","reason":""}`.
pub const MAX_HEALTH_BODY: usize = 64 * 1024;

/// The longest part of a `Location` header quoted in an error.
const MAX_LOCATION_SHOWN: usize = 200;

/// `url` as it may be shown in an error, a log or a label: any user and password
/// replaced by `***` (`https://***:***@host/...`, or `***@` for a user alone, since a
/// token is sometimes passed as the user), and otherwise exactly as given, so a URL
/// without credentials shows as itself. Done on the text, not by reparsing it: the
/// userinfo is everything before the last `@` of the authority (up to the first `/`, `?`
/// or `#`), which hides at least what a URL parser would take for it.
pub fn redacted(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r))
            if !s.is_empty()
                && s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(&c)) =>
        {
            (Some(s), r)
        }
        _ => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let hidden = match rest[..at].split_once(':') {
        Some(("", _)) => ":***",
        Some(_) => "***:***",
        None => "***",
    };
    let host_and_after = &rest[at + 1..];
    match scheme {
        Some(s) => format!("{s}://{hidden}@{host_and_after}"),
        None => format!("{hidden}@{host_and_after}"),
    }
}

/// GETs `url` before `deadline`, refusing a body over `limit` bytes and any redirect (a
/// 3xx is an error naming the status and where it pointed). Errors show the URL
/// [`redacted`].
pub async fn get_body(
    http: &reqwest::Client,
    url: &str,
    limit: usize,
    deadline: Instant,
) -> Result<(reqwest::StatusCode, Vec<u8>), String> {
    let shown = redacted(url);
    let fetch = async {
        let failed = |e: reqwest::Error| {
            format!(
                "GET {shown}: {}",
                common::etcd::error_chain(&e.without_url())
            )
        };
        let mut resp = http.get(url).send().await.map_err(failed)?;
        let status = resp.status();
        if status.is_redirection() {
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned());
            return Err(match location {
                Some(l) => format!(
                    "GET {shown}: status {status}, a redirect to {:?}, which is not followed",
                    clip(&redacted(&l), MAX_LOCATION_SHOWN)
                ),
                None => format!("GET {shown}: status {status}, a redirect, which is not followed"),
            });
        }
        // A client built with reqwest's default policy follows redirects before `send`
        // returns; the clients we build do not (see common::etcd), and should one ever,
        // what it fetched elsewhere is still not taken for the member's answer.
        if !same_resource(resp.url().as_str(), url) {
            return Err(format!(
                "GET {shown}: answered from {}, after a redirect, which is not accepted",
                redacted(resp.url().as_str())
            ));
        }
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(format!("GET {shown}: body larger than {limit} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > limit {
                return Err(format!("GET {shown}: body larger than {limit} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    };
    timeout_at(deadline, fetch)
        .await
        .map_err(|_| format!("GET {shown}: timed out"))?
}

/// Whether two URLs name the same resource, whoever they are sent as (reqwest takes the
/// user and password out of the URL into an `Authorization` header).
fn same_resource(a: &str, b: &str) -> bool {
    let bare = |s: &str| {
        url::Url::parse(s).ok().map(|mut u| {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u
        })
    };
    matches!((bare(a), bare(b)), (Some(a), Some(b)) if a == b)
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

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
