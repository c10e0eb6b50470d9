//! The systemd units (`systemd/`) and the Debian packages (`scripts/package.sh`):
//! - `systemd-analyze verify` accepts every unit (with its binary in place);
//! - `systemd-analyze security --offline=yes` scores each unit's exposure below a limit;
//! - the example environment files (`packaging/*.env`) and the units' `Environment=` only
//!   name `ETCD_MONITOR_*` variables that the binary's `--help` lists, and `relay.env` names
//!   every variable the shipped `alerting/relay.yml` reads;
//! - the agent's unit makes exactly the agent's default probe directory writable;
//! - `scripts/package.sh --dev` builds three .debs holding the binaries, units and config
//!   (`dpkg-deb -c`, `-I`, `-x`), with conffiles, dependencies and maintainer scripts that
//!   create the user and enable nothing.
//!
//! Needs `systemd-analyze` (Debian's `systemd`), `dpkg-deb` and cargo-deb
//! (`cargo install cargo-deb --version 3.8.0 --locked`; `scripts/package.sh` installs it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

/// The three daemons: unit name, binary, example env file, its variable prefix.
const DAEMONS: [(&str, &str, &str, &str); 3] = [
    (
        "etcd-monitor.service",
        "etcd-monitor",
        "exporter.env",
        "ETCD_MONITOR_",
    ),
    (
        "etcd-monitor-agent.service",
        "etcd-monitor-agent",
        "agent.env",
        "ETCD_MONITOR_AGENT_",
    ),
    (
        "etcd-monitor-relay.service",
        "etcd-monitor-relay",
        "relay.env",
        "ETCD_MONITOR_RELAY_",
    ),
];

/// Highest `systemd-analyze security` exposure accepted (0 = locked down, 10 = exposed;
/// systemd 252 calls up to 1.9 "OK"). What stays open is what each daemon's job needs: the
/// network (PrivateNetwork=, IPAddressDeny=, AF_INET/AF_INET6), AF_UNIX for the resolver,
/// the host's root, and ProtectClock='s read access to the RTC: the exporter and the relay
/// score 1.1 with only those. The agent also needs the process tree and non-process /proc
/// files (ProtectProc=, ProcSubset=), /dev nodes to stat (PrivateDevices=), etcd's user
/// namespace (PrivateUsers=), and may not use RemoveIPC= (it would remove etcd's objects):
/// 1.6. The limits are 0.4 above those scores.
const MAX_EXPOSURE: [(&str, f64); 3] = [
    ("etcd-monitor.service", 1.5),
    ("etcd-monitor-agent.service", 2.0),
    ("etcd-monitor-relay.service", 1.5),
];

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace above tests/")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()))
}

/// `systemd-analyze`, or a failure that says how to get it.
fn systemd_analyze() -> Command {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "systemd-analyze is not installed: it comes with Debian's `systemd` package \
         (./scripts/setup.sh installs it)"
    );
    let mut cmd = Command::new("systemd-analyze");
    cmd.stdin(Stdio::null());
    cmd
}

/// The debug binaries of the four executables, built from the current sources once per
/// test process (`cargo build` says where they are; a no-op after `cargo test --workspace`).
fn binaries() -> &'static BTreeMap<String, PathBuf> {
    static BINS: OnceLock<BTreeMap<String, PathBuf>> = OnceLock::new();
    BINS.get_or_init(|| {
        let started = Instant::now();
        let out = run(tests::clean_command(env!("CARGO")).args([
            "build",
            "--locked",
            "-p",
            "exporter",
            "-p",
            "agent",
            "-p",
            "alerting",
            "-p",
            "bench",
            "--bins",
            "--message-format=json",
        ]));
        assert!(
            out.status.success(),
            "cargo build of the binaries failed:\n{}",
            text(&out.stderr)
        );
        let bins: BTreeMap<String, PathBuf> = text(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact")
            .filter_map(|m| {
                let name = m["target"]["name"].as_str()?.to_owned();
                let exe = m["executable"].as_str()?;
                Some((name, PathBuf::from(exe)))
            })
            .collect();
        eprintln!(
            "binaries built in {:.1}s: {:?}",
            started.elapsed().as_secs_f64(),
            bins.keys().collect::<Vec<_>>()
        );
        bins
    })
}

