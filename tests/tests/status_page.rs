//! The status page in a real browser: headless Chromium renders `/` of an exporter that
//! watches a real 3-member cluster with agents, after a few cycles and a leader change.
//! The test checks the rendered DOM (verdict, members, plots with data, the fsync probe,
//! the leader change), that the page works under the strict Content-Security-Policy it is
//! designed for, and that a browser gets in with `--auth-token-file` by sending the token
//! as the Basic password. It writes screenshots (1280 px wide and a narrow one) to the
//! target dir and prints their paths.
//!
//! Chromium is Debian's `chromium` (scripts/setup.sh installs it). Without it the test
//! fails under CI (`CI=true`) and is skipped with a message otherwise.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tests::{wait_for, EtcdCluster, RunningAgent, RunningExporter};

const TOKEN: &str = "page-token-0123456789";
/// What the page must work under (no scripts, no external anything).
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
    .find(|p| p.is_file())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tests::prometheus::repo_root().join("target"))
}

/// One headless Chromium run with its own profile: `args` then `url`; stdout and stderr.
async fn chromium(bin: &Path, args: &[&str], url: &str) -> (String, String) {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--hide-scrollbars",
        "--proxy-server=direct://",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .arg(url)
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("chromium {args:?} {url} took over 90 s"))
        .expect("chromium runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "chromium {args:?} {url} failed ({}): {stderr}",
        out.status
    );
    (stdout, stderr)
}

async fn screenshot(bin: &Path, url: &str, size: &str, file: &str) -> PathBuf {
    let path = target_dir().join(file);
    let _ = std::fs::remove_file(&path);
    chromium(
        bin,
        &[
            &format!("--screenshot={}", path.display()),
            &format!("--window-size={size}"),
        ],
        url,
    )
    .await;
    let meta = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("no screenshot at {}: {e}", path.display()));
    assert!(meta.len() > 10_000, "{} is nearly empty", path.display());
    println!("status page screenshot ({size}): {}", path.display());
    path
}

