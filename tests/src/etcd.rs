//! Real etcd clusters for tests: N members on free loopback ports in a temp dir, with
//! stop, kill (-9), freeze (SIGSTOP), thaw and restart per member.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::netns::MemberNet;
use crate::tls::TlsFiles;
use crate::{free_port, wait_for, MAX_CLUSTERS};

static CLUSTERS: Semaphore = Semaphore::const_new(MAX_CLUSTERS);

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub size: usize,
    /// Serve clients over TLS and require client certificates.
    pub tls: bool,
    /// Enable etcd auth with a `root` user (password in [`EtcdCluster::password_file`]).
    pub auth: bool,
    /// `--quota-backend-bytes` for every member.
    pub quota_backend_bytes: Option<u64>,
    /// `(member index, URL)`: advertise this client URL instead of the one listened on
    /// (to put something in front of a member).
    pub advertise_client_url: Option<(usize, String)>,
    /// `(member index, directory)`: this member's data dir instead of one in the
    /// cluster's temp dir (a directory the test prepared, e.g. the mount point of a slow
    /// filesystem). The test keeps it and cleans it up.
    pub data_dirs: Vec<(usize, PathBuf)>,
    /// Every member in a network namespace of its own ([`MemberNet`]), so that one can be
    /// cut off from its peers ([`EtcdCluster::cut`]). Plain (no TLS) clusters only, in a
    /// test that runs [`crate::netns::isolated`].
    pub member_namespaces: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            size: 3,
            tls: false,
            auth: false,
            quota_backend_bytes: None,
            advertise_client_url: None,
            data_dirs: Vec::new(),
            member_namespaces: false,
        }
    }
}

/// One member's process and addresses.
pub struct EtcdMember {
    pub name: String,
    /// The address it listens on (127.0.0.1, or its namespace's).
    pub host: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    /// Its namespace, with [`ClusterOptions::member_namespaces`].
    net: Option<MemberNet>,
}

impl EtcdMember {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// A running cluster; every member is killed on drop.
pub struct EtcdCluster {
    pub dir: TempDir,
    pub members: Vec<EtcdMember>,
    pub tls: Option<TlsFiles>,
    /// The root user's password file when auth is on.
    pub password_file: Option<PathBuf>,
    pub password: Option<String>,
    http: reqwest::Client,
    _permit: SemaphorePermit<'static>,
}

const ROOT_PASSWORD: &str = "r00t pass";

impl EtcdCluster {
    /// A healthy plain cluster of `size` members.
    pub async fn start(size: usize) -> Self {
        Self::start_with(ClusterOptions {
            size,
            ..ClusterOptions::default()
        })
        .await
    }