fn binary(name: &str) -> &'static Path {
    binaries()
        .get(name)
        .unwrap_or_else(|| panic!("cargo build did not name the {name} executable"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn unit_text(unit: &str) -> String {
    read(&workspace().join("systemd").join(unit))
}

/// The units copied into a temporary directory with `/usr/bin/<binary>` pointing at the
/// freshly built binaries (verify checks that ExecStart= names an executable).
fn staged_units() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir bin");
    let mut units = Vec::new();
    for (unit, exe, _, _) in DAEMONS {
        std::os::unix::fs::symlink(binary(exe), bin.join(exe)).expect("symlink binary");
        let staged = unit_text(unit).replace("/usr/bin/", &format!("{}/", bin.display()));
        assert!(
            staged.contains(&format!("ExecStart={}/{exe}", bin.display())),
            "{unit}: ExecStart= must run /usr/bin/{exe}"
        );
        let path = dir.path().join(unit);
        std::fs::write(&path, staged).expect("write unit");
        units.push(path);
    }
    (dir, units)
}

#[test]
fn systemd_analyze_verify_accepts_every_unit() {
    let (_dir, units) = staged_units();
    for unit in &units {
        let out = run(systemd_analyze()
            .args(["verify", "--man=no"])
            .arg(unit)
            .env("SYSTEMD_LOG_COLOR", "0"));
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        eprintln!(
            "systemd-analyze verify {}: {} {}",
            unit.display(),
            out.status,
            said.trim()
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "systemd-analyze verify {} failed ({}):\n{said}",
            unit.display(),
            out.status
        );
    }
}

#[test]
fn systemd_analyze_security_exposure_stays_low() {
    let (_dir, units) = staged_units();
    let mut failures = Vec::new();
    for (unit, max) in MAX_EXPOSURE {
        let path = units
            .iter()
            .find(|p| p.ends_with(unit))
            .expect("staged unit");
        let out = run(systemd_analyze()
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(path)
            .env("SYSTEMD_COLORS", "0"));
        let report = text(&out.stdout);
        assert!(
            out.status.success(),
            "systemd-analyze security --offline=yes {unit} failed ({}):\n{report}{}",
            out.status,
            text(&out.stderr)
        );
        let line = report
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("no overall exposure level for {unit}:\n{report}"));
        let score: f64 = line
            .rsplit_once(": ")
            .and_then(|(_, s)| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
        eprintln!("{unit}: exposure {score} (limit {max})");
        for open in report.lines().filter(|l| l.starts_with('✗')) {
            eprintln!("    {open}");
        }
        if score > max {
            failures.push(format!("{unit}: {score} > {max}"));
        }
    }
    assert!(
        failures.is_empty(),
        "exposure above the limit: {failures:?}"
    );
}

/// Every `ETCD_MONITOR_*` name in `[env: NAME=` of `<binary> --help`.
fn accepted_variables(exe: &str) -> BTreeSet<String> {
    let out = run(Command::new(binary(exe)).arg("--help"));
    assert!(out.status.success(), "{exe} --help failed");
    let help = text(&out.stdout);
    help.match_indices("[env: ")
        .filter_map(|(i, m)| {
            let rest = &help[i + m.len()..];
            let end = rest.find('=')?;
            Some(rest[..end].to_owned())
        })
        .filter(|name| name.starts_with("ETCD_MONITOR_"))
        .collect()
}

/// `NAME` of every `NAME=value` line, commented out (`#NAME=`) or not.
fn assigned_variables(file: &str) -> Vec<(String, bool)> {
    file.lines()
        .filter_map(|l| {
            let l = l.trim();
            let (active, l) = match l.strip_prefix('#') {
                Some(rest) => (false, rest),
                None => (true, l),
            };
            let (name, _) = l.split_once('=')?;
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            ok.then(|| (name.to_owned(), active))
        })
        .collect()
}

#[test]
fn env_files_and_units_name_only_variables_the_binaries_read() {
    let mut wrong = Vec::new();
    for (unit, exe, env_file, prefix) in DAEMONS {
        let accepted = accepted_variables(exe);
        assert!(
            accepted.len() >= 5,
            "{exe} --help lists too few variables: {accepted:?}"
        );
        let env_path = workspace().join("packaging").join(env_file);
        let env = read(&env_path);
        let assigned = assigned_variables(&env);
        let ours: Vec<_> = assigned
            .iter()
            .filter(|(n, _)| n.starts_with("ETCD_MONITOR_"))
            .collect();
        assert!(
            ours.iter().any(|(_, active)| *active),
            "{env_file} sets no ETCD_MONITOR_* variable"
        );
        for (name, _) in &ours {
            if !accepted.contains(name) {
                wrong.push(format!("{env_file}: {name} is not read by {exe}"));
            }
            // The exporter's prefix is a prefix of the others': the agent's and relay's
            // files must not set the exporter's variables by mistake.
            if !name.starts_with(prefix) {
                wrong.push(format!("{env_file}: {name} is not an {prefix}* variable"));
            }
        }
        // Environment= defaults in the unit.
        for line in unit_text(unit).lines() {
            if let Some(v) = line.strip_prefix("Environment=") {
                let name = v.split('=').next().unwrap_or_default();
                if name.starts_with("ETCD_MONITOR_") && !accepted.contains(name) {
                    wrong.push(format!("{unit}: Environment={name} is not read by {exe}"));
                }
            }
        }
        eprintln!(
            "{env_file}: {} ETCD_MONITOR_* variables, all among the {} of {exe} --help",
            ours.len(),
            accepted.len()
        );
        // Every unit reads its env file, optional (`-`), from /etc/etcd-monitor.
        assert!(
            unit_text(unit).contains(&format!("EnvironmentFile=-/etc/etcd-monitor/{env_file}\n")),
            "{unit} must read EnvironmentFile=-/etc/etcd-monitor/{env_file}"
        );
    }
    assert!(wrong.is_empty(), "unknown variables:\n{}", wrong.join("\n"));
}

#[test]
fn relay_env_names_every_variable_relay_yml_reads() {
    let yml = read(&workspace().join("alerting/relay.yml"));
    let mut needed = BTreeSet::new();
    for line in yml.lines().filter(|l| !l.trim_start().starts_with('#')) {
        // `xxx_env: NAME` keys and `${NAME}` / `${NAME:-default}` substitutions.
        for (i, m) in line.match_indices("_env:") {
            let name: String = line[i + m.len()..]
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !name.is_empty() {
                needed.insert(name);
            }
        }
        for (i, m) in line.match_indices("${") {
            let name: String = line[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !name.is_empty() {
                needed.insert(name);
            }
        }
    }
    assert!(
        needed.contains("PAGERDUTY_ROUTING_KEY"),
        "relay.yml variables not found: {needed:?}"
    );
    let env = read(&workspace().join("packaging/relay.env"));
    let named: BTreeSet<String> = assigned_variables(&env)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let missing: Vec<_> = needed.difference(&named).collect();
    eprintln!("relay.yml reads {needed:?}");
    assert!(
        missing.is_empty(),
        "packaging/relay.env does not mention {missing:?}, which alerting/relay.yml reads"
    );
}

/// The values of `Key=` lines in a unit.
fn directives<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect()
}

#[test]
fn units_are_sandboxed_and_the_agent_writes_only_its_probe_dir() {
    for (unit, _, _, _) in DAEMONS {
        let text = unit_text(unit);
        assert!(
            text.starts_with(&format!("# {unit}: ")),
            "{unit} starts with a comment header naming itself"
        );
        for setting in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "ProtectKernelTunables=yes",
            "ProtectKernelModules=yes",
            "ProtectControlGroups=yes",
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
            "RestrictNamespaces=yes",
            "LockPersonality=yes",
            "MemoryDenyWriteExecute=yes",
            "SystemCallFilter=@system-service",
            "CapabilityBoundingSet=",
            "AmbientCapabilities=",
            "Restart=on-failure",
        ] {
            assert!(text.lines().any(|l| l == setting), "{unit} lacks {setting}");
        }
        assert!(
            directives(&text, "ReadWritePaths").is_empty(),
            "{unit}: the writable paths are StateDirectory= and LogsDirectory= only"
        );
    }
    for unit in ["etcd-monitor.service", "etcd-monitor-relay.service"] {
        let text = unit_text(unit);
        assert_eq!(directives(&text, "User"), ["etcd-monitor"], "{unit}");
        assert!(text.lines().any(|l| l == "PrivateDevices=yes"), "{unit}");
    }
    let relay = unit_text("etcd-monitor-relay.service");
    assert_eq!(directives(&relay, "StateDirectory"), ["etcd-monitor-relay"]);
    assert!(relay.contains("--data-dir %S/etcd-monitor-relay"));
    assert!(relay.contains("--config /etc/etcd-monitor/relay.yml"));
    // The exporter writes only for the maintenance API: its audit log and snapshots.
    let exporter = unit_text("etcd-monitor.service");
    assert_eq!(directives(&exporter, "StateDirectory"), ["etcd-monitor"]);
    assert_eq!(directives(&exporter, "LogsDirectory"), ["etcd-monitor"]);

    // The agent: etcd's user, and exactly the agent's default probe dir for Debian's data
    // dir is writable (StateDirectory= is relative to /var/lib).
    let agent = unit_text("etcd-monitor-agent.service");
    assert_eq!(directives(&agent, "User"), ["etcd"]);
    let data_dir = "/var/lib/etcd/default";
    let probe = agent::config::default_probe_dir(Path::new(data_dir));
    assert_eq!(probe, Path::new("/var/lib/etcd/.default.fsync-probe"));
    let env = directives(&agent, "Environment");
    assert!(env.contains(&format!("ETCD_MONITOR_AGENT_DATA_DIR={data_dir}").as_str()));
    assert!(
        env.contains(&format!("ETCD_MONITOR_AGENT_FSYNC_PROBE_DIR={}", probe.display()).as_str())
    );
    let state = directives(&agent, "StateDirectory");
    assert_eq!(state.len(), 1, "one writable directory: {state:?}");
    assert_eq!(Path::new("/var/lib").join(state[0]), probe);
}

