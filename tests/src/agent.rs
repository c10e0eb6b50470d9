//! The agent run in-process next to a test cluster's member.

use std::net::SocketAddr;

use clap::Parser;
use exporter::textformat::{self, Exposition};

use crate::daemon::InProcess;
use crate::EtcdCluster;

/// An agent on 127.0.0.1 on a free port; stopped on drop.
pub struct RunningAgent {
    pub addr: SocketAddr,
    daemon: InProcess,
    http: reqwest::Client,
}

impl RunningAgent {
    /// Starts the agent with `flags` (no program name; `--listen` is ignored).
    pub async fn start(flags: &[String]) -> Self {
        let mut argv = vec!["etcd-monitor-agent".to_owned()];
        argv.extend(flags.iter().cloned());
        let args = agent::Args::try_parse_from(&argv).expect("valid flags");
        let config = agent::Config::from_args(args.daemon).expect("valid config");
        let daemon = InProcess::start(|l, s| agent::run(config, l, s)).await;
        RunningAgent {
            addr: daemon.addr,
            http: daemon.http.clone(),
            daemon,
        }
    }

    /// An agent for member `i` of `cluster`, collecting every `interval`, probing every
    /// `probe` (`"0"` for off), plus `extra` flags.
    pub async fn for_member(
        cluster: &EtcdCluster,
        i: usize,
        interval: &str,
        probe: &str,
        extra: &[&str],
    ) -> Self {
        let m = &cluster.members[i];
        let mut flags: Vec<String> = vec![
            "--member".into(),
            m.name.clone(),
            "--data-dir".into(),
            m.data_dir.to_string_lossy().into_owned(),
            "--etcd-client-port".into(),
            m.client_port.to_string(),
            "--interval".into(),
            interval.into(),
            "--fsync-probe-interval".into(),
            probe.into(),
        ];
        flags.extend(extra.iter().map(|s| s.to_string()));
        Self::start(&flags).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.url()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }

    pub async fn snapshot(&self) -> serde_json::Value {
        let (status, body) = self.get("/api/v1/snapshot").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("snapshot JSON")
    }

    pub async fn metrics(&self) -> Exposition {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200);
        textformat::parse(&body).expect("agent /metrics parses")
    }

    /// Stops the agent and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.daemon.stop().await
    }
}
