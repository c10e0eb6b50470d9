//! The `etcd-monitor` binary's handling of bad configuration: exit code 2 and one line
//! naming the problem.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the binary; a configuration error must end it at once, so one that is still
/// running after 10 s is killed and fails the test.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_etcd-monitor"));
    cmd.args(args).env_clear();
    let f = common::process::run_with_deadline(cmd, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{args:?}: the bad input was accepted: {e}"));
    (f.code, f.stderr)
}

fn assert_config_error(args: &[&str], needles: &[&str]) {
    let (code, stderr) = run(args);
    assert_eq!(code, Some(2), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected for {args:?}: {stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "{args:?}: {:?} lacks {n:?}", lines[0]);
    }
}

#[test]
fn malformed_endpoints() {
    assert_config_error(
        &["--endpoints", "http://127.0.0.1"],
        &["--endpoints", "no port"],
    );
    assert_config_error(&["--endpoints", "ftp://x:1"], &["--endpoints", "scheme"]);
    assert_config_error(&["--endpoints", "a:1,,b:2"], &["--endpoints", "empty"]);
}

#[test]
fn missing_certificate_file() {
    assert_config_error(
        &["--cacert", "/nonexistent/ca.pem"],
        &["--cacert", "/nonexistent/ca.pem", "No such file"],
    );
}

#[test]
fn certificate_file_that_is_not_pem() {
    let dir = tempfile::tempdir().expect("dir");
    let p = dir.path().join("ca.pem");
    std::fs::write(&p, "hello").expect("write");
    assert_config_error(&["--cacert", p.to_str().expect("utf8")], &["--cacert"]);
}

#[test]
fn unreadable_password_file() {
    let dir = tempfile::tempdir().expect("dir");
    // A directory cannot be read as a file, even by root.
    let p = dir.path().to_str().expect("utf8");
    assert_config_error(
        &["--user", "root", "--password-file", p],
        &["--password-file", p],
    );
    assert_config_error(
        &["--user", "root", "--password-file", "/nonexistent/pw"],
        &["--password-file", "/nonexistent/pw"],
    );
}

#[test]
fn bad_interval_and_listen() {
    assert_config_error(&["--interval", "100ms"], &["--interval", "at least 1s"]);
    assert_config_error(&["--listen", "nowhere"], &["--listen"]);
    // Usage errors from the flag parser are one line too.
    assert_config_error(&["--interval", "soon"], &["--interval", "soon"]);
    assert_config_error(&["--no-such-flag"], &["--no-such-flag"]);
}

#[test]
fn bad_server_tls_and_token_files() {
    let dir = tempfile::tempdir().expect("dir");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").expect("write");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").expect("write");
    let junk = junk.to_str().expect("utf8");
    let empty = empty.to_str().expect("utf8");
    assert_config_error(
        &["--tls-cert-file", junk],
        &["--tls-key-file", "is required with --tls-cert-file"],
    );
    assert_config_error(
        &["--tls-key-file", junk],
        &["--tls-cert-file", "is required with --tls-key-file"],
    );
    assert_config_error(
        &["--tls-cert-file", junk, "--tls-key-file", junk],
        &["--tls-cert-file", junk],
    );
    assert_config_error(
        &[
            "--tls-cert-file",
            "/nonexistent/c.pem",
            "--tls-key-file",
            junk,
        ],
        &["--tls-cert-file", "/nonexistent/c.pem"],
    );
    assert_config_error(
        &["--auth-token-file", empty],
        &["--auth-token-file", "empty"],
    );
    assert_config_error(
        &["--auth-token-file", "/nonexistent/token"],
        &["--auth-token-file", "/nonexistent/token"],
    );
    assert_config_error(&["--monitor-cacert", junk], &["--monitor-cacert", junk]);
    assert_config_error(
        &["--monitor-token-file", empty],
        &["--monitor-token-file", "empty"],
    );
}

#[test]
fn environment_variables_are_read() {
    let out = Command::new(env!("CARGO_BIN_EXE_etcd-monitor"))
        .env_clear()
        .env("ETCD_MONITOR_ENDPOINTS", "gopher://x:1")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--endpoints"));
}

#[test]
fn help_explains_every_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_etcd-monitor"))
        .arg("--help")
        .output()
        .expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--endpoints",
        "--cacert",
        "--cert",
        "--key",
        "--insecure-skip-tls-verify",
        "--user",
        "--password-file",
        "--dial-timeout",
        "--command-timeout",
        "--listen",
        "--interval",
        "--log-format",
        "--tls-cert-file",
        "--tls-key-file",
        "--auth-token-file",
        "--monitor-cacert",
        "--monitor-token-file",
        "ETCD_MONITOR_ENDPOINTS",
        "ETCD_MONITOR_TLS_CERT_FILE",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn health_cycle(port: u16) -> Option<u64> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let json = body.split("\r\n\r\n").nth(1)?;
    serde_json::from_str::<serde_json::Value>(json).ok()?["cycle"].as_u64()
}

/// A closed stderr (its reader gone) must neither kill the collector, which logs, nor
/// keep SIGTERM from shutting the exporter down.
#[test]
fn sigterm_stops_it_even_with_stderr_closed() {
    let port = free_port();
    let dead = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_etcd-monitor"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--endpoints",
            &format!("127.0.0.1:{dead}"),
            "--interval",
            "1s",
        ])
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stderr.take());
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        if let Some(c) = health_cycle(port).filter(|&c| c >= 1) {
            break c;
        }
        assert!(Instant::now() < deadline, "exporter never answered /health");
        std::thread::sleep(Duration::from_millis(100));
    };
    // The collector has logged "member is down" into the closed pipe and goes on.
    std::thread::sleep(Duration::from_millis(2500));
    let later = health_cycle(port).expect("still serving");
    assert!(later > first, "collector stopped at cycle {first}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert_eq!(status.code(), Some(0));
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("SIGTERM did not stop the exporter");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_bad_relay_url_is_refused_without_showing_its_password() {
    for url in [
        "ftp://monitor:s3cret@relay:9095",
        "http://monitor:s3cret@[::1",
    ] {
        let (code, stderr) = run(&["--relay-url", url]);
        assert_eq!(code, Some(2), "{url}: {stderr}");
        assert!(stderr.contains("--relay-url"), "{url}: {stderr}");
        assert!(
            !stderr.contains("s3cret"),
            "{url}: the password shown: {stderr}"
        );
    }
}
