//! The command line: flags, dispatch to the library, printing. Exit codes: 0 done, 1
//! refused or failed (one line on stderr saying why; `cas` not swapped), 2 bad input.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use common::etcd::{EtcdArgs, EtcdConfig};

use crate::agents;
use crate::cluster::{self, ClusterView};
use crate::defrag::{self, DefragError};
use crate::ops::{self, OpError};
use crate::output::{self, Output};
use crate::rule::Rule;
use crate::{guard, maintenance, snapshot};

pub const DONE: u8 = 0;
pub const FAILED: u8 = 1;
pub const BAD_INPUT: u8 = 2;

const PROGRAM: &str = "etcd-monitor-ctl";

/// etcd-monitor-ctl: the cluster at a glance, guarded maintenance, keys, leases and CAS.
///
/// Commands that could lose quorum or put a cluster already in trouble at more risk
/// refuse (exit 1) and say why, unless --force.
#[derive(Debug, Parser)]
#[command(name = "etcd-monitor-ctl", version)]
pub struct Args {
    #[command(flatten)]
    pub etcd: EtcdArgs,

    /// Output format: an aligned table for people, JSON for machines.
    #[arg(
        short = 'o',
        long,
        env = "ETCD_MONITOR_CTL_OUTPUT",
        value_enum,
        default_value = "table",
        global = true
    )]
    pub output: Output,

    /// Do it even when a guard refuses (a member down, no leader, quorum at risk, the DB
    /// still too full to disarm NOSPACE). Deliberately not readable from the environment.
    #[arg(long, global = true)]
    pub force: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every member's status (asked at its own URL), the alarms and a verdict.
    Status,
    /// List, add, remove or promote members.
    #[command(subcommand)]
    Member(MemberCmd),
    /// Defragment members (--rolling: followers first, the leader last after moving
    /// leadership away).
    Defrag(DefragArgs),
    /// Recover from NOSPACE: compact to the current revision, defragment rolling, disarm.
    RecoverNospace(AgentArgs),
    /// Compact the key history (physically) to the current revision minus --retain.
    Compact {
        /// Revisions to keep.
        #[arg(long, default_value_t = 0, value_name = "N")]
        retain: u64,
    },
    /// Save a snapshot from one healthy member, or read one.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// List or disarm alarms.
    #[command(subcommand)]
    Alarm(AlarmCmd),
    /// Read a key (or every key under a prefix).
    Get {
        key: String,
        #[arg(long)]
        prefix: bool,
    },
    /// Write a key.
    Put {
        key: String,
        value: String,
        /// Attach the key to this lease (hex ID, as `lease grant` prints it).
        #[arg(long, value_name = "ID", value_parser = ops::parse_lease)]
        lease: Option<i64>,
    },
    /// Delete a key (or every key under a prefix).
    Del {
        key: String,
        #[arg(long)]
        prefix: bool,
    },
    /// Print events on a key (or prefix) until Ctrl-C.
    Watch {
        key: String,
        #[arg(long)]
        prefix: bool,
        /// Stop after N events.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// Grant, revoke, inspect or keep a lease alive.
    #[command(subcommand)]
    Lease(LeaseCmd),
    /// Set KEY to NEW if its value is EXPECTED (exit 0 swapped, 1 not swapped).
    Cas {
        key: String,
        expected: String,
        new: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum MemberCmd {
    /// The members.
    List,
    /// Add a member (then start it with the printed initial cluster).
    Add {
        name: String,
        /// Its peer URLs, comma separated.
        #[arg(long, value_name = "URLS", value_parser = parse_peer_urls)]
        peer_urls: PeerUrls,
        /// Add it as a learner (no vote until promoted).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member (by name or hex ID); refused if quorum would be at risk.
    Remove { name: String },
    /// Promote a learner to a voting member.
    Promote { name: String },
}

#[derive(Debug, Clone, clap::Args)]
pub struct DefragArgs {
    /// One member at a time, followers first, the leader last after moving leadership.
    #[arg(long)]
    pub rolling: bool,
    /// Print the plan and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Defragment only members for which this rule holds, e.g.
    /// `dbQuotaUsage > 0.8 || dbSizeFree > 200MiB`.
    #[arg(long = "if", value_name = "RULE", value_parser = parse_rule)]
    pub rule: Option<Rule>,
    #[command(flatten)]
    pub agents: AgentArgs,
}

/// The members' agents, for the defragment's free-disk guard.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// A member's etcd-monitor-agent (`MEMBER=URL`, or `URL` for the member it names):
    /// a member whose data dir's filesystem has less free than its database's size is
    /// refused. Repeat or separate with commas; members without one are not checked.
    #[arg(
        long = "agent",
        env = "ETCD_MONITOR_AGENTS",
        value_delimiter = ',',
        value_name = "URL",
        value_parser = common::remote::parse_target
    )]
    pub agents: Vec<common::remote::AgentTarget>,
    /// CA bundle (PEM) the agents' HTTPS certificates are checked against (default: the
    /// system's roots).
    #[arg(long, env = "ETCD_MONITOR_MONITOR_CACERT", value_name = "FILE")]
    pub monitor_cacert: Option<PathBuf>,
    /// File holding the bearer token the agents want (their --auth-token-file).
    #[arg(long, env = "ETCD_MONITOR_MONITOR_TOKEN_FILE", value_name = "FILE")]
    pub monitor_token_file: Option<PathBuf>,
}

