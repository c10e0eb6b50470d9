//! A real Prometheus (Debian package `prometheus`) on a free loopback port, with its
//! config and storage in a temp dir; killed on drop. Also the repository's own assets
//! (`rules/`, `prometheus/`) and `promtool` runs over them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::ChildGuard;

/// The repository root (the assets live there, not in a crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The rule files Prometheus loads: `rules/*.yml` (the unit tests under `rules/tests/`
/// are not rule files).
pub fn rule_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("rules"))
        .expect("rules/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    files
}

/// Runs `promtool` with `args` in the repository root: exit code and everything printed.
pub fn promtool(args: &[&str]) -> (i32, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("promtool (Debian package prometheus) must be installed");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A running Prometheus.
pub struct RunningPrometheus {
    pub port: u16,
    /// Its config and storage, removed when it is dropped.
    _dir: tempfile::TempDir,
    http: reqwest::Client,
    _child: ChildGuard,
}

impl RunningPrometheus {
    /// Writes `config_yaml` as its `prometheus.yml` and starts it, with `extra_args`;
    /// returns once it is ready (config and rules loaded).
    pub async fn start(config_yaml: &str, extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_yaml).expect("write prometheus.yml");
        let port = crate::free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(extra_args)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus) must be installed");
        let p = RunningPrometheus {
            port,
            _dir: dir,
            http: reqwest::Client::new(),
            _child: ChildGuard(child),
        };
        crate::wait_for(
            "Prometheus to be ready",
            Duration::from_secs(60),
            || async {
                let r = p.http.get(p.url("/-/ready")).send().await.ok()?;
                r.status().is_success().then_some(())
            },
        )
        .await;
        p
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// An instant query: the `result` vector (empty when the query failed).
    pub async fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let v = self.query_response(expr).await;
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// An instant query's whole answer (`status`, `error`, `data`); `null` when
    /// Prometheus did not answer.
    pub async fn query_response(&self, expr: &str) -> serde_json::Value {
        let Ok(r) = self
            .http
            .get(self.url("/api/v1/query"))
            .query(&[("query", expr)])
            .send()
            .await
        else {
            return serde_json::Value::Null;
        };
        r.json().await.unwrap_or_default()
    }

    /// Every metric name Prometheus holds (series scraped or recorded).
    pub async fn metric_names(&self) -> std::collections::BTreeSet<String> {
        let Ok(r) = self
            .http
            .get(self.url("/api/v1/label/__name__/values"))
            .send()
            .await
        else {
            return Default::default();
        };
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        v["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The alerts Prometheus holds (pending and firing).
    pub async fn alerts(&self) -> Vec<serde_json::Value> {
        let Ok(r) = self.http.get(self.url("/api/v1/alerts")).send().await else {
            return Vec::new();
        };
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        v["data"]["alerts"].as_array().cloned().unwrap_or_default()
    }
}
