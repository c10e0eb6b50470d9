//! The compose stack (`compose/docker-compose.yml`, `scripts/compose.sh`) on the real
//! Docker engine: built offline (our image from the debug binaries this `cargo test` built,
//! stripped; etcd, Prometheus and Pushgateway stand-ins from Debian's binaries), on free
//! host ports under a project name of its own. The exporter sees 3 healthy members with 3
//! agents joined, Prometheus has every target of `prometheus/prometheus.yml` up with the
//! rules loaded, `kill etcd2` makes `EtcdMemberDown{member="etcd2"}` fire and reach the
//! relay (the rule has `for: 1m`, so this takes over a minute), and `down` leaves no
//! container, network or volume of the project behind.
//!
//! Skips (with a message) where no Docker engine answers; never in CI (`CI=true`): there a
//! missing engine fails the test. The measurements are printed (`compose: ...`, visible
//! with `--nocapture`); the test asserts what happens, never how fast.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::free_port;
use tests::prometheus::repo_root;

fn docker_ok(args: &[&str]) -> bool {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn docker_out(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The stack under test: `compose.sh` with this test's project, ports and state dir.
struct Stack {
    project: String,
    state: PathBuf,
    image: String,
    env: Vec<(&'static str, String)>,
    up: bool,
}

impl Stack {
    fn script(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(repo_root().join("scripts/compose.sh"));
        cmd.args(args)
            .env("COMPOSE_PROJECT_NAME", &self.project)
            .env("ETCD_MONITOR_COMPOSE_STATE", &self.state)
            .env("ETCD_MONITOR_IMAGE", &self.image)
            .env("ETCD_MONITOR_COMPOSE_OFFLINE", "1")
            .env_remove("PAGERDUTY_ROUTING_KEY")
            .env_remove("SLACK_WEBHOOK_URL")
            .env_remove("HEARTBEAT_URL");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.output().expect("run scripts/compose.sh")
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.script(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "compose.sh {args:?} failed:\n{text}");
        text
    }

    fn port(&self, var: &str) -> String {
        self.env
            .iter()
            .find(|(k, _)| *k == var)
            .map(|(_, v)| v.clone())
            .expect("a host port")
    }

    fn container(&self, service: &str) -> String {
        docker_out(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
        ])
    }

    /// Resident memory of the service's main process, in MiB (from /proc of the host,
    /// where the engine runs here; else from `docker stats`).
    fn rss_mib(&self, service: &str) -> String {
        let id = self.container(service);
        let pid = docker_out(&["inspect", "-f", "{{.State.Pid}}", &id]);
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            {
                return format!("{:.1} MiB RSS", kb / 1024.0);
            }
        }
        let usage = docker_out(&["stats", "--no-stream", "--format", "{{.MemUsage}}", &id]);
        format!("{usage} (docker stats)")
    }

    /// What is left of the project: containers, networks, volumes.
    fn leftovers(&self) -> Vec<String> {
        let label = format!("label=com.docker.compose.project={}", self.project);
        let mut left = Vec::new();
        for (what, args) in [
            ("container", vec!["ps", "-aq", "--filter", &label]),
            ("network", vec!["network", "ls", "-q", "--filter", &label]),
            ("volume", vec!["volume", "ls", "-q", "--filter", &label]),
        ] {
            left.extend(
                docker_out(&args)
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(|l| format!("{what} {l}")),
            );
        }
        left
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.up {
            // A failed assertion: show why, then leave nothing behind.
            let logs = self.script(&["logs", "--tail", "30"]);
            eprintln!("{}", String::from_utf8_lossy(&logs.stdout));
            let _ = self.script(&["down"]);
        }
    }
}

async fn get_json(client: &reqwest::Client, url: &str, token: Option<&str>) -> Option<Value> {
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

/// Polls `check` every second until it returns `Some`; panics naming `what` and the last
/// state seen after `timeout`.
async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// The job names of `prometheus/prometheus.yml` (uncommented `job_name:` lines).
fn shipped_jobs() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo_root().join("prometheus/prometheus.yml"))
        .expect("prometheus/prometheus.yml");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("- job_name:"))
        .map(|j| j.trim().trim_matches(['\'', '"']).to_owned())
        .collect()
}