impl AgentArgs {
    /// Each member's free disk as its agent reports it (none without --agent).
    async fn free_disk(&self) -> Result<std::collections::BTreeMap<String, u64>, CliError> {
        if self.agents.is_empty() {
            return Ok(Default::default());
        }
        let components = common::remote::Components::from_files(
            self.monitor_cacert.as_deref(),
            self.monitor_token_file.as_deref(),
        )
        .map_err(|e| CliError::BadInput(e.to_string()))?;
        let http = components
            .client(Duration::from_secs(5))
            .map_err(|e| CliError::BadInput(format!("--monitor-cacert: {e}")))?;
        Ok(
            agents::free_disk(&http, &self.agents, Duration::from_secs(5))
                .await
                .map_err(OpError::Agent)?,
        )
    }
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Save a snapshot from a healthy member (a follower if there is one) to FILE.
    Save { file: PathBuf },
    /// Check a snapshot file and print its hash, revision, keys and size.
    Status { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum AlarmCmd {
    /// The raised alarms.
    List,
    /// Disarm every alarm (NOSPACE only once space has been freed).
    Disarm,
}

#[derive(Debug, Subcommand)]
pub enum LeaseCmd {
    /// Grant a lease of TTL seconds.
    Grant {
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        ttl: i64,
    },
    /// Revoke a lease (its keys are deleted).
    Revoke {
        #[arg(value_parser = ops::parse_lease)]
        id: i64,
    },
    /// Time left on a lease and its keys.
    Ttl {
        #[arg(value_parser = ops::parse_lease)]
        id: i64,
    },
    /// Keep a lease alive until Ctrl-C.
    KeepAlive {
        #[arg(value_parser = ops::parse_lease)]
        id: i64,
        /// Refresh once and exit.
        #[arg(long)]
        once: bool,
    },
}

fn parse_rule(raw: &str) -> Result<Rule, String> {
    Rule::parse(raw).map_err(|e| e.to_string())
}

/// Peer URLs, checked to be `http(s)://host:port`.
#[derive(Debug, Clone)]
pub struct PeerUrls(pub Vec<String>);

fn parse_peer_urls(raw: &str) -> Result<PeerUrls, String> {
    let mut urls = Vec::new();
    for u in raw.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        if !u.contains("://") {
            return Err(format!("{u:?} has no scheme (http:// or https://)"));
        }
        let url = common::etcd::parse_endpoint(u, false)?;
        urls.push(common::etcd::endpoint_str(&url));
    }
    if urls.is_empty() {
        return Err("no peer URL given".into());
    }
    Ok(PeerUrls(urls))
}

/// Runs the command line `argv` (program name first); returns the exit code.
pub fn main<I, T>(argv: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    main_with(argv, &mut std::io::stdout(), &mut std::io::stderr())
}

/// [`main`] writing to `out` and `err`.
pub fn main_with<I, T>(argv: I, out: &mut dyn Write, err: &mut dyn Write) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = match Args::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => match common::usage_error_line(PROGRAM, &e) {
            None => {
                let _ = write!(out, "{e}");
                return DONE;
            }
            Some(line) => {
                let _ = writeln!(err, "{line}");
                return BAD_INPUT;
            }
        },
    };
    let cfg = match EtcdConfig::from_args(&args.etcd) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "{PROGRAM}: {e}");
            return BAD_INPUT;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(err, "{PROGRAM}: cannot start the runtime: {e}");
            return FAILED;
        }
    };
    let ctx = Ctx {
        cfg,
        output: args.output,
        force: args.force,
    };
    let result = rt.block_on(run(&ctx, args.command, out));
    // Streams (watch, keep-alive) may leave tasks behind; do not wait for them.
    rt.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(code) => code,
        Err(CliError::BadInput(m)) => {
            let _ = writeln!(err, "{PROGRAM}: {m}");
            BAD_INPUT
        }
        Err(CliError::Op(e)) => {
            let _ = writeln!(err, "{PROGRAM}: {e}");
            FAILED
        }
        Err(CliError::Defrag(e)) => {
            // Its messages are short and carry the cause as a source: print the chain.
            let _ = writeln!(err, "{PROGRAM}: {}", common::etcd::error_chain(&e));
            FAILED
        }
        Err(CliError::Output(e)) => {
            let _ = writeln!(err, "{PROGRAM}: cannot write the output: {e}");
            FAILED
        }
    }
}

