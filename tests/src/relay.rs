//! The relay run in-process, and a local HTTP server standing in for Slack, PagerDuty or
//! any webhook: it records every request and answers from a script (then 200).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: Instant,
    pub path: String,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
    /// The status the stand-in answered with.
    pub answered: u16,
}

#[derive(Default)]
struct Inner {
    script: Vec<(u16, Option<u64>)>,
    requests: Vec<Recorded>,
}

/// The stand-in server.
#[derive(Clone)]
pub struct StandIn {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    shutdown: CancellationToken,
}

impl StandIn {
    /// Starts it; it answers 200 `ok` unless [`StandIn::script`] says otherwise.
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .fallback(record)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
        StandIn {
            addr,
            inner,
            shutdown,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next answers, in order: a status and an optional `Retry-After` in seconds.
    pub fn script(&self, answers: &[(u16, Option<u64>)]) {
        let mut i = self.inner.lock().expect("lock");
        i.script = answers.iter().rev().copied().collect();
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().expect("lock").requests.clone()
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_requests(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        crate::wait_for(
            &format!("{n} requests at the stand-in"),
            timeout,
            || async {
                let r = self.requests();
                (r.len() >= n).then_some(r)
            },
        )
        .await
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if Arc::strong_count(&self.inner) <= 2 {
            self.shutdown.cancel();
        }
    }
}

async fn record(
    State(inner): State<Arc<Mutex<Inner>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut i = inner.lock().expect("lock");
    let (status, retry_after) = i.script.pop().unwrap_or((200, None));
    i.requests.push(Recorded {
        at: Instant::now(),
        path: uri.path().to_owned(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        answered: status,
    });
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (
        code,
        if status < 300 {
            "ok"
        } else {
            "scripted failure"
        },
    )
        .into_response();
    if let Some(s) = retry_after {
        resp.headers_mut()
            .insert("retry-after", s.to_string().parse().expect("header value"));
    }
    resp
}

/// A relay on 127.0.0.1 on a free port, with its config written to a temp dir; stopped
/// on drop.
pub struct RunningRelay {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    daemon: crate::daemon::InProcess,
    http: reqwest::Client,
}

impl RunningRelay {
    pub async fn start(config_yaml: &str) -> Self {
        Self::start_with_flags(config_yaml, &[]).await
    }

    /// Starts it with `extra` flags too (TLS, a token).
    pub async fn start_with_flags(config_yaml: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let cfg = dir.path().join("relay.yml");
        std::fs::write(&cfg, config_yaml).expect("write config");
        let mut argv = vec![
            "etcd-monitor-relay".to_owned(),
            "--config".to_owned(),
            cfg.to_str().expect("utf8").to_owned(),
            "--data-dir".to_owned(),
            dir.path().join("data").to_str().expect("utf8").to_owned(),
            "--max-body-bytes".to_owned(),
            "65536".to_owned(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        let args = alerting::Args::try_parse_from(&argv).expect("flags");
        let config = alerting::Config::from_args(args).expect("valid config");
        let daemon = crate::daemon::InProcess::start(|l, s| alerting::run(config, l, s)).await;
        RunningRelay {
            addr: daemon.addr,
            dir,
            http: daemon.http.clone(),
            daemon,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs `body` (raw bytes) to `path`: status and JSON answer.
    pub async fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, serde_json::Value) {
        let resp = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON")
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("text")
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.daemon.stop().await
    }
}

/// A firing alert in Prometheus's `POST /api/v2/alerts` shape, with `endsAt` in the
/// future as Prometheus sends it.
pub fn firing(name: &str, severity: &str, member: &str) -> serde_json::Value {
    let ends = std::time::SystemTime::now() + Duration::from_secs(3600);
    serde_json::json!({
        "labels": { "alertname": name, "severity": severity, "member": member },
        "annotations": { "summary": format!("{name} on {member}"), "description": "details" },
        "startsAt": rfc3339(std::time::SystemTime::now()),
        "endsAt": rfc3339(ends),
        "generatorURL": "http://prometheus/graph",
    })
}

/// The same alert resolved (its `endsAt` in the past).
pub fn resolved(name: &str, severity: &str, member: &str) -> serde_json::Value {
    let mut a = firing(name, severity, member);
    a["endsAt"] = serde_json::json!(rfc3339(
        std::time::SystemTime::now() - Duration::from_secs(5)
    ));
    a
}

/// `t` in RFC 3339, as Prometheus writes `startsAt` and `endsAt`.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format a time")
}
