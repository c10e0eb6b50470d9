//! The relay's Alertmanager v2 API driven by the real `amtool` (Debian package
//! `prometheus-alertmanager`, which `scripts/setup.sh` installs): a silence added with
//! amtool keeps its alert from the webhook until amtool expires it; silences survive a
//! restart of the `etcd-monitor-relay` binary; bad silences are refused naming the
//! problem; amtool reads `GET /api/v2/status`.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tests::relay::{firing, rfc3339, Recorded, RunningRelay, StandIn};
use tests::wait_for;

const AMTOOL: &str = "/usr/bin/amtool";
/// How long a silenced alert must stay away from the webhook: the relay steps every
/// second, so this is a couple of steps.
const QUIET: Duration = Duration::from_millis(2500);
/// Generous bound for anything the relay does "within a second".
const SOON: Duration = Duration::from_secs(15);

/// A webhook-only relay config; each alert is its own group, notified at once.
fn hook_config(hook: &StandIn) -> String {
    format!(
        "receivers:\n  - name: hook\n    webhook:\n      url: {}\n",
        hook.url("/hook-secret-path")
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `amtool --alertmanager.url=URL ARGS` with a clean environment (no proxy, no
/// `~/.config/prometheus/amtool.yml`) and the version check off; its output.
async fn amtool(url: &str, args: &[&str]) -> Output {
    amtool_with(url, &["--no-version-check"], args).await
}

async fn amtool_with(url: &str, flags: &[&str], args: &[&str]) -> Output {
    let run = tokio::process::Command::new(AMTOOL)
        .arg(format!("--alertmanager.url={url}"))
        .arg("--timeout=10s")
        .args(flags)
        .args(args)
        .env_clear()
        .env("HOME", "/nonexistent")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(30), run).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{AMTOOL} is missing: install the Debian package prometheus-alertmanager \
             (scripts/setup.sh does; do not start its service)"
        ),
        Ok(Err(e)) => panic!("cannot run {AMTOOL}: {e}"),
        Err(_) => panic!("amtool {args:?} did not finish within 30s"),
    }
}