    pub async fn start_with(opts: ClusterOptions) -> Self {
        let permit = CLUSTERS.acquire().await.expect("semaphore closed");
        let dir = tempfile::Builder::new()
            .prefix("etcd-monitor-test-")
            .tempdir()
            .expect("temp dir");
        let tls = opts.tls.then(|| TlsFiles::generate(dir.path()));
        let scheme = if opts.tls { "https" } else { "http" };
        let ports: Vec<(u16, u16)> = (0..opts.size).map(|_| (free_port(), free_port())).collect();
        assert!(
            !(opts.member_namespaces && opts.tls),
            "member namespaces with TLS: the test certificates are for 127.0.0.1"
        );
        let mut nets: Vec<Option<MemberNet>> = (0..opts.size)
            .map(|i| {
                opts.member_namespaces
                    .then(|| MemberNet::create(u8::try_from(i + 1).expect("a small cluster")))
            })
            .collect();
        let hosts: Vec<String> = nets
            .iter()
            .map(|n| {
                n.as_ref()
                    .map_or("127.0.0.1".to_owned(), |n| n.addr.to_string())
            })
            .collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("m{}=http://{}:{p}", i + 1, hosts[i]))
            .collect();
        let token = format!("t{}", ports[0].0);
        let mut members = Vec::new();
        for (i, (cp, pp)) in ports.iter().enumerate() {
            let name = format!("m{}", i + 1);
            let data_dir = match opts.data_dirs.iter().find(|(j, _)| *j == i) {
                Some((_, d)) => d.clone(),
                None => dir.path().join(format!("{name}.etcd")),
            };
            let host = &hosts[i];
            let client = format!("{scheme}://{host}:{cp}");
            let advertised = match &opts.advertise_client_url {
                Some((j, url)) if *j == i => url.clone(),
                _ => client.clone(),
            };
            let peer = format!("http://{host}:{pp}");
            let mut args: Vec<String> = [
                "--name",
                &name,
                "--data-dir",
                &data_dir.to_string_lossy(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &advertised,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &initial.join(","),
                "--initial-cluster-token",
                &token,
                "--initial-cluster-state",
                "new",
                // Slow enough that a loaded two-core machine does not cause elections.
                "--heartbeat-interval",
                "200",
                "--election-timeout",
                "2000",
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
                "--log-level",
                "warn",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if let Some(t) = &tls {
                for (flag, path) in [
                    ("--cert-file", &t.server_cert),
                    ("--key-file", &t.server_key),
                    ("--trusted-ca-file", &t.ca),
                ] {
                    args.push(flag.into());
                    args.push(path.to_string_lossy().into_owned());
                }
                args.push("--client-cert-auth".into());
            }
            if let Some(q) = opts.quota_backend_bytes {
                args.push("--quota-backend-bytes".into());
                args.push(q.to_string());
            }
            members.push(EtcdMember {
                log: dir.path().join(format!("{name}.log")),
                name,
                host: host.clone(),
                client_port: *cp,
                peer_port: *pp,
                data_dir,
                args,
                child: None,
                net: nets[i].take(),
            });
        }
        let http = {
            let mut b = reqwest::Client::builder()
                .use_rustls_tls()
                .timeout(Duration::from_secs(2))
                .no_proxy();
            if let Some(t) = &tls {
                let ca = std::fs::read(&t.ca).expect("ca");
                let mut id = std::fs::read(&t.client_cert).expect("cert");
                id.extend(std::fs::read(&t.client_key).expect("key"));
                b = b
                    .tls_built_in_root_certs(false)
                    .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca pem"))
                    .identity(reqwest::Identity::from_pem(&id).expect("identity pem"));
            }
            b.build().expect("http client")
        };
        let mut cluster = EtcdCluster {
            dir,
            members,
            tls,
            password_file: None,
            password: None,
            http,
            _permit: permit,
        };
        for i in 0..cluster.members.len() {
            cluster.spawn(i);
        }
        // A port picked by `free_port` can still be taken before etcd binds it (by a
        // daemon outside the tests), and a starved machine can delay the first election:
        // start again on new ports rather than fail the test.
        for attempt in 1..=3 {
            match cluster.wait_started(Duration::from_secs(60)).await {
                Ok(()) => break,
                Err(why) if attempt < 3 => {
                    eprintln!("etcd cluster did not start ({why}); starting it again on new ports");
                    cluster.restart_on_new_ports();
                }
                Err(why) => panic!("etcd cluster did not start after 3 attempts: {why}"),
            }
        }
        if opts.auth {
            cluster.enable_auth().await;
        }
        cluster
    }

    /// Waits until every member reports a leader; an error as soon as a member exits,
    /// with its log's tail.
    async fn wait_started(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            for i in 0..self.members.len() {
                let exited = self.members[i]
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                if let Some(status) = exited {
                    return Err(format!(
                        "member {} exited ({status}): {}",
                        self.members[i].name,
                        self.log_tail(i)
                    ));
                }
            }
            let mut all = true;
            for i in 0..self.members.len() {
                if self.gauge(i, "etcd_server_has_leader ").await != Some(1.0) {
                    all = false;
                    break;
                }
            }
            if all {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                let tails: Vec<String> = (0..self.members.len())
                    .map(|i| format!("{}: {}", self.members[i].name, self.log_tail(i)))
                    .collect();
                return Err(format!(
                    "no leader after {timeout:?}; {}",
                    tails.join(" | ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills every member, wipes their data and starts them again on new ports.
    fn restart_on_new_ports(&mut self) {
        let mut renames: Vec<(String, String)> = Vec::new();
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = std::fs::remove_dir_all(&m.data_dir);
            let (cp, pp) = (free_port(), free_port());
            renames.push((format!(":{}", m.client_port), format!(":{cp}")));
            renames.push((format!(":{}", m.peer_port), format!(":{pp}")));
            m.client_port = cp;
            m.peer_port = pp;
        }
        // In two steps, through placeholders, so that a new port equal to another old one
        // is not renamed twice. (Ports from `free_port` have five digits.)
        for m in &mut self.members {
            for arg in &mut m.args {
                for (k, (from, _)) in renames.iter().enumerate() {
                    *arg = arg.replace(from.as_str(), &format!(":\u{0}{k}\u{0}"));
                }
                for (k, (_, to)) in renames.iter().enumerate() {
                    *arg = arg.replace(&format!(":\u{0}{k}\u{0}"), to);
                }
            }
        }
        for i in 0..self.members.len() {
            self.spawn(i);
        }
    }

    fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("log file");
        let mut cmd = match &m.net {
            Some(net) => net.command("etcd"),
            None => Command::new("etcd"),
        };
        let child = cmd
            .args(&m.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("cannot start etcd: is the etcd-server package installed?");
        m.child = Some(child);
    }

    /// Client URL of member `i`.
    pub fn client_url(&self, i: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!(
            "{scheme}://{}:{}",
            self.members[i].host, self.members[i].client_port
        )
    }

    /// All client URLs, comma separated (what `--endpoints` takes).
    pub fn endpoints(&self) -> String {
        (0..self.members.len())
            .map(|i| self.client_url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Member `i`'s own `/metrics`, or `None` if it does not answer.
    pub async fn member_metrics(&self, i: usize) -> Option<String> {
        let resp = self
            .http
            .get(format!("{}/metrics", self.client_url(i)))
            .send()
            .await
            .ok()?;
        resp.text().await.ok()
    }

    async fn gauge(&self, i: usize, line_prefix: &str) -> Option<f64> {
        let text = self.member_metrics(i).await?;
        text.lines()
            .find_map(|l| l.strip_prefix(line_prefix))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Waits until every running member reports a leader.
    pub async fn wait_all_have_leader(&self, timeout: Duration) {
        let running: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].child.is_some())
            .collect();
        wait_for("every member to have a leader", timeout, || async {
            for &i in &running {
                if self.gauge(i, "etcd_server_has_leader ").await != Some(1.0) {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }

    /// How many keys are under `prefix` (asked of member 0).
    pub async fn count_keys(&self, prefix: &str) -> i64 {
        let mut c = self.client(0).await;
        c.get(
            prefix,
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .expect("count")
        .count()
    }

    /// Index of the member that says it is the leader.
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.members.len() {
            if self.members[i].child.is_some()
                && self.gauge(i, "etcd_server_is_leader ").await == Some(1.0)
            {
                return Some(i);
            }
        }
        None
    }

    /// Waits for a leader and returns its index.
    pub async fn wait_leader(&self, timeout: Duration) -> usize {
        wait_for("a leader", timeout, || self.leader()).await
    }

    fn signal(&self, i: usize, sig: Signal) {
        let pid = self.members[i].pid().expect("member is not running");
        kill(Pid::from_raw(pid as i32), sig).expect("signal member");
    }

    /// Kills member `i` with SIGKILL and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops member `i` with SIGTERM and waits for it to exit.
    pub fn stop(&mut self, i: usize) {
        if self.members[i].child.is_some() {
            self.signal(i, Signal::SIGTERM);
        }
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.wait();
        }
    }

    /// Freezes member `i` (SIGSTOP): its sockets stay open but nothing answers.
    pub fn freeze(&self, i: usize) {
        self.signal(i, Signal::SIGSTOP);
    }

    /// Thaws a frozen member (SIGCONT).
    pub fn thaw(&self, i: usize) {
        self.signal(i, Signal::SIGCONT);
    }

    /// Cuts member `i` off from its peers; its clients still reach it. Needs
    /// [`ClusterOptions::member_namespaces`].
    pub fn cut(&mut self, i: usize) {
        self.members[i]
            .net
            .as_mut()
            .expect("cut needs ClusterOptions::member_namespaces")
            .cut();
    }

    /// Takes back [`EtcdCluster::cut`].
    pub fn heal(&mut self, i: usize) {
        if let Some(net) = self.members[i].net.as_mut() {
            net.heal();
        }
    }

    /// Starts a stopped or killed member again on the same data dir and ports.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        for a in self.members[i].args.iter_mut() {
            if a == "new" {
                *a = "existing".into();
            }
        }
        self.spawn(i);
    }

    /// A client to member `i` alone (as root when auth is on).
    pub async fn client(&self, i: usize) -> etcd_client::Client {
        let url = self.client_url(i);
        let mut opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5));
        if let Some(t) = &self.tls {
            let ca = std::fs::read(&t.ca).expect("ca");
            let cert = std::fs::read(&t.client_cert).expect("cert");
            let key = std::fs::read(&t.client_key).expect("key");
            opts = opts.with_tls(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(ca))
                    .identity(etcd_client::Identity::from_pem(cert, key)),
            );
        }
        if let Some(pw) = &self.password {
            opts = opts.with_user("root", pw.clone());
        }
        etcd_client::Client::connect([url], Some(opts))
            .await
            .expect("connect to member")
    }

    async fn enable_auth(&mut self) {
        let mut c = self.client(0).await;
        c.user_add("root", ROOT_PASSWORD, None)
            .await
            .expect("add root user");
        c.user_grant_role("root", "root")
            .await
            .expect("grant root role");
        c.auth_enable().await.expect("enable auth");
        let path = self.dir.path().join("root-password");
        std::fs::write(&path, format!("{ROOT_PASSWORD}\n")).expect("write password file");
        self.password_file = Some(path);
        self.password = Some(ROOT_PASSWORD.to_owned());
    }

    /// The last lines of member `i`'s log, for failure messages.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.members[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                // SIGKILL also ends a stopped (frozen) process.
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
