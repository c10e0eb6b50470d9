//! Fetching a member's own `/metrics` and `/health` over HTTP(S), with the etcd TLS
//! settings, a deadline and a size limit.

use tokio::time::{timeout_at, Instant};

use crate::textformat::{self, Exposition};

/// The largest `/metrics` body accepted from a member.
pub const MAX_BODY: usize = 32 * 1024 * 1024;

/// GETs `url` before `deadline`, refusing a body over `limit` bytes.
pub async fn get_body(
    http: &reqwest::Client,
    url: &str,
    limit: usize,
    deadline: Instant,
) -> Result<(reqwest::StatusCode, Vec<u8>), String> {
    let fetch = async {
        let mut resp = http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", common::etcd::error_chain(&e)))?;
        let status = resp.status();
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(format!("GET {url}: body larger than {limit} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("GET {url}: {}", common::etcd::error_chain(&e)))?
        {
            if body.len() + chunk.len() > limit {
                return Err(format!("GET {url}: body larger than {limit} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    };
    timeout_at(deadline, fetch)
        .await
        .map_err(|_| format!("GET {url}: timed out"))?
}

fn join(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

/// The member's `/metrics`, parsed.
pub async fn metrics(
    http: &reqwest::Client,
    base: &str,
    deadline: Instant,
) -> Result<Exposition, String> {
    let url = join(base, "/metrics");
    let (status, body) = get_body(http, &url, MAX_BODY, deadline).await?;
    if !status.is_success() {
        return Err(format!("GET {url}: status {status}"));
    }
    let text = std::str::from_utf8(&body).map_err(|e| format!("GET {url}: not UTF-8: {e}"))?;
    textformat::parse(text).map_err(|e| format!("GET {url}: not Prometheus text: {e}"))
}

/// The member's `/health` verdict: `Ok(true)` when it says `{"health":"true"}`.
pub async fn health(http: &reqwest::Client, base: &str, deadline: Instant) -> Result<bool, String> {
    #[derive(serde::Deserialize)]
    struct Health {
        health: String,
    }
    let url = join(base, "/health");
    let (_, body) = get_body(http, &url, MAX_BODY, deadline).await?;
    // etcd answers 503 with the same body when unhealthy, so the body decides.
    let h: Health =
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: unexpected answer: {e}"))?;
    Ok(h.health == "true")
}
