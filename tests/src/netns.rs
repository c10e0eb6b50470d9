//! Network namespaces for faults that need a network between members: a member cut off
//! from its peers while its clients still reach it. Everything stays inside namespaces
//! the test creates, nothing touches the machine's own network:
//!
//! - [`isolated`] runs the test on a thread in a network namespace of its own, with a
//!   private loopback. The threads and processes it starts (the tokio runtime, the
//!   in-process daemons, Prometheus, etcd) are in that namespace too.
//! - [`MemberNet`] gives one member a namespace of its own inside that, joined to the
//!   test's by a veth pair: the member is `10.88.N.2`, the test's end `10.88.N.1`, and the
//!   test's namespace routes between members. So traffic from member to member is
//!   forwarded and can be dropped in iptables' `FORWARD` chain ([`MemberNet::cut`]),
//!   while the test's own connections to a member (clients, the exporter, the agents)
//!   go through `OUTPUT`/`INPUT` and are left alone.
//!
//! Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN), `ip` (iproute2), `iptables`, `nsenter` and
//! `unshare` (util-linux).

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::{unshare, CloneFlags};

/// Runs `f` on a thread in a new network namespace (loopback up), and returns what it
/// returns; a panic in `f` is the caller's panic.
pub fn isolated<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        s.spawn(|| {
            // A thread's namespace is its own: the rest of the test process stays put.
            unshare(CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET): a test in a network namespace needs root");
            run(Command::new("ip").args(["link", "set", "lo", "up"]));
            // The test's namespace routes between the members' namespaces.
            run(Command::new("sysctl").args(["-q", "-w", "net.ipv4.ip_forward=1"]));
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs `cmd` to completion; panics with its stderr when it fails.
fn run(cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// One member's network namespace, joined to the test's (which must be [`isolated`]) by
/// a veth pair. Held open by a sleeping process; dropping it ends that process, and the
/// namespace and its veth pair go with the last process in it.
pub struct MemberNet {
    holder: Child,
    /// The member's address.
    pub addr: Ipv4Addr,
    cut: bool,
}

impl MemberNet {
    /// The `n`th member's namespace (n < 250): `10.88.n.2`, routed through `10.88.n.1`.
    pub fn create(n: u8) -> Self {
        assert!(n < 250, "at most 250 member namespaces");
        let own = std::fs::read_link("/proc/thread-self/ns/net").expect("own namespace");
        assert_ne!(
            std::fs::read_link("/proc/1/ns/net").ok(),
            Some(own.clone()),
            "MemberNet::create outside tests::netns::isolated would change the machine's network"
        );
        let holder = Command::new("unshare")
            .args(["--net", "sleep", "infinity"])
            .stdin(Stdio::null())
            .spawn()
            .expect("cannot run unshare (util-linux)");
        let pid = holder.id().to_string();
        let started = Instant::now();
        loop {
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
            if theirs.is_some_and(|t| t != own) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "unshare --net did not make a namespace"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let net = MemberNet {
            holder,
            addr: Ipv4Addr::new(10, 88, n, 2),
            cut: false,
        };
        let (ours, theirs) = (format!("emon{n}"), format!("emon{n}m"));
        let gateway = format!("10.88.{n}.1");
        run(Command::new("ip").args([
            "link", "add", &ours, "type", "veth", "peer", "name", &theirs, "netns", &pid,
        ]));
        run(Command::new("ip").args(["addr", "add", &format!("{gateway}/24"), "dev", &ours]));
        run(Command::new("ip").args(["link", "set", &ours, "up"]));
        let inside = |args: &[&str]| {
            run(Command::new("nsenter")
                .args(["--target", &pid, "--net", "ip"])
                .args(args));
        };
        inside(&["link", "set", "lo", "up"]);
        inside(&["addr", "add", &format!("{}/24", net.addr), "dev", &theirs]);
        inside(&["link", "set", &theirs, "up"]);
        inside(&["route", "add", "default", "via", &gateway]);
        net
    }

    /// `program` to be run in the member's namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["--target", &self.holder.id().to_string(), "--net", program]);
        cmd
    }

    /// Drops everything forwarded to or from the member: its peers no longer hear it nor
    /// it them (connections hang, as on a real network), while the test's namespace
    /// still reaches it.
    pub fn cut(&mut self) {
        if !self.cut {
            self.rules("-I");
            self.cut = true;
        }
    }

    /// Takes the cut away.
    pub fn heal(&mut self) {
        if self.cut {
            self.rules("-D");
            self.cut = false;
        }
    }

    fn rules(&self, op: &str) {
        let addr = self.addr.to_string();
        for dir in ["-s", "-d"] {
            run(Command::new("iptables").args([op, "FORWARD", dir, &addr, "-j", "DROP"]));
        }
    }
}

impl Drop for MemberNet {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