/// Package name, its binaries, its unit, its files under /etc/etcd-monitor (name, mode,
/// source in the checkout).
type Package = (
    &'static str,
    &'static [&'static str],
    &'static str,
    &'static [(&'static str, &'static str, &'static str)],
);

/// `dpkg-deb ARGS`, stdout as text.
fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = run(Command::new("dpkg-deb").args(args).arg(deb));
    assert!(
        out.status.success(),
        "dpkg-deb {args:?} {} failed: {}",
        deb.display(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn package_sh_dev_builds_debs_with_binaries_units_and_config() {
    let has_cargo_deb = tests::clean_command(env!("CARGO"))
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_cargo_deb,
        "cargo-deb is not installed (`cargo deb` is missing): install it with \
         `cargo install cargo-deb --version 3.8.0 --locked` (./scripts/package.sh does this)"
    );
    let started = Instant::now();
    let out = run(tests::clean_command(workspace().join("scripts/package.sh")).arg("--dev"));
    eprintln!(
        "scripts/package.sh --dev: {} in {:.1}s",
        out.status,
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "scripts/package.sh --dev failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let version = env!("CARGO_PKG_VERSION");

    let packages: [Package; 3] = [
        (
            "etcd-monitor",
            &["etcd-monitor", "etcd-monitor-bench", "etcd-monitor-ctl"],
            "etcd-monitor.service",
            &[("exporter.env", "-rw-------", "packaging/exporter.env")],
        ),
        (
            "etcd-monitor-agent",
            &["etcd-monitor-agent"],
            "etcd-monitor-agent.service",
            &[("agent.env", "-rw-------", "packaging/agent.env")],
        ),
        (
            "etcd-monitor-relay",
            &["etcd-monitor-relay"],
            "etcd-monitor-relay.service",
            &[
                ("relay.env", "-rw-------", "packaging/relay.env"),
                ("relay.yml", "-rw-r--r--", "alerting/relay.yml"),
            ],
        ),
    ];
    for (name, bins, unit, etc) in packages {
        let deb_name = format!("{name}_{version}-1_amd64.deb");
        let deb = stdout
            .lines()
            .map(str::trim)
            .find(|l| l.ends_with(&format!("/{deb_name}")))
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                panic!("package.sh did not print the path of {deb_name}:\n{stdout}")
            });
        assert!(
            deb.parent().is_some_and(|d| d.ends_with("target/debian")),
            "{} is not in target/debian/",
            deb.display()
        );

        // dpkg-deb -c: contents, with modes.
        let listing = dpkg_deb(&["-c"], &deb);
        eprintln!("== dpkg-deb -c {deb_name}\n{listing}");
        let entry = |path: &str| {
            listing
                .lines()
                .find(|l| l.ends_with(&format!(" .{path}")))
                .unwrap_or_else(|| panic!("{deb_name} lacks {path}:\n{listing}"))
        };
        for bin in bins {
            assert!(entry(&format!("/usr/bin/{bin}")).starts_with("-rwxr-xr-x 0/0"));
        }
        let unit_dir = if listing.contains(&format!(" ./lib/systemd/system/{unit}")) {
            "/lib/systemd/system"
        } else {
            "/usr/lib/systemd/system"
        };
        assert!(entry(&format!("{unit_dir}/{unit}")).starts_with("-rw-r--r-- 0/0"));
        for (file, mode, _) in etc {
            let e = entry(&format!("/etc/etcd-monitor/{file}"));
            assert!(e.starts_with(&format!("{mode} 0/0")), "{deb_name}: {e}");
        }

        // dpkg-deb -I: fields, conffiles, maintainer scripts.
        let info = dpkg_deb(&["-I"], &deb);
        eprintln!("== dpkg-deb -I {deb_name}\n{info}");
        assert!(info.contains(&format!(" Package: {name}\n")), "{info}");
        let depends = dpkg_deb(&["-f"], &deb);
        let depends = depends
            .lines()
            .find_map(|l| l.strip_prefix("Depends: "))
            .unwrap_or_else(|| panic!("{deb_name} has no Depends"));
        assert!(depends.contains("libc6"), "{deb_name}: Depends: {depends}");
        let conffiles = {
            let out = run(Command::new("dpkg-deb")
                .arg("-I")
                .arg(&deb)
                .arg("conffiles"));
            assert!(out.status.success(), "{deb_name} has no conffiles");
            text(&out.stdout)
        };
        let want: BTreeSet<String> = etc
            .iter()
            .map(|(f, _, _)| format!("/etc/etcd-monitor/{f}"))
            .collect();
        let have: BTreeSet<String> = conffiles.lines().map(str::to_owned).collect();
        assert_eq!(have, want, "{deb_name} conffiles");

        let control = tempfile::tempdir().expect("tempdir");
        let out = run(Command::new("dpkg-deb")
            .arg("-e")
            .arg(&deb)
            .arg(control.path().join("DEBIAN")));
        assert!(out.status.success(), "dpkg-deb -e {deb_name}");
        let script = |s: &str| std::fs::read_to_string(control.path().join("DEBIAN").join(s));
        for s in ["postinst", "prerm", "postrm"] {
            let path = control.path().join("DEBIAN").join(s);
            assert!(path.exists(), "{deb_name} has no {s}");
            let check = run(Command::new("sh").arg("-n").arg(&path));
            assert!(check.status.success(), "{deb_name} {s}: sh -n failed");
        }
        let postinst = script("postinst").expect("postinst");
        // Units are neither enabled nor started on install; an upgrade re-enables and
        // restarts only what the admin had enabled and running.
        assert!(!postinst.contains("deb-systemd-invoke start"), "{postinst}");
        assert!(!postinst.contains("#DEBHELPER#"), "{postinst}");
        assert!(postinst.contains("was-enabled"), "{postinst}");
        let needs_user = directives(&unit_text(unit), "User") == ["etcd-monitor"];
        assert_eq!(
            postinst.contains("adduser --quiet --system --group"),
            needs_user,
            "{deb_name}: the postinst creates the etcd-monitor user exactly when its unit runs as it"
        );
        assert_eq!(
            depends.contains("adduser"),
            needs_user,
            "Depends: {depends}"
        );

        // dpkg-deb -x: the files are the ones in the checkout.
        let root = tempfile::tempdir().expect("tempdir");
        dpkg_deb_extract(&deb, root.path());
        assert_eq!(
            read(
                &root
                    .path()
                    .join(unit_dir.trim_start_matches('/'))
                    .join(unit)
            ),
            unit_text(unit),
            "{deb_name}: {unit}"
        );
        for (file, _, source) in etc {
            assert_eq!(
                read(&root.path().join("etc/etcd-monitor").join(file)),
                read(&workspace().join(source)),
                "{deb_name}: /etc/etcd-monitor/{file}"
            );
        }
        for bin in bins {
            let packaged = root.path().join("usr/bin").join(bin);
            let out = run(Command::new(&packaged).arg("--version"));
            assert!(out.status.success(), "{deb_name}: {bin} --version");
        }
    }
}

fn dpkg_deb_extract(deb: &Path, dir: &Path) {
    let out = run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir));
    assert!(
        out.status.success(),
        "dpkg-deb -x {}: {}",
        deb.display(),
        text(&out.stderr)
    );
}