/// Runs amtool and requires exit 0; its stdout.
async fn amtool_ok(url: &str, args: &[&str]) -> String {
    let out = amtool(url, args).await;
    assert!(
        out.status.success(),
        "amtool {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The first column of amtool's simple table (the alert names), header left out.
fn first_column(table: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The silence ids `amtool silence query -q ARGS` prints.
async fn silence_ids(url: &str, args: &[&str]) -> Vec<String> {
    let mut all = vec!["silence", "query", "-q"];
    all.extend_from_slice(args);
    amtool_ok(url, &all)
        .await
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `amtool silence add alertname=NAME` for an hour; the new silence's id.
async fn add_silence(url: &str, name: &str) -> String {
    let id = amtool_ok(
        url,
        &[
            "silence",
            "add",
            &format!("alertname={name}"),
            "--author=relay-amtool-test",
            "--comment=maintenance window",
            "--duration=1h",
        ],
    )
    .await
    .trim()
    .to_owned();
    assert!(
        id.len() == 36 && id.split('-').count() == 5,
        "amtool printed no silence id: {id:?}"
    );
    id
}

/// The alert names of each webhook call (one alert per call with default grouping).
fn delivered(reqs: &[Recorded]) -> Vec<String> {
    reqs.iter()
        .flat_map(|r| r.body["alerts"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
        .collect()
}

fn count(names: &[String], name: &str) -> usize {
    names.iter().filter(|n| *n == name).count()
}

/// Waits until the webhook has heard of alert `name`.
async fn wait_delivered(hook: &StandIn, name: &str) {
    wait_for(&format!("{name} at the webhook"), SOON, || async {
        (count(&delivered(&hook.requests()), name) > 0).then_some(())
    })
    .await;
}

/// The alert named `name` in `GET /api/v2/alerts`.
fn alert_named<'a>(alerts: &'a Value, name: &str) -> &'a Value {
    alerts
        .as_array()
        .and_then(|a| a.iter().find(|x| x["labels"]["alertname"] == name))
        .unwrap_or_else(|| panic!("{name} not in GET /api/v2/alerts: {alerts}"))
}

/// An error answer's message: Alertmanager answers a JSON string, the relay `{"error"}`.
fn message(v: &Value) -> &str {
    v.as_str()
        .or_else(|| v["error"].as_str())
        .unwrap_or_default()
}

async fn post_firing(base: &str, names: &[&str]) {
    let alerts: Vec<Value> = names.iter().map(|n| firing(n, "warning", "m1")).collect();
    let resp = http()
        .post(format!("{base}/api/v2/alerts"))
        .json(&alerts)
        .send()
        .await
        .expect("POST /api/v2/alerts");
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(status, 200, "POST /api/v2/alerts {names:?}: {body}");
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("HTTP client")
}

async fn get_json(url: &str) -> Value {
    let resp = http().get(url).send().await.expect("GET");
    assert_eq!(resp.status().as_u16(), 200, "GET {url}");
    resp.json().await.expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amtool_silence_holds_back_its_alert_until_amtool_expires_it() {
    tests::init_logs();
    let hook = StandIn::start().await;
    let relay = RunningRelay::start(&hook_config(&hook)).await;
    let url = relay.url("");

    let id = add_silence(&url, "AmtoolX").await;
    assert_eq!(silence_ids(&url, &[]).await, [id.as_str()]);
    assert_eq!(
        silence_ids(&url, &["alertname=AmtoolX"]).await,
        [id.as_str()]
    );
    assert!(
        silence_ids(&url, &["alertname=AmtoolY"]).await.is_empty(),
        "the filter is applied"
    );
    let listed: Value =
        serde_json::from_str(&amtool_ok(&url, &["silence", "query", "-o", "json"]).await)
            .expect("amtool silence query -o json prints JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let s = &listed[0];
    assert_eq!(s["id"], id.as_str());
    assert_eq!(s["status"]["state"], "active");
    assert_eq!(
        s["matchers"],
        json!([{"name": "alertname", "value": "AmtoolX", "isRegex": false, "isEqual": true}])
    );
    assert_eq!(s["createdBy"], "relay-amtool-test");
    assert_eq!(s["comment"], "maintenance window");

    post_firing(&url, &["AmtoolX", "AmtoolY"]).await;
    wait_delivered(&hook, "AmtoolY").await;
    tokio::time::sleep(QUIET).await;
    let names = delivered(&hook.requests());
    assert_eq!(
        count(&names, "AmtoolX"),
        0,
        "silenced, yet delivered: {names:?}"
    );

    let alerts = relay.get("/api/v2/alerts").await;
    let x = alert_named(&alerts, "AmtoolX");
    assert_eq!(x["status"]["state"], "suppressed", "{x}");
    assert_eq!(x["status"]["silencedBy"], json!([id]), "{x}");
    assert_eq!(x["status"]["inhibitedBy"], json!([]), "{x}");
    let y = alert_named(&alerts, "AmtoolY");
    assert_eq!(y["status"]["state"], "active", "{y}");
    assert_eq!(y["status"]["silencedBy"], json!([]), "{y}");

    // Without a state flag amtool asks for active alerts only; -s for silenced ones.
    let shown = amtool_ok(&url, &["alert", "query"]).await;
    assert_eq!(first_column(&shown), ["AmtoolY"], "{shown}");
    let shown = amtool_ok(&url, &["alert", "query", "--silenced"]).await;
    assert_eq!(first_column(&shown), ["AmtoolX"], "{shown}");
    assert!(shown.contains("suppressed"), "{shown}");
    let shown = amtool_ok(&url, &["alert", "query", "--active", "--silenced"]).await;
    let mut both = first_column(&shown);
    both.sort();
    assert_eq!(both, ["AmtoolX", "AmtoolY"], "{shown}");
    let shown = amtool_ok(&url, &["alert", "query", "-o", "json", "--silenced"]).await;
    let shown: Value = serde_json::from_str(&shown).expect("amtool alert query -o json");
    assert_eq!(shown[0]["status"]["silencedBy"], json!([id]), "{shown}");

    amtool_ok(&url, &["silence", "expire", &id]).await;
    wait_delivered(&hook, "AmtoolX").await;
    let reqs = hook.requests();
    let x = reqs
        .iter()
        .find(|r| r.body["alerts"][0]["labels"]["alertname"] == "AmtoolX")
        .expect("the call for AmtoolX");
    assert_eq!(x.body["status"], "firing", "{}", x.body);
    assert!(
        silence_ids(&url, &[]).await.is_empty(),
        "expired, yet active"
    );
    assert_eq!(silence_ids(&url, &["--expired"]).await, [id.as_str()]);
    let s = relay.get(&format!("/api/v2/silence/{id}")).await;
    assert_eq!(s["status"]["state"], "expired", "{s}");
    let alerts = relay.get("/api/v2/alerts").await;
    let x = alert_named(&alerts, "AmtoolX");
    assert_eq!(x["status"]["state"], "active", "{x}");
    assert_eq!(x["status"]["silencedBy"], json!([]), "{x}");

    // Each alert was told once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let names = delivered(&hook.requests());
    assert_eq!(
        (count(&names, "AmtoolX"), count(&names, "AmtoolY")),
        (1, 1),
        "{names:?}"
    );
    relay.stop().await.expect("stop");
}

/// The `etcd-monitor-relay` binary, built from the current sources (the tests crate does
/// not build it, and no harness helper finds it): `cargo build` says where it is.
async fn relay_binary() -> PathBuf {
    let mut cargo = tokio::process::Command::from(tests::clean_command(env!("CARGO")));
    let out = cargo
        .args([
            "build",
            "-p",
            "alerting",
            "--bin",
            "etcd-monitor-relay",
            "--message-format=json",
        ])
        .output()
        .await
        .expect("run cargo build");
    assert!(
        out.status.success(),
        "cargo build of etcd-monitor-relay failed:\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| {
            m["reason"] == "compiler-artifact" && m["target"]["name"] == "etcd-monitor-relay"
        })
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo build names the etcd-monitor-relay executable")
}

/// The relay binary running on 127.0.0.1 with a config and data directory; killed on drop.
struct RelayProcess {
    child: tokio::process::Child,
    url: String,
    log: PathBuf,
}

impl RelayProcess {
    async fn start(bin: &Path, config: &Path, data: &Path, log: PathBuf) -> Self {
        let port = tests::free_port();
        let log_file = std::fs::File::create(&log).expect("create the relay log");
        let child = tokio::process::Command::new(bin)
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn etcd-monitor-relay");
        let p = RelayProcess {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let ready = format!("{}/-/ready", p.url);
        let client = http();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client.get(&ready).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the relay never became ready:\n{}",
                p.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and the exit that follows must be clean.
    async fn stop(mut self) {
        let pid = self.child.id().expect("the relay is running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("the relay exits within 15s of SIGTERM")
            .expect("wait");
        assert!(status.success(), "relay exit {status}:\n{}", self.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amtool_silence_survives_a_restart_of_the_relay_binary() {
    tests::init_logs();
    let bin = relay_binary().await;
    let hook = StandIn::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("relay.yml");
    std::fs::write(&config, hook_config(&hook)).expect("write config");
    let data = dir.path().join("data");

    let relay = RelayProcess::start(&bin, &config, &data, dir.path().join("relay-1.log")).await;
    let id = add_silence(&relay.url, "AmtoolX").await;
    let before: Value =
        serde_json::from_str(&amtool_ok(&relay.url, &["silence", "query", "-o", "json"]).await)
            .expect("JSON");
    post_firing(&relay.url, &["AmtoolX"]).await;
    relay.stop().await;

    let relay = RelayProcess::start(&bin, &config, &data, dir.path().join("relay-2.log")).await;
    let after: Value =
        serde_json::from_str(&amtool_ok(&relay.url, &["silence", "query", "-o", "json"]).await)
            .expect("JSON");
    assert_eq!(
        after, before,
        "the silence as amtool lists it, before and after"
    );
    assert_eq!(after[0]["id"], id.as_str());
    let alerts = get_json(&format!("{}/api/v2/alerts", relay.url)).await;
    let x = alert_named(&alerts, "AmtoolX");
    assert_eq!(x["status"]["silencedBy"], json!([id]), "{x}");
    // An unsilenced alert is delivered (the relay works), the silenced one stays back.
    post_firing(&relay.url, &["AmtoolY"]).await;
    wait_delivered(&hook, "AmtoolY").await;
    tokio::time::sleep(QUIET).await;
    let names = delivered(&hook.requests());
    assert_eq!(
        count(&names, "AmtoolX"),
        0,
        "silenced, yet delivered: {names:?}"
    );

    amtool_ok(&relay.url, &["silence", "expire", &id]).await;
    wait_delivered(&hook, "AmtoolX").await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_silences_are_refused_naming_the_problem() {
    tests::init_logs();
    let hook = StandIn::start().await;
    let relay = RunningRelay::start(&hook_config(&hook)).await;
    let now = std::time::SystemTime::now();
    let hour = Duration::from_secs(3600);
    // What amtool posts for `amtool silence add 'alertname=""'` and `'alertname=~".*"'`.
    let silence = |matcher: Value, starts: std::time::SystemTime, ends: std::time::SystemTime| {
        json!({
            "matchers": [matcher],
            "startsAt": rfc3339(starts),
            "endsAt": rfc3339(ends),
            "createdBy": "relay-amtool-test",
            "comment": "bad",
        })
        .to_string()
    };
    let named = json!({"name": "alertname", "value": "AmtoolX", "isRegex": false, "isEqual": true});
    for (body, want) in [
        (
            silence(
                json!({"name": "alertname", "value": "", "isRegex": false, "isEqual": true}),
                now,
                now + hour,
            ),
            "at least one matcher must not match the empty string",
        ),
        (
            silence(
                json!({"name": "alertname", "value": ".*", "isRegex": true, "isEqual": true}),
                now,
                now + hour,
            ),
            "at least one matcher must not match the empty string",
        ),
        (
            silence(named.clone(), now + hour, now + hour / 2),
            "start time must be before end time",
        ),
    ] {
        let (status, answer) = relay.post("/api/v2/silences", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            message(&answer).contains(want),
            "{body}: {answer} lacks {want:?}"
        );
    }

    let unknown = "00000000-0000-4000-8000-000000000000";
    let resp = http()
        .delete(relay.url(&format!("/api/v2/silence/{unknown}")))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(resp.status().as_u16(), 404);
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(
        message(&answer).contains("not found") && message(&answer).contains(unknown),
        "{answer}"
    );

    // amtool itself: refused, exit non-zero.
    let url = relay.url("");
    for m in [r#"alertname="""#, r#"alertname=~".*""#] {
        let out = amtool(
            &url,
            &[
                "silence",
                "add",
                m,
                "--author=t",
                "--comment=bad",
                "--duration=1h",
            ],
        )
        .await;
        assert!(
            !out.status.success(),
            "amtool silence add {m} was accepted: {}",
            text(&out.stdout)
        );
    }
    let out = amtool(&url, &["silence", "expire", unknown]).await;
    assert!(
        !out.status.success(),
        "expiring an unknown silence succeeded"
    );

    assert_eq!(
        relay.get("/api/v2/silences").await,
        json!([]),
        "nothing stored"
    );
    relay.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amtool_reads_the_status() {
    tests::init_logs();
    let hook = StandIn::start().await;
    let relay = RunningRelay::start(&hook_config(&hook)).await;
    let url = relay.url("");

    let status = relay.get("/api/v2/status").await;
    assert_eq!(status["cluster"]["status"], "disabled", "{status}");
    let original = status["config"]["original"]
        .as_str()
        .expect("config.original is a string");
    assert!(original.contains("hook"), "{original}");
    for f in [
        "version",
        "revision",
        "branch",
        "buildUser",
        "buildDate",
        "goVersion",
    ] {
        assert!(
            status["versionInfo"][f].is_string(),
            "versionInfo.{f}: {status}"
        );
    }
    let uptime = status["uptime"].as_str().unwrap_or_default();
    assert!(
        alerting::silence::parse_rfc3339_ms(uptime).is_ok(),
        "uptime {uptime:?} is not RFC 3339"
    );

    // With amtool's version check on, as users run it: it reads /api/v2/status too.
    for args in [
        &["config", "show"][..],
        &["cluster", "show"][..],
        &["config", "routes", "show"][..],
    ] {
        let out = amtool_with(&url, &[], args).await;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success(),
            "amtool {args:?} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        );
        assert!(
            !stdout.contains("hook-secret-path") && !stderr.contains("hook-secret-path"),
            "amtool {args:?} shows the webhook URL: {stdout}"
        );
        if args == ["config", "routes", "show"] {
            assert!(stdout.contains("receiver: hook"), "{stdout}");
        } else if args[0] == "config" {
            assert!(stdout.contains("name: hook"), "{stdout}");
        } else {
            assert!(stdout.contains("disabled"), "{stdout}");
        }
    }
    relay.stop().await.expect("stop");
}
