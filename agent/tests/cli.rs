//! The `etcd-monitor-agent` binary: bad configuration exits 2 naming the problem, and
//! `disk-check` agrees with fio on the same directory.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_etcd-monitor-agent");

/// Runs the binary to completion (killed and failed after `limit`).
fn run(args: &[&str], limit: Duration) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_clear();
    let f = common::process::run_with_deadline(cmd, limit)
        .unwrap_or_else(|e| panic!("etcd-monitor-agent {args:?}: {e}"));
    (f.code, f.stdout, f.stderr)
}

fn assert_config_error(args: &[&str], needles: &[&str]) {
    let (code, _, stderr) = run(args, Duration::from_secs(10));
    assert_eq!(code, Some(2), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected for {args:?}: {stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "{args:?}: {:?} lacks {n:?}", lines[0]);
    }
}

#[test]
fn missing_data_dir() {
    assert_config_error(&[], &["--data-dir", "required"]);
    assert_config_error(
        &["--data-dir", "/nonexistent/etcd"],
        &["--data-dir", "/nonexistent/etcd"],
    );
}

#[test]
fn probe_dir_on_another_filesystem_or_inside_the_member_dir() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path().to_str().expect("utf8");
    // /dev/shm is tmpfs, never the filesystem of a temp dir under /tmp on disk.
    let other = format!("/dev/shm/etcd-monitor-test-{}", std::process::id());
    let (tmp_dev, shm_dev) = (
        nix_dev(dir.path()),
        nix_dev(std::path::Path::new("/dev/shm")),
    );
    if tmp_dev != shm_dev {
        assert_config_error(
            &["--data-dir", d, "--fsync-probe-dir", &other],
            &["--fsync-probe-dir", &other, "not on the filesystem"],
        );
    }
    std::fs::create_dir_all(dir.path().join("member")).expect("mkdir");
    let inside = format!("{d}/member/probe");
    assert_config_error(
        &["--data-dir", d, "--fsync-probe-dir", &inside],
        &["--fsync-probe-dir", "inside etcd's member directory"],
    );
}

fn nix_dev(p: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).map(|m| m.dev()).unwrap_or(0)
}

#[test]
fn bad_flags() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path().to_str().expect("utf8");
    assert_config_error(&["--data-dir", d, "--listen", "here"], &["--listen"]);
    assert_config_error(&["--data-dir", d, "--etcd-pid=-3"], &["--etcd-pid"]);
    assert_config_error(
        &["--data-dir", d, "--interval", "soon"],
        &["--interval", "soon"],
    );
    assert_config_error(&["--data-dir", d, "--etcd-pid", "-3"], &["-3"]);
}

#[test]
fn disk_check_bad_dir_exits_2() {
    let (code, _, err) = run(
        &["disk-check", "--dir", "/nonexistent/x"],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--dir") && err.contains("/nonexistent/x"),
        "{err}"
    );
}