fn bin_dir() -> PathBuf {
    // target/<profile>/deps/deploy_compose-HASH -> target/<profile>
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_stack_runs_and_alerts_on_a_dead_member() {
    if !docker_ok(&["info"]) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but no Docker engine answers (`docker info` failed): the compose test must run in CI"
        );
        eprintln!("SKIPPED compose_stack_runs_and_alerts_on_a_dead_member: no Docker engine answers (`docker info` failed)");
        return;
    }
    let bins = bin_dir();
    for b in ["etcd-monitor", "etcd-monitor-agent", "etcd-monitor-relay"] {
        assert!(
            bins.join(b).exists(),
            "{} is missing: cargo test builds it",
            bins.join(b).display()
        );
    }

    let state = tempfile::Builder::new()
        .prefix("compose-test")
        .tempdir()
        .expect("tempdir");
    let mut stack = Stack {
        project: format!("etcdmontest{}", std::process::id()),
        state: state.path().join("state"),
        image: "etcd-monitor:test".to_owned(),
        env: vec![
            (
                "ETCD_MONITOR_COMPOSE_BIN_DIR",
                bins.to_string_lossy().into_owned(),
            ),
            ("EXPORTER_HOST_PORT", free_port().to_string()),
            ("RELAY_HOST_PORT", free_port().to_string()),
            ("PROMETHEUS_HOST_PORT", free_port().to_string()),
            ("PUSHGATEWAY_HOST_PORT", free_port().to_string()),
            ("GRAFANA_HOST_PORT", free_port().to_string()),
        ],
        up: true,
    };

    // Up: built offline, healthy.
    let started = Instant::now();
    let out = stack.run(&["up", "--offline"]);
    let up_time = started.elapsed();
    eprintln!("compose: up (build + start + all healthy) took {up_time:.1?}");
    if let Some(line) = out
        .lines()
        .find(|l| l.contains("healthy") && l.contains("after start"))
    {
        eprintln!("{line}");
    }
    let size: f64 = docker_out(&["image", "inspect", "-f", "{{.Size}}", &stack.image])
        .parse()
        .expect("image size");
    eprintln!(
        "compose: image {} is {:.1} MB (debug binaries, stripped)",
        stack.image,
        size / 1e6
    );
    assert_eq!(
        docker_out(&["image", "inspect", "-f", "{{.Config.User}}", &stack.image]),
        "65532:65532"
    );
    for b in ["etcd-monitor", "etcd-monitor-agent", "etcd-monitor-relay"] {
        assert!(
            docker_ok(&["run", "--rm", &stack.image, b, "--help"]),
            "{b} --help in the image"
        );
    }
    // The image's own HEALTHCHECK command works in a daemon's container.
    let relay_id = stack.container("relay");
    assert!(
        docker_ok(&["exec", &relay_id, "/usr/local/bin/etcd-monitor-healthcheck"]),
        "the image's healthcheck in the relay container"
    );

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let exporter = format!("http://127.0.0.1:{}", stack.port("EXPORTER_HOST_PORT"));
    let relay = format!("http://127.0.0.1:{}", stack.port("RELAY_HOST_PORT"));
    let prometheus = format!("http://127.0.0.1:{}", stack.port("PROMETHEUS_HOST_PORT"));
    let token = std::fs::read_to_string(stack.state.join("relay-token"))
        .expect("relay token")
        .trim()
        .to_owned();

    // The exporter: 3 healthy members, each with its agent joined.
    poll(
        "3 healthy members with agents",
        Duration::from_secs(90),
        || async {
            let status = get_json(&client, &format!("{exporter}/api/v1/cluster/status"), None)
                .await
                .ok_or("no status")?;
            let members = get_json(&client, &format!("{exporter}/api/v1/cluster/members"), None)
                .await
                .ok_or("no members")?;
            let ok = status["healthy"] == true
                && status["member_count"] == 3
                && status["healthy_members"] == 3;
            let list = members
                .as_array()
                .or_else(|| members["members"].as_array())
                .cloned()
                .unwrap_or_default();
            let names: BTreeSet<String> = list
                .iter()
                .filter(|m| m["up"] == true && m["healthy"] == true && m["agent"]["up"] == true)
                .filter_map(|m| m["name"].as_str().map(str::to_owned))
                .collect();
            if ok && names == BTreeSet::from(["etcd1".into(), "etcd2".into(), "etcd3".into()]) {
                Ok(())
            } else {
                Err(format!("status {status}, members with agents {names:?}"))
            }
        },
    )
    .await;

    // Prometheus: every job of prometheus/prometheus.yml, every target up, the rules loaded.
    let jobs = shipped_jobs();
    poll(
        "every Prometheus target up",
        Duration::from_secs(90),
        || async {
            let t = get_json(&client, &format!("{prometheus}/api/v1/targets"), None)
                .await
                .ok_or("no targets")?;
            let active = t["data"]["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let seen: BTreeSet<String> = active
                .iter()
                .filter_map(|t| t["labels"]["job"].as_str().map(str::to_owned))
                .collect();
            let down: Vec<String> = active
                .iter()
                .filter(|t| t["health"] != "up")
                .map(|t| format!("{} {}", t["scrapeUrl"], t["lastError"]))
                .collect();
            let agents = active
                .iter()
                .filter(|t| t["labels"]["job"] == "etcd-monitor-agent")
                .count();
            if seen == jobs && down.is_empty() && agents == 3 {
                Ok(())
            } else {
                Err(format!(
                    "jobs {seen:?} (want {jobs:?}), {} targets, not up: {down:?}",
                    active.len()
                ))
            }
        },
    )
    .await;
    let rules = get_json(&client, &format!("{prometheus}/api/v1/rules"), None)
        .await
        .expect("rules");
    assert!(
        rules.to_string().contains("\"EtcdMemberDown\""),
        "Prometheus has not loaded rules/etcd-alerts.yml"
    );

    for service in ["exporter", "agent1", "relay"] {
        eprintln!("compose: {service} {}", stack.rss_mib(service));
    }

    // A member dies: EtcdMemberDown{member="etcd2"} reaches the relay.
    stack.run(&["kill", "etcd2"]);
    let killed = Instant::now();
    poll(
        "EtcdMemberDown{member=\"etcd2\"} at the relay",
        Duration::from_secs(240),
        || async {
            let alerts = get_json(&client, &format!("{relay}/api/v2/alerts"), Some(&token))
                .await
                .ok_or("no alerts")?;
            let found = alerts.as_array().into_iter().flatten().any(|a| {
                a["labels"]["alertname"] == "EtcdMemberDown" && a["labels"]["member"] == "etcd2"
            });
            if found {
                Ok(())
            } else {
                Err(alerts.to_string())
            }
        },
    )
    .await;
    eprintln!(
        "compose: EtcdMemberDown{{member=\"etcd2\"}} at the relay {:.1?} after the kill (rule `for: 1m`)",
        killed.elapsed()
    );
    let history = poll(
        "the notification in the relay's history",
        Duration::from_secs(30),
        || async {
            let h = get_json(
                &client,
                &format!("{relay}/api/v1/alerts/history"),
                Some(&token),
            )
            .await
            .ok_or("no history")?;
            let delivered = h["history"].as_array().into_iter().flatten().any(|n| {
                n["alertname"] == "EtcdMemberDown"
                    && n["outcome"] == "delivered"
                    && n["group_key"]
                        .as_str()
                        .unwrap_or("")
                        .contains("member=\"etcd2\"")
            });
            if delivered {
                Ok(h)
            } else {
                Err(h.to_string())
            }
        },
    )
    .await;
    assert!(history["history"].is_array());
    let status = get_json(&client, &format!("{exporter}/api/v1/cluster/status"), None)
        .await
        .expect("status");
    assert_eq!(status["up_members"], 2, "{status}");

    // Down: nothing of the project is left.
    stack.run(&["down"]);
    stack.up = false;
    let left = stack.leftovers();
    assert!(left.is_empty(), "left behind by down: {left:?}");
    eprintln!("compose: whole test took {:.1?}", started.elapsed());
}