/// Serves `html` at `/` with the strict CSP header, on 127.0.0.1.
async fn serve_with_csp(html: String) -> (String, tokio_util::sync::CancellationToken) {
    use axum::http::header;
    let router = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let html = html.clone();
            async move {
                (
                    [
                        (header::CONTENT_SECURITY_POLICY, CSP),
                        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    ],
                    html,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move { common::http::serve(listener, router, token).await });
    (url, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_in_a_real_browser() {
    let Some(bin) = find_chromium() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("chromium is required under CI (Debian: apt-get install chromium; scripts/setup.sh)");
        }
        eprintln!("SKIPPED: chromium not found on PATH (Debian: apt-get install chromium)");
        return;
    };
    tests::init_logs();
    let cluster = EtcdCluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let mut agents = Vec::new();
    let mut flags = tests::exporter::cluster_flags(&cluster);
    flags.extend(["--interval".to_owned(), "1s".to_owned()]);
    for i in 0..3 {
        let a = RunningAgent::for_member(&cluster, i, "1s", "1s", &[]).await;
        flags.push("--agent".to_owned());
        flags.push(format!("{}={}", cluster.members[i].name, a.url()));
        agents.push(a);
    }
    let exp = RunningExporter::start(&flags).await;
    let dir = tempfile::tempdir().expect("dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token");
    let mut secured_flags = flags.clone();
    secured_flags.extend([
        "--auth-token-file".to_owned(),
        token_file.display().to_string(),
    ]);
    let secured = RunningExporter::start(&secured_flags).await;

    // Some load, and a leader change for the timeline.
    let mut client = cluster.client(leader).await;
    for i in 0..200 {
        client
            .put(format!("/page/{i}"), vec![b'x'; 2048], None)
            .await
            .expect("put");
    }
    exp.wait_cycles(3).await;
    let status = client.status().await.expect("status");
    let leader_id = status.leader();
    let members = client.member_list().await.expect("member list");
    let target = members
        .members()
        .iter()
        .find(|m| m.id() != leader_id)
        .map(|m| m.id())
        .expect("a follower");
    client.move_leader(target).await.expect("move leader");
    wait_for(
        "the exporter to see the leader change",
        Duration::from_secs(30),
        || async {
            let h = exp.json("/api/v1/cluster/leader/history").await;
            (h["changes_total"].as_u64() >= Some(1)).then_some(())
        },
    )
    .await;
    // Every agent's fsync probe has run, and the plots have some minutes... or seconds.
    wait_for(
        "the agents' fsync probes in the members view",
        Duration::from_secs(60),
        || async {
            let m = exp.json("/api/v1/cluster/members").await;
            let ok = m["members"].as_array().is_some_and(|ms| {
                ms.len() == 3
                    && ms
                        .iter()
                        .all(|x| x["agent"]["host"]["fsync"]["probes"].as_u64() >= Some(2))
            });
            ok.then_some(())
        },
    )
    .await;
    for i in 0..100 {
        client
            .put(format!("/page/more/{i}"), vec![b'y'; 4096], None)
            .await
            .expect("put");
    }
    exp.wait_cycles(15).await;

    // The rendered DOM.
    let url = exp.url("/");
    let (dom, _) = chromium(&bin, &["--dump-dom"], &url).await;
    assert!(dom.contains("Healthy</h1>"), "verdict: {dom}");
    for m in &cluster.members {
        assert!(
            dom.contains(&format!(r#"<div class="name">{}</div>"#, m.name)),
            "member {}",
            m.name
        );
    }
    assert!(dom.contains("<b>leader</b>"));
    assert_eq!(
        dom.matches("<svg").count(),
        4,
        "three plots and the timeline"
    );
    assert!(
        dom.matches(r#"<path class="series" d="M"#).count() >= 3,
        "every plot draws data: {dom}"
    );
    assert!(!dom.contains("no data yet"), "{dom}");
    assert!(dom.contains("Probe latency"));
    assert!(dom.contains("read p99 <b>"));
    assert!(dom.contains(" probes</div>"), "the fsync probe: {dom}");
    assert!(dom.contains("used"), "DB size against the quota");
    assert!(dom.contains(" → <b>"), "the leader change: {dom}");
    assert!(dom.contains(r#"http-equiv="refresh" content="5""#));

    // The same page under the strict CSP: nothing is refused.
    let (_, html) = exp.get("/").await;
    let (csp_url, stop) = serve_with_csp(html).await;
    let (csp_dom, log) = chromium(&bin, &["--dump-dom"], &csp_url).await;
    stop.cancel();
    assert!(csp_dom.contains("Healthy</h1>"));
    assert!(
        !log.contains("Content Security Policy") && !log.contains("Refused to"),
        "the page broke the CSP: {log}"
    );

    let wide = screenshot(&bin, &url, "1280,2000", "status-page.png").await;
    let narrow = screenshot(&bin, &url, "420,3000", "status-page-narrow.png").await;
    assert_ne!(wide, narrow);

    // With --auth-token-file: the browser gets a 401 with a Basic challenge, and the page
    // with the token as the Basic password.
    let base = secured.url("/");
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(&base)
        .send()
        .await
        .expect("GET /");
    assert_eq!(resp.status(), 401);
    assert!(resp
        .headers()
        .get_all("www-authenticate")
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.starts_with("Basic realm="))));
    let (denied, _) = chromium(&bin, &["--dump-dom"], &base).await;
    assert!(
        !denied.contains("<svg"),
        "no page without the token: {denied}"
    );
    let with_login = base.replacen("http://", &format!("http://operator:{TOKEN}@"), 1);
    let (dom, _) = chromium(&bin, &["--dump-dom"], &with_login).await;
    assert!(
        dom.contains("Healthy</h1>"),
        "with Basic credentials: {dom}"
    );
    assert!(dom.contains("<svg"));
    drop(agents);
}
