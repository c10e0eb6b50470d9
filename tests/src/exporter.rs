//! The exporter run in-process against a test cluster, with helpers to read its
//! `/metrics` and API.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use exporter::textformat::{self, Exposition};

use crate::daemon::InProcess;
use crate::EtcdCluster;

/// An exporter running on 127.0.0.1 on a free port; stopped on drop.
pub struct RunningExporter {
    pub addr: SocketAddr,
    daemon: InProcess,
    http: reqwest::Client,
}

/// The exporter flags that point at `cluster` (endpoints, TLS, auth).
pub fn cluster_flags(cluster: &EtcdCluster) -> Vec<String> {
    let mut v = vec!["--endpoints".to_owned(), cluster.endpoints()];
    if let Some(t) = &cluster.tls {
        for (flag, p) in [
            ("--cacert", &t.ca),
            ("--cert", &t.client_cert),
            ("--key", &t.client_key),
        ] {
            v.push(flag.into());
            v.push(p.to_string_lossy().into_owned());
        }
    }
    if let Some(p) = &cluster.password_file {
        v.push("--user".into());
        v.push("root".into());
        v.push("--password-file".into());
        v.push(p.to_string_lossy().into_owned());
    }
    v
}

/// One entry of the exporter's `--config` file for `cluster`, named `name`: the keys are
/// the flags [`cluster_flags`] gives (TLS and auth carry over).
pub fn config_entry(name: &str, cluster: &EtcdCluster) -> String {
    let mut yaml = format!("  - name: {name}\n");
    for pair in cluster_flags(cluster).chunks(2) {
        let key = pair[0].trim_start_matches("--").replace('-', "_");
        yaml.push_str(&format!("    {key}: {:?}\n", pair[1]));
    }
    yaml
}

impl RunningExporter {
    /// Starts the exporter with `flags` (no program name; `--listen` is added).
    pub async fn start(flags: &[String]) -> Self {
        let mut argv = vec!["etcd-monitor".to_owned()];
        argv.extend(flags.iter().cloned());
        let args = exporter::Args::try_parse_from(&argv).expect("valid flags");
        let config = exporter::Config::from_args(args).expect("valid config");
        let daemon = InProcess::start(|l, s| exporter::run(config, l, s)).await;
        RunningExporter {
            addr: daemon.addr,
            http: daemon.http.clone(),
            daemon,
        }
    }

    /// Starts the exporter against `cluster` at `interval`, plus `extra` flags.
    pub async fn for_cluster(cluster: &EtcdCluster, interval: &str, extra: &[&str]) -> Self {
        let mut flags = cluster_flags(cluster);
        flags.push("--interval".into());
        flags.push(interval.into());
        flags.extend(extra.iter().map(|s| s.to_string()));
        Self::start(&flags).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GET `path`: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }

    /// GET `path` as JSON (must be 200).
    pub async fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
    }

    /// The parsed `/metrics`.
    pub async fn metrics(&self) -> Exposition {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200);
        textformat::parse(&body).expect("exporter /metrics parses")
    }

    /// Waits until the exporter has finished at least `n` cycles after now.
    pub async fn wait_cycles(&self, n: u64) {
        let start = self.cycle().await;
        crate::wait_for("exporter cycles", Duration::from_secs(60), || async {
            (self.cycle().await >= start + n).then_some(())
        })
        .await;
    }

    /// The number of the last cycle (`/health`'s `cycle`; 0 before the first).
    pub async fn cycle(&self) -> u64 {
        let (_, body) = self.get("/health").await;
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["cycle"].as_u64())
            .unwrap_or(0)
    }

    /// Stops the exporter and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.daemon.stop().await
    }
}

/// The value of the sample `name` whose labels include all of `labels`.
pub fn value(exp: &Exposition, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exp.families.iter().flat_map(|f| &f.samples).find_map(|s| {
        (s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(v))).then_some(s.value)
    })
}
