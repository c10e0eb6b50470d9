//! etcd-monitor-ctl's command line against real etcd clusters: status, keys, watch, leases,
//! cas, snapshots checked by etcd's own etcdctl, the member-remove guard with a member
//! down, and NOSPACE recovery with the disarm guard.

use std::process::Command;
use std::time::Duration;

use common::process::{run_with_deadline, Finished};
use tests::{ClusterOptions, EtcdCluster};

const LIMIT: Duration = Duration::from_secs(30);

/// Runs etcd-monitor-ctl's command line in-process (on its own thread, with its own
/// runtime, as the binary's three-line `main` does) against `endpoints` with `args`.
/// A cargo test of another package has no `CARGO_BIN_EXE_` for it, and building it here
/// could run a stale binary.
async fn ctl(endpoints: &str, args: &[&str]) -> Finished {
    let mut argv: Vec<String> = vec![
        "etcd-monitor-ctl".into(),
        "--endpoints".into(),
        endpoints.into(),
        "--dial-timeout".into(),
        "1s".into(),
        "--command-timeout".into(),
        "3s".into(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    let what = args.join(" ");
    let run = tokio::task::spawn_blocking(move || {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = ctl::cli::main_with(argv, &mut out, &mut err);
        Finished {
            code: Some(i32::from(code)),
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
        }
    });
    tokio::time::timeout(LIMIT, run)
        .await
        .unwrap_or_else(|_| panic!("ctl {what} did not finish within {LIMIT:?}"))
        .expect("join")
}

/// [`ctl`], expecting exit code `code`.
async fn ctl_ok(endpoints: &str, args: &[&str], code: i32) -> String {
    let f = ctl(endpoints, args).await;
    assert_eq!(
        f.code,
        Some(code),
        "ctl {args:?}\nstdout: {}\nstderr: {}",
        f.stdout,
        f.stderr
    );
    f.stdout
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_keys_watch_leases_cas_and_snapshot() {
    tests::init_logs();
    let cluster = EtcdCluster::start(3).await;
    let eps = cluster.endpoints();
    let eps = eps.as_str();

    // status: a table for people, JSON for machines.
    let table = ctl_ok(eps, &["status"], 0).await;
    assert!(table.starts_with("NAME"), "{table}");
    for m in ["m1", "m2", "m3"] {
        assert!(table.contains(m), "{table}");
    }
    assert!(table.contains("alarms: none"), "{table}");
    assert!(table.trim_end().ends_with("healthy"), "{table}");
    let status = json(&ctl_ok(eps, &["-o", "json", "status"], 0).await);
    let members = status["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{status}");
    assert_eq!(
        members
            .iter()
            .filter(|m| m["is_leader"] == serde_json::json!(true))
            .count(),
        1,
        "{status}"
    );
    for m in members {
        assert!(m["raft_index"].as_u64().unwrap_or(0) > 0, "{m}");
        assert!(m["db_size_bytes"].as_i64().unwrap_or(0) > 0, "{m}");
        // Default quota, 2 GiB, scraped from /metrics.
        assert_eq!(m["quota_bytes"], serde_json::json!(2u64 << 30), "{m}");
        assert!(
            m["version"].as_str().is_some_and(|v| v.starts_with('3')),
            "{m}"
        );
    }
    assert_eq!(status["verdict"], "healthy");
    assert_eq!(status["quorum"], 2);

    // get / put / del, with a prefix.
    for (k, v) in [("app/a", "1"), ("app/b", "2"), ("other", "3")] {
        assert_eq!(ctl_ok(eps, &["put", k, v], 0).await, "OK\n");
    }
    assert_eq!(
        ctl_ok(eps, &["get", "app/", "--prefix"], 0).await,
        "app/a\n1\napp/b\n2\n"
    );
    let got = json(&ctl_ok(eps, &["-o", "json", "get", "other"], 0).await);
    assert_eq!(got["kvs"][0]["value"], "3", "{got}");
    assert_eq!(ctl_ok(eps, &["del", "app/", "--prefix"], 0).await, "2\n");
    assert_eq!(ctl_ok(eps, &["get", "app/", "--prefix"], 0).await, "");

    // watch --count: puts go on until the watcher has seen three events.
    let watcher = {
        let eps = eps.to_owned();
        tokio::spawn(async move { ctl(&eps, &["watch", "w/", "--prefix", "--count", "3"]).await })
    };
    let mut c = cluster.client(0).await;
    let mut n = 0;
    while !watcher.is_finished() {
        n += 1;
        c.put(format!("w/{n}"), "x", None).await.expect("put");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(n < 100, "watch did not end");
    }
    let w = watcher.await.expect("watch");
    assert_eq!(w.code, Some(0), "{}", w.stderr);
    let lines: Vec<&str> = w.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", w.stdout);
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("PUT w/") && l.ends_with(" x")),
        "{}",
        w.stdout
    );

    // lease grant (3 s: etcd raises shorter TTLs to 1.5 election timeouts), a key on it, ttl, keep-alive once; then expiry takes the key.
    let granted = json(&ctl_ok(eps, &["-o", "json", "lease", "grant", "3"], 0).await);
    let id = granted["id"].as_str().expect("lease id").to_owned();
    ctl_ok(eps, &["put", "leased", "v", "--lease", &id], 0).await;
    let ttl = ctl_ok(eps, &["lease", "ttl", &id], 0).await;
    assert!(ttl.contains("attached keys(leased)"), "{ttl}");
    let kept = ctl_ok(eps, &["lease", "keep-alive", &id, "--once"], 0).await;
    assert!(kept.contains("keepalived with TTL(3)"), "{kept}");
    tests::wait_for(
        "the leased key to expire",
        Duration::from_secs(15),
        || async {
            let out = ctl(eps, &["get", "leased"]).await;
            (out.code == Some(0) && out.stdout.is_empty()).then_some(())
        },
    )
    .await;
    let gone = ctl_ok(eps, &["lease", "ttl", &id], 0).await;
    assert!(gone.contains("expired"), "{gone}");
    let revoked = ctl(eps, &["lease", "revoke", &id]).await;
    assert_eq!(revoked.code, Some(1), "revoking an expired lease fails");
    assert!(revoked.stderr.contains("lease"), "{}", revoked.stderr);

    // cas: swapped (0), then not swapped (1) with the current value.
    ctl_ok(eps, &["put", "cfg", "old"], 0).await;
    assert_eq!(
        ctl_ok(eps, &["cas", "cfg", "old", "new"], 0).await,
        "swapped\n"
    );
    let not = ctl_ok(eps, &["cas", "cfg", "old", "newer"], 1).await;
    assert!(not.contains("\"new\""), "{not}");
    assert_eq!(ctl_ok(eps, &["get", "cfg"], 0).await, "cfg\nnew\n");

    // defrag --dry-run: the plan, the leader last, nothing done.
    let plan = ctl_ok(eps, &["defrag", "--rolling", "--dry-run"], 0).await;
    assert!(plan.contains("dry run"), "{plan}");

    // member list.
    let list = ctl_ok(eps, &["member", "list"], 0).await;
    assert_eq!(list.lines().count(), 4, "{list}");

    // snapshot save: etcd's own etcdctl accepts the file and reads the same revision,
    // keys and hash that ours prints.
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("snap.db");
    let file_s = file.to_string_lossy().into_owned();
    let saved = json(&ctl_ok(eps, &["-o", "json", "snapshot", "save", &file_s], 0).await);
    assert!(!dir.path().join("snap.db.part").exists());
    let ours = json(&ctl_ok(eps, &["-o", "json", "snapshot", "status", &file_s], 0).await);
    assert_eq!(saved["status"], ours, "{saved}");
    assert_eq!(ours["sha256_trailer"], true);
    let mut etcdctl = Command::new("etcdctl");
    etcdctl
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", &file_s, "-w", "json"]);
    let theirs = tokio::task::spawn_blocking(move || run_with_deadline(etcdctl, LIMIT))
        .await
        .expect("join")
        .expect("etcdctl");
    assert_eq!(theirs.code, Some(0), "{}", theirs.stderr);
    let theirs = json(&theirs.stdout);
    assert_eq!(theirs["revision"], ours["revision"], "{theirs} vs {ours}");
    assert_eq!(theirs["totalKey"], ours["total_key"], "{theirs} vs {ours}");
    assert_eq!(
        theirs["totalSize"], ours["total_size"],
        "{theirs} vs {ours}"
    );
    assert_eq!(theirs["hash"], ours["hash"], "{theirs} vs {ours}");
    let rev = c
        .get("cfg", None)
        .await
        .expect("get")
        .header()
        .map(|h| h.revision())
        .expect("header");
    assert!(
        ours["revision"].as_i64().unwrap_or(0) >= rev - 1,
        "{ours} at {rev}"
    );

    // A damaged snapshot is refused.
    let mut bytes = std::fs::read(&file).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, bytes).expect("write");
    let bad = ctl(eps, &["snapshot", "status", &file_s]).await;
    assert_eq!(bad.code, Some(1));
    assert!(bad.stderr.contains("SHA-256"), "{}", bad.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_remove_refuses_when_a_member_is_down() {
    tests::init_logs();
    let mut cluster = EtcdCluster::start(3).await;
    cluster.kill(2);
    let eps = cluster.endpoints();
    // m3 may have led: wait for the election that follows.
    tests::wait_for("a new leader", Duration::from_secs(30), || async {
        let status = ctl(&eps, &["status"]).await;
        status
            .stdout
            .contains("quorum at risk: down m3")
            .then_some(())
    })
    .await;
    let refused = ctl(&eps, &["member", "remove", "m2"]).await;
    assert_eq!(refused.code, Some(1), "{}", refused.stdout);
    let why = refused.stderr.trim();
    assert_eq!(why.lines().count(), 1, "{why}");
    assert!(
        why.contains(
            "removing m2 would leave 1 healthy voting member(s) of 2, fewer than the quorum of 2"
        ) && why.contains("down: m3")
            && why.contains("--force"),
        "{why}"
    );
    // Nothing was removed.
    let list = ctl_ok(&eps, &["member", "list"], 0).await;
    assert_eq!(list.lines().count(), 4, "{list}");
}

/// A 3-member cluster with a 3 MiB quota.
async fn tiny_quota_cluster() -> EtcdCluster {
    EtcdCluster::start_with(ClusterOptions {
        size: 3,
        quota_backend_bytes: Some(3 * 1024 * 1024),
        ..ClusterOptions::default()
    })
    .await
}

/// Writes 64 KiB values to `keys` keys in turn until etcd refuses with NOSPACE (few keys:
/// the space is mostly history, which compaction frees).
async fn fill_until_nospace(cluster: &EtcdCluster, keys: u64) {
    let mut c = cluster.client(0).await;
    let value = vec![b'x'; 64 * 1024];
    let mut i = 0u64;
    loop {
        i += 1;
        assert!(i < 500, "the quota never filled");
        match c
            .put(format!("fill/{}", i % keys), value.clone(), None)
            .await
        {
            Ok(_) => {}
            Err(e) if e.to_string().contains("database space exceeded") => break,
            Err(e) => panic!("put: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nospace_disarm_refuses_until_compact_and_defrag() {
    tests::init_logs();
    let cluster = tiny_quota_cluster().await;
    let eps = cluster.endpoints();
    let eps = eps.as_str();
    fill_until_nospace(&cluster, 1000).await;
    let alarms = ctl_ok(eps, &["alarm", "list"], 0).await;
    assert!(alarms.contains("alarm:NOSPACE"), "{alarms}");

    // Disarming now would re-trip: refused, with the sizes and the order.
    let refused = ctl(eps, &["alarm", "disarm"]).await;
    assert_eq!(refused.code, Some(1), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("compact, defrag, then disarm") && refused.stderr.contains("MiB"),
        "{}",
        refused.stderr
    );

    // Free the space: delete, compact, defragment every member, then disarm.
    ctl_ok(eps, &["del", "fill/", "--prefix"], 0).await;
    let compacted = ctl_ok(eps, &["compact"], 0).await;
    assert!(
        compacted.starts_with("compacted to revision"),
        "{compacted}"
    );
    for m in 0..3 {
        cluster
            .client(m)
            .await
            .defragment()
            .await
            .expect("defragment");
    }
    let disarmed = ctl_ok(eps, &["alarm", "disarm"], 0).await;
    assert!(disarmed.contains("disarmed NOSPACE"), "{disarmed}");
    assert_eq!(ctl_ok(eps, &["alarm", "list"], 0).await, "no alarms\n");
    assert_eq!(ctl_ok(eps, &["put", "after", "ok"], 0).await, "OK\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_nospace_alone_restores_writes() {
    tests::init_logs();
    let cluster = tiny_quota_cluster().await;
    let eps = cluster.endpoints();
    let eps = eps.as_str();
    // recover-nospace frees history, not data: four keys overwritten fill the quota.
    fill_until_nospace(&cluster, 4).await;
    let plain = ctl(eps, &["defrag", "--rolling"]).await;
    assert_eq!(
        plain.code,
        Some(1),
        "a rolling defrag refuses with NOSPACE raised"
    );
    let r = ctl(eps, &["recover-nospace"]).await;
    assert_eq!(
        r.code,
        Some(0),
        "stdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    assert_eq!(ctl_ok(eps, &["alarm", "list"], 0).await, "no alarms\n");
    assert_eq!(ctl_ok(eps, &["put", "after", "ok"], 0).await, "OK\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_exits_2_naming_the_flag() {
    for (args, flag) in [
        (vec!["put", "k", "v", "--lease", "zz"], "--lease"),
        (vec!["watch", "k", "--count", "0"], "--count"),
        (vec!["-o", "yaml", "status"], "--output"),
        (vec!["compact", "--retain", "ten"], "--retain"),
        (
            vec!["member", "add", "m4", "--peer-urls", "nohost"],
            "--peer-urls",
        ),
        (vec!["lease", "grant", "0"], "TTL"),
        (vec!["defrag", "--rolling", "--if", "dbSize >"], "--if"),
        (
            vec!["defrag", "--rolling", "--agent", "m1=ftp://h:1"],
            "--agent",
        ),
        (
            vec![
                "recover-nospace",
                "--agent",
                "http://127.0.0.1:1",
                "--monitor-token-file",
                "/nonexistent/token",
            ],
            "--monitor-token-file",
        ),
    ] {
        let f = ctl("http://127.0.0.1:1", &args).await;
        assert_eq!(f.code, Some(2), "{args:?}: {}", f.stderr);
        assert!(f.stderr.contains(flag), "{args:?}: {}", f.stderr);
        assert_eq!(f.stderr.trim().lines().count(), 1, "{}", f.stderr);
    }
    let f = ctl("ftp://x:1", &["status"]).await;
    assert_eq!(f.code, Some(2));
    assert!(f.stderr.contains("--endpoints"), "{}", f.stderr);
    // Nobody answering is a failure (1), not bad input.
    let f = ctl("http://127.0.0.1:1", &["get", "k"]).await;
    assert_eq!(f.code, Some(1), "{}", f.stderr);
}

/// A tmpfs of `size` on a fresh temp dir, unmounted on drop (this needs root).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs (this test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// The defragment's free-disk guard with the members' agents (`--agent`): a member whose
/// agent says its data dir's filesystem has less free than its database is refused
/// before anything is done; members without an agent are not checked, and the plan names
/// them; an agent that does not answer stops the run, named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defrag_refuses_a_member_whose_disk_cannot_hold_a_copy() {
    tests::init_logs();
    let cluster = EtcdCluster::start(3).await;
    let eps = cluster.endpoints();
    let eps = eps.as_str();
    let mut c = cluster.client(0).await;
    let value = vec![b'v'; 1024];
    for i in 0..2000 {
        c.put(format!("big/{i}"), value.clone(), None)
            .await
            .expect("put");
    }
    // m1's agent watches a 1 MiB filesystem: less than m1's ~3 MiB database.
    let small = SmallDisk::mount("1m");
    let m1 = &cluster.members[0];
    let tight = tests::RunningAgent::start(&[
        "--member".into(),
        m1.name.clone(),
        "--data-dir".into(),
        small.dir.path().to_string_lossy().into_owned(),
        "--etcd-client-port".into(),
        m1.client_port.to_string(),
        "--interval".into(),
        "1s".into(),
        "--fsync-probe-interval".into(),
        "0".into(),
    ])
    .await;
    let roomy = tests::RunningAgent::for_member(&cluster, 1, "1s", "0", &[]).await;
    for a in [&tight, &roomy] {
        tests::wait_for(
            "the agent's filesystem figures",
            Duration::from_secs(20),
            || async { a.snapshot().await["filesystem"]["avail_bytes"].as_u64() },
        )
        .await;
    }

    let plan = json(
        &ctl_ok(
            eps,
            &[
                "-o",
                "json",
                "defrag",
                "--rolling",
                "--dry-run",
                "--agent",
                &format!("m2={}", roomy.url()),
            ],
            0,
        )
        .await,
    );
    let unchecked = plan["plan"]["notes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str()?.strip_prefix("free disk not checked for "))
        .map(|n| n.split(':').next().unwrap_or_default().to_owned())
        .next()
        .unwrap_or_else(|| panic!("a note names the members not checked: {plan}"));
    let mut unchecked: Vec<&str> = unchecked.split(", ").collect();
    unchecked.sort_unstable();
    assert_eq!(unchecked, ["m1", "m3"], "only m2 was checked: {plan}");

    let before = c.status().await.expect("status").db_size();
    let refused = ctl(
        eps,
        &[
            "defrag",
            "--rolling",
            "--agent",
            &format!("{},m2={}", tight.url(), roomy.url()),
        ],
    )
    .await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("m1") && refused.stderr.contains("free"),
        "the refusal names the member and its free disk: {}",
        refused.stderr
    );
    assert_eq!(
        c.status().await.expect("status").db_size(),
        before,
        "nothing was defragmented"
    );

    let unreachable = format!("m3=http://127.0.0.1:{}", tests::free_port());
    let failed = ctl(eps, &["defrag", "--rolling", "--agent", &unreachable]).await;
    assert_eq!(failed.code, Some(1), "{failed:?}");
    assert!(
        failed.stderr.contains("agent http://127.0.0.1:"),
        "the agent is named: {}",
        failed.stderr
    );
    drop(tight);
    drop(small);
}

/// `member add --learner`, `promote` (refused by etcd while the learner has not caught
/// up: it never started), `remove` of the learner (it holds no vote, so quorum is not at
/// stake), and `compact --retain N`, against a real cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_add_promote_remove_and_compact_retain() {
    tests::init_logs();
    let cluster = EtcdCluster::start(3).await;
    let eps = cluster.endpoints();
    let eps = eps.as_str();
    let peer = format!("http://127.0.0.1:{}", tests::free_port());
    // etcd refuses a member change ("unhealthy cluster") until every member has been
    // connected to the leader for 5 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let added = json(
        &ctl_ok(
            eps,
            &[
                "-o",
                "json",
                "member",
                "add",
                "m4",
                "--peer-urls",
                &peer,
                "--learner",
            ],
            0,
        )
        .await,
    );
    let id = added["member"]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("the new member's ID: {added}"));
    let hex = format!("{id:x}");
    let list = json(&ctl_ok(eps, &["-o", "json", "member", "list"], 0).await);
    let learner = list
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["id"].as_u64() == Some(id))
        .unwrap_or_else(|| panic!("m4 is listed: {list}"));
    assert_eq!(learner["is_learner"], true, "a learner: {learner}");

    let promote = ctl(eps, &["member", "promote", &hex]).await;
    assert_eq!(promote.code, Some(1), "{promote:?}");
    assert!(
        promote.stderr.contains("learner"),
        "etcd's reason is shown: {}",
        promote.stderr
    );
    ctl_ok(eps, &["member", "remove", &hex], 0).await;
    let list = json(&ctl_ok(eps, &["-o", "json", "member", "list"], 0).await);
    let ids: Vec<u64> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_u64())
        .collect();
    assert_eq!(ids.len(), 3, "m4 is gone: {list}");
    assert!(!ids.contains(&id), "m4 is gone: {list}");

    let mut c = cluster.client(0).await;
    for i in 0..20 {
        c.put(format!("r/{i}"), "x", None).await.expect("put");
    }
    let done = json(&ctl_ok(eps, &["-o", "json", "compact", "--retain", "5"], 0).await);
    let (to, current) = (done["revision"].as_i64(), done["current_revision"].as_i64());
    assert!(
        matches!((to, current), (Some(t), Some(c)) if t == c - 5),
        "compacted to the current revision minus 5: {done}"
    );
    let old = c
        .get(
            "r/0",
            Some(etcd_client::GetOptions::new().with_revision(to.unwrap_or(0) - 1)),
        )
        .await;
    assert!(old.is_err(), "revisions before the compaction are gone");
}
