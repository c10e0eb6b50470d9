//! The exporter's maintenance API against a real cluster: the token, 202 and an operation
//! to follow, one operation at a time per cluster, the guards of ctl, and an audit line
//! for every request, allowed or refused, in the file and in `GET /api/v1/audit`.

use std::time::Duration;

use tests::{EtcdCluster, RunningExporter};

const TOKEN: &str = "maintenance-token-0123456789";

struct Api {
    exp: RunningExporter,
    http: reqwest::Client,
}

impl Api {
    async fn post(&self, path: &str, token: Option<&str>, body: &str) -> (u16, serde_json::Value) {
        let mut req = self
            .http
            .post(self.exp.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("POST");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let resp = self
            .http
            .get(self.exp.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Waits for operation `id` to finish; its final state.
    async fn finished(&self, id: &str) -> serde_json::Value {
        tests::wait_for(
            "the operation to finish",
            Duration::from_secs(60),
            || async {
                let (code, op) = self
                    .get(&format!("/api/v1/maintenance/operations/{id}"))
                    .await;
                assert_eq!(code, 200, "{op}");
                (op["state"] != "running").then_some(op)
            },
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_needs_its_token_runs_one_at_a_time_and_audits_everything() {
    let cluster = EtcdCluster::start(3).await;
    // Some history, so that the defragmentation has something to do.
    let mut c = cluster.client(0).await;
    for i in 0..2000 {
        c.put(format!("/frag/{i}"), vec![b'x'; 1024], None)
            .await
            .expect("put");
    }
    c.delete(
        "/frag/",
        Some(etcd_client::DeleteOptions::new().with_prefix()),
    )
    .await
    .expect("delete");
    let dir = tempfile::tempdir().expect("dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("token");
    let audit = dir.path().join("audit.jsonl");
    let snapshots = dir.path().join("snapshots");
    std::fs::create_dir(&snapshots).expect("snapshot dir");
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let exp = RunningExporter::for_cluster(
        &cluster,
        "1s",
        &[
            "--maintenance-token-file",
            &path(&token_file),
            "--audit-log",
            &path(&audit),
            "--snapshot-dir",
            &path(&snapshots),
        ],
    )
    .await;
    exp.wait_cycles(1).await;
    let api = Api {
        exp,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .expect("client"),
    };

    // No token, a wrong token: 401, audited.
    let (code, body) = api.post("/api/v1/maintenance/compact", None, "").await;
    assert_eq!(code, 401, "{body}");
    let (code, _) = api
        .post(
            "/api/v1/maintenance/compact",
            Some("wrong-token-wrong-token"),
            "",
        )
        .await;
    assert_eq!(code, 401);
    // Bad input: 4xx naming it.
    let (code, body) = api
        .post(
            "/api/v1/maintenance/compact",
            Some(TOKEN),
            r#"{"retian": 1}"#,
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("retian")),
        "{body}"
    );
    let (code, body) = api
        .post(
            "/api/v1/maintenance/defrag",
            Some(TOKEN),
            r#"{"if": "dbSize >"}"#,
        )
        .await;
    assert_eq!(code, 400, "{body}");
    let (code, _) = api
        .post("/api/v1/maintenance/reboot", Some(TOKEN), "")
        .await;
    assert_eq!(code, 404);

    // A rolling defragmentation: 202, then a second operation on the cluster is 409.
    let (code, started) = api
        .post("/api/v1/maintenance/defrag", Some(TOKEN), "")
        .await;
    assert_eq!(code, 202, "{started}");
    let id = started["id"].as_str().expect("id").to_owned();
    let (code, busy) = api
        .post("/api/v1/maintenance/compact", Some(TOKEN), "")
        .await;
    assert_eq!(code, 409, "{busy}");
    assert!(
        busy["error"].as_str().is_some_and(|e| e.contains(&id)),
        "{busy}"
    );
    let done = api.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["operation"], "defrag");

    // Compaction and a snapshot, one after the other.
    let (code, started) = api
        .post(
            "/api/v1/maintenance/compact",
            Some(TOKEN),
            r#"{"retain": 10}"#,
        )
        .await;
    assert_eq!(code, 202, "{started}");
    let done = api.finished(started["id"].as_str().expect("id")).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(done["result"]["revision"].as_i64().is_some(), "{done}");
    let (code, started) = api
        .post("/api/v1/maintenance/snapshot", Some(TOKEN), "")
        .await;
    assert_eq!(code, 202, "{started}");
    let done = api.finished(started["id"].as_str().expect("id")).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let file = done["result"]["file"].as_str().expect("file").to_owned();
    assert!(file.starts_with(&path(&snapshots)), "{file}");
    assert!(
        std::fs::metadata(&file).is_ok_and(|m| m.len() > 0),
        "{file}"
    );

    // No alarm to disarm: the guard lets it through and nothing is disarmed.
    let (code, started) = api
        .post("/api/v1/maintenance/alarms/disarm", Some(TOKEN), "")
        .await;
    assert_eq!(code, 202, "{started}");
    let done = api.finished(started["id"].as_str().expect("id")).await;
    assert_eq!(done["state"], "succeeded", "{done}");

    // The audit: every request, allowed or refused, in the file and the API.
    let (code, listed) = api.get("/api/v1/audit").await;
    assert_eq!(code, 200);
    let entries = listed["entries"].as_array().expect("entries").clone();
    let text = std::fs::read_to_string(&audit).expect("audit log");
    assert!(
        !text.contains(TOKEN),
        "the token never reaches the audit log"
    );
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines, entries, "the file and the API agree");
    let outcomes: Vec<(String, String)> = lines
        .iter()
        .map(|e| {
            (
                e["operation"].as_str().unwrap_or_default().to_owned(),
                format!(
                    "{}{}",
                    e["outcome"].as_str().unwrap_or_default(),
                    e["status"]
                        .as_u64()
                        .map(|s| format!(" {s}"))
                        .unwrap_or_default()
                ),
            )
        })
        .collect();
    let expect = |op: &str, outcome: &str| {
        assert!(
            outcomes.iter().any(|(o, r)| o == op && r == outcome),
            "no {op} {outcome} in {outcomes:?}"
        );
    };
    expect("compact", "refused 401");
    expect("compact", "refused 400");
    expect("reboot", "refused 404");
    expect("defrag", "accepted 202");
    expect("compact", "refused 409");
    expect("defrag", "succeeded");
    expect("snapshot", "succeeded");
    assert_eq!(outcomes.len(), 14, "{outcomes:?}");
    for e in &lines {
        assert!(
            e["caller"]
                .as_str()
                .is_some_and(|c| c.starts_with("127.0.0.1:")),
            "{e}"
        );
        assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
    }
    let anonymous = &lines[0];
    assert!(anonymous["token"].is_null(), "{anonymous}");
    assert!(
        lines[1]["token"]
            .as_str()
            .is_some_and(|t| t.starts_with("sha256:")),
        "a wrong token is named by its fingerprint: {}",
        lines[1]
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&audit).expect("meta").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn without_its_token_file_the_api_is_off_and_its_flags_are_refused() {
    let cluster = EtcdCluster::start(1).await;
    let exp = RunningExporter::for_cluster(&cluster, "1s", &[]).await;
    let (code, body) = exp.get("/api/v1/audit").await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("--maintenance-token-file"), "{body}");
    use clap::Parser as _;
    let dir = tempfile::tempdir().expect("dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("token");
    let args = exporter::Args::try_parse_from([
        "etcd-monitor",
        "--maintenance-token-file",
        token_file.to_str().expect("utf8"),
    ])
    .expect("flags");
    let err = exporter::Config::from_args(args)
        .expect_err("no audit log")
        .to_string();
    assert!(err.starts_with("--audit-log: "), "{err}");
    let args =
        exporter::Args::try_parse_from(["etcd-monitor", "--audit-log", "/tmp/x"]).expect("flags");
    let err = exporter::Config::from_args(args)
        .expect_err("API off")
        .to_string();
    assert!(err.contains("off without it"), "{err}");
}