/// What every command gets.
pub struct Ctx {
    pub cfg: EtcdConfig,
    pub output: Output,
    pub force: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    BadInput(String),
    #[error(transparent)]
    Op(#[from] OpError),
    #[error(transparent)]
    Output(#[from] std::io::Error),
    #[error(transparent)]
    Defrag(#[from] DefragError),
}

impl From<guard::Refusal> for CliError {
    fn from(r: guard::Refusal) -> Self {
        CliError::Op(OpError::Refused(r))
    }
}

impl From<cluster::GatherError> for CliError {
    fn from(e: cluster::GatherError) -> Self {
        CliError::Op(OpError::Gather(e))
    }
}

impl From<snapshot::SnapshotError> for CliError {
    fn from(e: snapshot::SnapshotError) -> Self {
        CliError::Op(OpError::Snapshot(e))
    }
}

impl Ctx {
    /// Prints `value` as JSON, or `text()` as the table.
    fn print<T: serde::Serialize>(
        &self,
        out: &mut dyn Write,
        value: &T,
        text: impl FnOnce() -> String,
    ) -> Result<(), CliError> {
        let s = match self.output {
            Output::Json => output::json(value),
            Output::Table => text(),
        };
        out.write_all(s.as_bytes())?;
        out.flush()?;
        Ok(())
    }

    async fn view(&self) -> Result<ClusterView, CliError> {
        Ok(cluster::gather(&self.cfg, cluster::default_deadline(&self.cfg)).await?)
    }

    /// `check` unless --force.
    fn guard(&self, check: Result<(), guard::Refusal>) -> Result<(), CliError> {
        match check {
            Err(r) if !self.force => Err(r.into()),
            _ => Ok(()),
        }
    }
}

async fn run(ctx: &Ctx, command: Command, out: &mut dyn Write) -> Result<u8, CliError> {
    match command {
        Command::Status => {
            let view = ctx.view().await?;
            let report = output::status_report(&view);
            ctx.print(out, &report, || output::status_table(&report))?;
        }
        Command::Member(m) => return member(ctx, m, out).await,
        Command::Defrag(d) => return defrag(ctx, d, out).await,
        Command::RecoverNospace(agents) => return recover_nospace(ctx, agents, out).await,
        Command::Compact { retain } => {
            let r = maintenance::compact(&ctx.cfg, retain).await?;
            ctx.print(out, &r, || {
                format!(
                    "compacted to revision {} (current {})\n",
                    r.revision, r.current_revision
                )
            })?;
        }
        Command::Snapshot(SnapshotCmd::Save { file }) => {
            let saved = maintenance::snapshot(&ctx.cfg, &file).await?;
            ctx.print(out, &saved, || {
                format!(
                    "snapshot saved at {} from {} (revision {}, {} keys, {} bytes, hash {:x})\n",
                    saved.file.display(),
                    saved.member,
                    saved.status.revision,
                    saved.status.total_key,
                    saved.status.total_size,
                    saved.status.hash
                )
            })?;
        }
        Command::Snapshot(SnapshotCmd::Status { file }) => {
            let f = file.clone();
            let s = tokio::task::spawn_blocking(move || snapshot::status(&f))
                .await
                .map_err(|e| CliError::BadInput(format!("reading {}: {e}", file.display())))??;
            ctx.print(out, &s, || {
                output::table(
                    &[
                        "HASH",
                        "REVISION",
                        "TOTAL KEYS",
                        "TOTAL SIZE",
                        "SHA256 TRAILER",
                    ],
                    &[vec![
                        format!("{:x}", s.hash),
                        s.revision.to_string(),
                        s.total_key.to_string(),
                        output::human_bytes(s.total_size),
                        if s.sha256_trailer { "ok" } else { "absent" }.into(),
                    ]],
                )
            })?;
        }
        Command::Alarm(AlarmCmd::List) => {
            let view = ctx.view().await?;
            let mut c = ops::connect(&ctx.cfg).await?;
            let alarms = ops::alarms(&mut c).await?;
            let lines = ops::alarm_lines(&view, &alarms);
            ctx.print(out, &lines, || {
                if lines.is_empty() {
                    "no alarms\n".into()
                } else {
                    lines
                        .iter()
                        .map(|a| {
                            format!(
                                "memberID:{} ({}) alarm:{}\n",
                                a.member_id, a.member, a.alarm
                            )
                        })
                        .collect()
                }
            })?;
        }
        Command::Alarm(AlarmCmd::Disarm) => {
            let lines = maintenance::disarm(&ctx.cfg, ctx.force).await?;
            ctx.print(out, &lines, || {
                if lines.is_empty() {
                    "no alarms to disarm\n".into()
                } else {
                    lines
                        .iter()
                        .map(|a| format!("disarmed {} on {}\n", a.alarm, a.member))
                        .collect()
                }
            })?;
        }
        Command::Get { key, prefix } => {
            let mut c = ops::connect(&ctx.cfg).await?;
            let r = ops::get(&mut c, &key, prefix).await?;
            ctx.print(out, &r, || {
                r.kvs
                    .iter()
                    .map(|kv| format!("{}\n{}\n", kv.key, kv.value))
                    .collect()
            })?;
        }
        Command::Put { key, value, lease } => {
            let mut c = ops::connect(&ctx.cfg).await?;
            let r = ops::put(&mut c, &key, &value, lease).await?;
            ctx.print(out, &r, || "OK\n".into())?;
        }
        Command::Del { key, prefix } => {
            let mut c = ops::connect(&ctx.cfg).await?;
            let r = ops::del(&mut c, &key, prefix).await?;
            ctx.print(out, &r, || format!("{}\n", r.deleted))?;
        }
        Command::Watch { key, prefix, count } => {
            return watch(ctx, &key, prefix, count, out).await;
        }
        Command::Lease(l) => return lease(ctx, l, out).await,
        Command::Cas { key, expected, new } => {
            let mut c = ops::connect(&ctx.cfg).await?;
            let r = ops::cas(&mut c, &key, &expected, &new).await?;
            ctx.print(out, &r, || {
                if r.swapped {
                    "swapped\n".into()
                } else {
                    match &r.current {
                        Some(v) => format!("not swapped: the value is {v:?}\n"),
                        None => "not swapped: the key does not exist\n".into(),
                    }
                }
            })?;
            return Ok(if r.swapped { DONE } else { FAILED });
        }
    }
    Ok(DONE)
}

async fn member(ctx: &Ctx, cmd: MemberCmd, out: &mut dyn Write) -> Result<u8, CliError> {
    let mut c = ops::connect(&ctx.cfg).await?;
    match cmd {
        MemberCmd::List => {
            let list = ops::member_list(&mut c).await?;
            ctx.print(out, &list, || {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|m| {
                        vec![
                            format!("{:x}", m.id),
                            m.name.clone(),
                            m.peer_urls.join(","),
                            m.client_urls.join(","),
                            if m.is_learner { "yes" } else { "no" }.into(),
                        ]
                    })
                    .collect();
                output::table(
                    &["ID", "NAME", "PEER URLS", "CLIENT URLS", "LEARNER"],
                    &rows,
                )
            })?;
        }
        MemberCmd::Add {
            name,
            peer_urls,
            learner,
        } => {
            // Adding a voter to a cluster in trouble raises the quorum it needs.
            if !learner {
                let view = ctx.view().await?;
                ctx.guard(guard::healthy(&view))?;
            }
            let added = ops::member_add(&mut c, &name, &peer_urls.0, learner).await?;
            ctx.print(out, &added, || {
                format!(
                    "member {} added with ID {:x}\nETCD_NAME={}\nETCD_INITIAL_CLUSTER={}\nETCD_INITIAL_CLUSTER_STATE=existing\n",
                    name, added.member.id, name, added.initial_cluster
                )
            })?;
        }
        MemberCmd::Remove { name } => {
            let view = ctx.view().await?;
            let id = ops::resolve(&view, &name)?;
            ctx.guard(guard::remove(&view, id))?;
            ops::member_remove(&mut c, id).await?;
            let r = serde_json::json!({ "removed": name, "id": format!("{id:x}") });
            ctx.print(out, &r, || format!("member {name} ({id:x}) removed\n"))?;
        }
        MemberCmd::Promote { name } => {
            let view = ctx.view().await?;
            let id = ops::resolve(&view, &name)?;
            ops::member_promote(&mut c, id).await?;
            let r = serde_json::json!({ "promoted": name, "id": format!("{id:x}") });
            ctx.print(out, &r, || format!("member {name} ({id:x}) promoted\n"))?;
        }
    }
    Ok(DONE)
}

async fn watch(
    ctx: &Ctx,
    key: &str,
    prefix: bool,
    count: Option<u64>,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    let mut c = ops::connect(&ctx.cfg).await?;
    let opts = prefix.then(|| etcd_client::WatchOptions::new().with_prefix());
    let mut stream = c.watch(key, opts).await.map_err(ops::etcd("watch"))?;
    let mut seen = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let msg = tokio::select! {
            _ = &mut ctrl_c => return Ok(DONE),
            m = stream.message() => m.map_err(ops::etcd("watch"))?,
        };
        let Some(resp) = msg else {
            return Err(OpError::Etcd {
                what: "watch",
                message: "the stream ended".into(),
            }
            .into());
        };
        if resp.canceled() {
            return Err(OpError::Etcd {
                what: "watch",
                message: format!("cancelled by the server: {}", resp.cancel_reason()),
            }
            .into());
        }
        for ev in resp.events() {
            let kind = match ev.event_type() {
                etcd_client::EventType::Put => "PUT",
                etcd_client::EventType::Delete => "DELETE",
            };
            let kv = ev.kv().map(ops::Kv::from);
            let line = match ctx.output {
                Output::Json => {
                    let v = serde_json::json!({ "type": kind, "kv": kv });
                    format!("{v}\n")
                }
                Output::Table => match (&kv, kind) {
                    (Some(kv), "PUT") => format!("PUT {} {}\n", kv.key, kv.value),
                    (Some(kv), _) => format!("DELETE {}\n", kv.key),
                    (None, k) => format!("{k}\n"),
                },
            };
            out.write_all(line.as_bytes())?;
            out.flush()?;
            seen += 1;
            if count.is_some_and(|n| seen >= n) {
                return Ok(DONE);
            }
        }
    }
}

async fn lease(ctx: &Ctx, cmd: LeaseCmd, out: &mut dyn Write) -> Result<u8, CliError> {
    let mut c = ops::connect(&ctx.cfg).await?;
    match cmd {
        LeaseCmd::Grant { ttl } => {
            let l = ops::lease_grant(&mut c, ttl).await?;
            ctx.print(out, &l, || {
                format!("lease {} granted with TTL({}s)\n", l.id, l.ttl)
            })?;
        }
        LeaseCmd::Revoke { id } => {
            ops::lease_revoke(&mut c, id).await?;
            let r = serde_json::json!({ "revoked": ops::lease_hex(id) });
            ctx.print(out, &r, || {
                format!("lease {} revoked\n", ops::lease_hex(id))
            })?;
        }
        LeaseCmd::Ttl { id } => {
            let l = ops::lease_ttl(&mut c, id).await?;
            ctx.print(out, &l, || {
                if l.ttl < 0 {
                    format!("lease {} already expired\n", l.id)
                } else {
                    format!(
                        "lease {} granted with TTL({}s), remaining({}s), attached keys({})\n",
                        l.id,
                        l.granted_ttl,
                        l.ttl,
                        l.keys.join(",")
                    )
                }
            })?;
        }
        LeaseCmd::KeepAlive { id, once } => {
            let (mut keeper, mut stream) = c
                .lease_keep_alive(id)
                .await
                .map_err(ops::etcd("lease keep-alive"))?;
            let ctrl_c = tokio::signal::ctrl_c();
            tokio::pin!(ctrl_c);
            loop {
                keeper
                    .keep_alive()
                    .await
                    .map_err(ops::etcd("lease keep-alive"))?;
                let msg = tokio::select! {
                    _ = &mut ctrl_c => return Ok(DONE),
                    m = stream.message() => m.map_err(ops::etcd("lease keep-alive"))?,
                };
                let ttl = msg.map(|m| m.ttl()).unwrap_or(-1);
                if ttl <= 0 {
                    return Err(OpError::Etcd {
                        what: "lease keep-alive",
                        message: format!("lease {} expired or revoked", ops::lease_hex(id)),
                    }
                    .into());
                }
                let r = serde_json::json!({ "id": ops::lease_hex(id), "ttl": ttl });
                ctx.print(out, &r, || {
                    format!("lease {} keepalived with TTL({ttl})\n", ops::lease_hex(id))
                })?;
                if once {
                    return Ok(DONE);
                }
                let wait = Duration::from_secs((ttl as u64 / 3).max(1));
                tokio::select! {
                    _ = &mut ctrl_c => return Ok(DONE),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    Ok(DONE)
}

async fn defrag(ctx: &Ctx, args: DefragArgs, out: &mut dyn Write) -> Result<u8, CliError> {
    let free_disk = args.agents.free_disk().await?;
    let opts = defrag::Options {
        rolling: args.rolling,
        dry_run: args.dry_run,
        rule: args.rule,
        force: ctx.force,
        free_disk,
        ..defrag::Options::default()
    };
    let result = defrag::run(&ctx.cfg, &opts).await;
    print_defrag(ctx, result, out)
}

async fn recover_nospace(
    ctx: &Ctx,
    agents: AgentArgs,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    let free_disk = agents.free_disk().await?;
    let result = defrag::recover_nospace(&ctx.cfg, ctx.force, &free_disk).await;
    print_defrag(ctx, result, out)
}

/// Prints the report, also the partial one of a run that stopped half-way (then the
/// error line says where and why).
fn print_defrag(
    ctx: &Ctx,
    result: Result<defrag::Report, DefragError>,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    match result {
        Ok(report) => {
            ctx.print(out, &report, || report.to_string())?;
            Ok(DONE)
        }
        Err(e) => {
            if let Some(report) = e.report() {
                ctx.print(out, report, || report.to_string())?;
            }
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(argv: &[&str]) -> (u8, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = main_with(argv.iter().copied(), &mut out, &mut err);
        (
            code,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    }

    #[test]
    fn bad_input_exits_2_naming_the_flag() {
        let (code, _, err) = run(&[PROGRAM, "put", "k", "v", "--lease", "xyz"]);
        assert_eq!(code, BAD_INPUT);
        assert!(err.contains("--lease"), "{err}");
        let (code, _, err) = run(&[PROGRAM, "member", "add", "m4", "--peer-urls", "127.0.0.1:1"]);
        assert_eq!(code, BAD_INPUT);
        assert!(err.contains("--peer-urls"), "{err}");
        let (code, _, err) = run(&[PROGRAM, "--endpoints", "ftp://x:1", "status"]);
        assert_eq!(code, BAD_INPUT);
        assert!(err.contains("--endpoints"), "{err}");
        let (code, _, err) = run(&[PROGRAM, "-o", "yaml", "status"]);
        assert_eq!(code, BAD_INPUT);
        assert!(err.contains("--output"), "{err}");
    }

    #[test]
    fn help_exits_0() {
        let (code, out, _) = run(&[PROGRAM, "--help"]);
        assert_eq!(code, DONE);
        assert!(out.contains("recover-nospace"), "{out}");
    }
}