/// Ctrl-C (or SIGTERM) in the middle of a check stops it, says so and removes the file.
#[test]
fn disk_check_interrupted_removes_its_file() {
    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        let dir = tempfile::tempdir().expect("dir");
        let mut child = Command::new(BIN)
            .args(["disk-check", "--dir"])
            .arg(dir.path())
            .args(["--size", "200m"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(30);
        while agent::disk_check::leftovers(dir.path()) == 0 {
            assert!(Instant::now() < deadline, "the test file never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Let it write a little, then interrupt.
        std::thread::sleep(Duration::from_millis(300));
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        nix::sys::signal::kill(pid, signal).expect("signal");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            assert!(Instant::now() < deadline, "{signal} did not stop it");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err)
            .expect("read");
        assert_eq!(status.code(), Some(130), "{signal}: {err}");
        assert!(err.contains("interrupted by"), "{err}");
        assert_eq!(
            agent::disk_check::leftovers(dir.path()),
            0,
            "{signal} left the test file"
        );
    }
}

#[test]
fn disk_check_fails_a_limit_it_cannot_meet() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path().to_str().expect("utf8");
    let (code, out, err) = run(
        &[
            "disk-check",
            "--dir",
            d,
            "--size",
            "230k",
            "--max-p99",
            "1ns",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("FAIL"), "{out}");
    assert_eq!(agent::disk_check::leftovers(dir.path()), 0);
}

/// Every disk-check flag from its `ETCD_MONITOR_AGENT_DISK_CHECK_*` variable; a flag
/// given wins over its variable.
#[test]
fn disk_check_reads_its_flags_from_the_environment() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path().to_str().expect("utf8");
    let mut cmd = Command::new(BIN);
    cmd.args(["disk-check", "--block-size", "1000"])
        .env_clear()
        .env("ETCD_MONITOR_AGENT_DISK_CHECK_DIR", d)
        .env("ETCD_MONITOR_AGENT_DISK_CHECK_SIZE", "50000")
        .env("ETCD_MONITOR_AGENT_DISK_CHECK_BLOCK_SIZE", "4k")
        .env("ETCD_MONITOR_AGENT_DISK_CHECK_MAX_P99", "1ns")
        .env("ETCD_MONITOR_AGENT_DISK_CHECK_OUTPUT", "json");
    let f = common::process::run_with_deadline(cmd, Duration::from_secs(60)).expect("ran");
    assert_eq!(f.code, Some(1), "1ns cannot pass: {}{}", f.stdout, f.stderr);
    let r: serde_json::Value = serde_json::from_str(&f.stdout).expect("JSON from the variable");
    assert_eq!(r["dir"], d);
    assert_eq!(
        (r["size_bytes"].as_u64(), r["writes"].as_u64()),
        (Some(50_000), Some(50))
    );
    assert_eq!(r["block_size_bytes"], 1000, "the flag wins");
    assert!(
        r["max_p99_ms"]
            .as_f64()
            .is_some_and(|m| m > 0.0 && m < 1e-3),
        "{r}"
    );
    assert_eq!(r["pass"], false);
    assert_eq!(agent::disk_check::leftovers(dir.path()), 0);
}

fn fio_p99_ms(dir: &str) -> f64 {
    let out = Command::new("fio")
        .args([
            "--name=etcd-disk-check",
            &format!("--directory={dir}"),
            "--rw=write",
            "--ioengine=sync",
            "--fdatasync=1",
            "--size=22m",
            "--bs=2300",
            "--output-format=json",
        ])
        .output()
        .expect("fio (Debian package fio) must be installed");
    assert!(
        out.status.success(),
        "fio: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("fio JSON");
    let ns = v["jobs"][0]["sync"]["lat_ns"]["percentile"]["99.000000"]
        .as_f64()
        .expect("fio's fdatasync p99");
    ns / 1e6
}

#[test]
fn disk_check_agrees_with_fio() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path().to_str().expect("utf8");
    // On tmpfs fdatasync is a no-op and the comparison would prove nothing.
    let fs = nix::sys::statfs::statfs(dir.path()).expect("statfs");
    assert_ne!(
        fs.filesystem_type(),
        nix::sys::statfs::TMPFS_MAGIC,
        "the temp dir {d} is on tmpfs; set TMPDIR to a directory on a real disk"
    );
    // The machines are shared and noisy: up to three paired runs, one agreeing pair
    // within a factor of two is the proof; every pair is printed.
    let mut pairs = Vec::new();
    for _ in 0..3 {
        let (code, out, err) = run(
            &[
                "disk-check",
                "--dir",
                d,
                "--output",
                "json",
                "--max-p99",
                "1s",
            ],
            Duration::from_secs(300),
        );
        assert_eq!(code, Some(0), "{out}{err}");
        let report: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
        assert_eq!(report["writes"], 22 * 1024 * 1024 / 2300);
        let ours = report["fdatasync"]["p99_ms"].as_f64().expect("p99");
        let fio = fio_p99_ms(d);
        eprintln!("disk-check p99 {ours:.3} ms, fio p99 {fio:.3} ms");
        pairs.push((ours, fio));
        if ours <= 2.0 * fio && fio <= 2.0 * ours {
            assert_eq!(agent::disk_check::leftovers(dir.path()), 0);
            return;
        }
    }
    panic!("disk-check and fio disagree by more than a factor of two: {pairs:?}");
}
