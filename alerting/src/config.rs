//! The relay's configuration: one YAML file (receivers, routes, dedup window, retry
//! limits) plus flags. Secrets are read here, from files or environment variables only,
//! and every problem names the file and the field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use common::secret::{read_secret_file, Secret};
use common::telemetry::LogFormat;
use serde::Deserialize;

use crate::inhibit::InhibitRule;
use crate::matchers::{parse_matcher, MatchOp, Matcher};
use crate::routing::{GroupBy, GroupSettings, Route, Router};

/// etcd-monitor-relay: receives alerts from Prometheus (it speaks Alertmanager's API) and
/// from Alertmanager webhooks, deduplicates and routes them, and delivers them to Slack,
/// PagerDuty, email and webhooks with retries that survive restarts.
#[derive(Debug, Clone, Parser)]
#[command(name = "etcd-monitor-relay", version)]
pub struct Args {
    /// The YAML configuration file (receivers, routes, dedup window, retry limits).
    #[arg(long, env = "ETCD_MONITOR_RELAY_CONFIG", value_name = "FILE")]
    pub config: PathBuf,

    /// Directory of the durable outbox (a redb database file is kept there).
    #[arg(
        long,
        env = "ETCD_MONITOR_RELAY_DATA_DIR",
        default_value = "./relay-data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,

    /// Address to serve the ingest API, the read API and /metrics on. A non-loopback
    /// address needs --auth-token-file, or --allow-unauthenticated to say that anyone who
    /// reaches it may page the on-call.
    #[arg(
        long,
        env = "ETCD_MONITOR_RELAY_LISTEN",
        default_value = "127.0.0.1:9095",
        value_name = "ADDR:PORT"
    )]
    pub listen: String,

    /// Serve on a non-loopback address without --auth-token-file: anyone who reaches the
    /// relay can then send and resolve pages and silence alerts.
    #[arg(long, env = "ETCD_MONITOR_RELAY_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// Largest request body accepted.
    #[arg(long, env = "ETCD_MONITOR_RELAY_MAX_BODY", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Most alerts kept at once (firing, and resolved ones not yet notified); new alerts
    /// beyond it are refused with 503 until some resolve.
    #[arg(long, env = "ETCD_MONITOR_RELAY_MAX_ALERTS", default_value_t = 10_000)]
    pub max_alerts: usize,

    #[command(flatten)]
    pub server: ServerArgs,

    /// Log line format.
    #[arg(
        long,
        env = "ETCD_MONITOR_RELAY_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

common::server_security_args!(ServerArgs, "ETCD_MONITOR_RELAY_");

/// A configuration problem: the file, the field (or line) and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub field: String,
    pub message: String,
}

/// How email is protected on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailTls {
    /// Plain connection upgraded with STARTTLS; refused if the server does not offer it.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS at all: only when the config says so.
    None,
}

#[derive(Debug, Clone)]
pub struct SlackConfig {
    pub webhook_url: Secret,
    pub channel: Option<String>,
    pub text_template: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PagerDutyConfig {
    pub routing_key: Secret,
    pub url: String,
    pub summary_template: Option<String>,
}

#[derive(Debug, Clone)]
pub struct EmailConfig {
    pub smarthost: String,
    pub from: String,
    pub to: Vec<String>,
    pub tls: EmailTls,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// PEM CA bundle for the SMTP server's certificate (else the system roots).
    pub ca_file: Option<PathBuf>,
    pub subject_template: Option<String>,
    pub body_template: Option<String>,
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// A secret too: heartbeat and chat-ops URLs carry their credential in the path.
    pub url: Secret,
    pub bearer_token: Option<Secret>,
}

#[derive(Debug, Clone)]
pub enum ReceiverKind {
    Slack(SlackConfig),
    PagerDuty(PagerDutyConfig),
    Email(EmailConfig),
    Webhook(WebhookConfig),
    Console,
}

impl ReceiverKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ReceiverKind::Slack(_) => "slack",
            ReceiverKind::PagerDuty(_) => "pagerduty",
            ReceiverKind::Email(_) => "email",
            ReceiverKind::Webhook(_) => "webhook",
            ReceiverKind::Console => "console",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Receiver {
    pub name: String,
    pub kind: ReceiverKind,
    /// Least time between two deliveries to this receiver (Slack: about one a second).
    pub min_interval: Duration,
    /// Whether the receiver hears resolutions (off for a dead man's switch, where any
    /// call counts as a ping).
    pub send_resolved: bool,
}

/// Retry policy for failed deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

/// The validated file.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The default `repeat_interval` of routes.
    pub dedup_window: Duration,
    pub max_delivery_age: Duration,
    pub retry: Retry,
    pub receivers: Vec<Receiver>,
    pub router: Router,
    pub inhibit_rules: Vec<InhibitRule>,
}

impl RelayConfig {
    /// The configuration as `GET /api/v2/status` shows it: in Alertmanager's shape, so
    /// that `amtool config routes` can read it (a route with several receivers becomes one
    /// route per receiver, all but the last with `continue`), with receivers by name only:
    /// never a URL, key or token.
    pub fn summary(&self) -> String {
        use serde_json::{json, Value};
        let dur = |d: Duration| (!d.is_zero()).then(|| humantime::format_duration(d).to_string());
        let mut routes = Vec::new();
        for route in self.router.routes() {
            let n = route.receivers.len();
            for (j, r) in route.receivers.iter().enumerate() {
                let mut v = json!({
                    "receiver": self.receivers.get(*r).map(|x| x.name.as_str()),
                    "matchers": route.matchers.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "group_by": match &route.group.by {
                        GroupBy::All => vec!["...".to_owned()],
                        GroupBy::Labels(l) => l.clone(),
                    },
                    "continue": j + 1 < n || route.continue_,
                    "repeat_interval": dur(route.group.repeat),
                });
                for (k, d) in [
                    ("group_wait", route.group.wait),
                    ("group_interval", route.group.interval),
                ] {
                    if let Some(d) = dur(d) {
                        v[k] = json!(d);
                    }
                }
                routes.push(v);
            }
        }
        let default = self
            .router
            .routes()
            .iter()
            .rev()
            .find(|r| r.matchers.is_empty())
            .and_then(|r| r.receivers.first())
            .or(self
                .router
                .routes()
                .first()
                .and_then(|r| r.receivers.first()))
            .and_then(|i| self.receivers.get(*i))
            .map_or("", |r| r.name.as_str());
        let doc = json!({
            "route": { "receiver": default, "routes": routes },
            "inhibit_rules": self.inhibit_rules.iter().map(|r| json!({
                "source_matchers": r.source.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "target_matchers": r.target.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "equal": r.equal,
            })).collect::<Vec<Value>>(),
            "receivers": self.receivers.iter().map(|r| json!({ "name": r.name })).collect::<Vec<Value>>(),
        });
        serde_yaml_ng::to_string(&doc).unwrap_or_default()
    }

    /// The names of the receivers that `alert` is routed to.
    pub fn receivers_for(&self, alert: &crate::model::Alert) -> Vec<String> {
        self.router
            .route(&alert.labels)
            .into_iter()
            .filter_map(|i| self.receivers.get(i).map(|r| r.name.clone()))
            .collect()
    }
}

/// Everything the relay runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: RelayConfig,
    /// Read again on SIGHUP.
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub max_alerts: usize,
    /// TLS and bearer token of the HTTP server (Prometheus sends the token with
    /// `authorization: {credentials_file: ...}` in its `alertmanagers` entry).
    pub http_security: common::http::ServerSecurity,
    pub log_format: LogFormat,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    dedup_window: Option<String>,
    repeat_interval: Option<String>,
    max_delivery_age: Option<String>,
    retry: Option<RawRetry>,
    group_by: Option<Vec<String>>,
    group_wait: Option<String>,
    group_interval: Option<String>,
    receivers: Vec<RawReceiver>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    inhibit_rules: Vec<RawInhibit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInhibit {
    #[serde(default)]
    source_matchers: Vec<String>,
    #[serde(default)]
    target_matchers: Vec<String>,
    #[serde(default)]
    equal: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    initial_backoff: Option<String>,
    max_backoff: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReceiver {
    name: String,
    min_interval: Option<String>,
    send_resolved: Option<bool>,
    slack: Option<RawSlack>,
    pagerduty: Option<RawPagerDuty>,
    email: Option<RawEmail>,
    webhook: Option<RawWebhook>,
    console: Option<RawConsole>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlack {
    webhook_url_file: Option<PathBuf>,
    webhook_url_env: Option<String>,
    channel: Option<String>,
    text_template: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPagerDuty {
    routing_key_file: Option<PathBuf>,
    routing_key_env: Option<String>,
    url: Option<String>,
    summary_template: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    smarthost: String,
    from: String,
    to: Vec<String>,
    tls: Option<EmailTls>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    ca_file: Option<PathBuf>,
    subject_template: Option<String>,
    body_template: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: Option<String>,
    url_file: Option<PathBuf>,
    url_env: Option<String>,
    bearer_token_file: Option<PathBuf>,
    bearer_token_env: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsole {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(rename = "match", default)]
    match_eq: BTreeMap<String, String>,
    #[serde(default)]
    match_re: BTreeMap<String, String>,
    #[serde(default)]
    matchers: Vec<String>,
    receivers: Vec<String>,
    #[serde(rename = "continue", default)]
    continue_: bool,
    group_by: Option<Vec<String>>,
    group_wait: Option<String>,
    group_interval: Option<String>,
    repeat_interval: Option<String>,
}

struct Ctx<'a> {
    file: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.display().to_string(),
            field: field.into(),
            message: message.into(),
        }
    }

    fn duration(
        &self,
        field: &str,
        raw: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = self.duration_or_zero(field, raw, default)?;
        if raw.is_some() && d.is_zero() {
            return Err(self.err(field, "must be greater than zero"));
        }
        Ok(d)
    }

    /// A duration that may be zero (`group_wait: 0s` notifies at once).
    fn duration_or_zero(
        &self,
        field: &str,
        raw: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match raw {
            None => Ok(default),
            Some("0") => Ok(Duration::ZERO),
            Some(s) => humantime::parse_duration(s)
                .map_err(|e| self.err(field, format!("invalid duration {s:?}: {e}"))),
        }
    }

    fn matchers(&self, field: &str, raw: &[String]) -> Result<Vec<Matcher>, ConfigError> {
        raw.iter()
            .enumerate()
            .map(|(j, m)| {
                parse_matcher(m).map_err(|e| self.err(format!("{field}[{j}]"), e.to_string()))
            })
            .collect()
    }

    fn group_by(&self, field: &str, raw: Vec<String>) -> Result<GroupBy, ConfigError> {
        if raw.iter().any(|l| l == "...") {
            if raw.len() > 1 {
                return Err(self.err(field, "'...' groups by every label and stands alone"));
            }
            return Ok(GroupBy::All);
        }
        if let Some(l) = raw.iter().find(|l| l.is_empty()) {
            return Err(self.err(field, format!("invalid label name {l:?}")));
        }
        Ok(GroupBy::Labels(raw))
    }

    /// A secret from `<name>_file` or `<name>_env` (exactly one).
    fn secret(
        &self,
        field: &str,
        name: &str,
        file: Option<&Path>,
        env: Option<&str>,
        required: bool,
    ) -> Result<Option<Secret>, ConfigError> {
        match (file, env) {
            (Some(_), Some(_)) => {
                Err(self.err(field, format!("give {name}_file or {name}_env, not both")))
            }
            (Some(p), None) => {
                let s = read_secret_file(p).map_err(|e| {
                    self.err(
                        format!("{field}.{name}_file"),
                        format!("cannot read {}: {e}", p.display()),
                    )
                })?;
                if s.expose().trim().is_empty() {
                    return Err(self.err(
                        format!("{field}.{name}_file"),
                        format!("{} is empty", p.display()),
                    ));
                }
                Ok(Some(Secret::new(s.expose().trim())))
            }
            (None, Some(var)) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(Some(Secret::new(v.trim()))),
                Ok(_) => Err(self.err(
                    format!("{field}.{name}_env"),
                    format!("environment variable {var} is empty"),
                )),
                Err(_) => Err(self.err(
                    format!("{field}.{name}_env"),
                    format!("environment variable {var} is not set"),
                )),
            },
            (None, None) if required => Err(self.err(
                field,
                format!("{name}_file or {name}_env is required (secrets are never inline)"),
            )),
            (None, None) => Ok(None),
        }
    }

    fn template(&self, field: &str, t: &Option<String>) -> Result<(), ConfigError> {
        if let Some(src) = t {
            minijinja::Environment::new()
                .template_from_str(src)
                .map_err(|e| self.err(field, format!("invalid template: {e}")))?;
        }
        Ok(())
    }
}

fn http_url(ctx: &Ctx<'_>, field: &str, raw: &str) -> Result<String, ConfigError> {
    let u = reqwest::Url::parse(raw)
        .map_err(|e| ctx.err(field, format!("invalid URL {raw:?}: {e}")))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(ctx.err(
            field,
            format!("invalid URL {raw:?}: scheme must be http or https"),
        ));
    }
    Ok(raw.to_owned())
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string of `v` (`$$` is a literal
/// `$`); `path` names the place for errors.
fn expand_env(ctx: &Ctx<'_>, v: &mut serde_yaml_ng::Value, path: &str) -> Result<(), ConfigError> {
    use serde_yaml_ng::Value;
    match v {
        Value::String(s) => {
            if s.contains('$') {
                *s = expand_str(s).map_err(|m| ctx.err(path, m))?;
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_env(ctx, item, &format!("{path}[{i}]"))?;
            }
        }
        Value::Mapping(m) => {
            for (k, item) in m.iter_mut() {
                let key = k.as_str().unwrap_or("?");
                let p = if path.is_empty() {
                    key.to_owned()
                } else {
                    format!("{path}.{key}")
                };
                expand_env(ctx, item, &p)?;
            }
        }
        Value::Tagged(t) => expand_env(ctx, &mut t.value, path)?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// Expands the variables of one string.
pub fn expand_str(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!("invalid variable name {name:?}"));
            }
            match (std::env::var(name), default) {
                (Ok(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Ok(v), _) => out.push_str(&v),
                (Err(_), Some(d)) => out.push_str(d),
                (Err(_), None) => {
                    return Err(format!(
                        "environment variable {name} is not set (write ${{{name}:-default}} for a default)"
                    ))
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Reads, expands and validates `file`.
pub fn load(file: &Path) -> Result<RelayConfig, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.display().to_string(),
        field: "--config".into(),
        message: format!("cannot read: {e}"),
    })?;
    parse(file, &text)
}

/// Parses and validates the YAML text of `file`.
pub fn parse(file: &Path, text: &str) -> Result<RelayConfig, ConfigError> {
    let ctx = Ctx { file };
    let yaml_err = |e: serde_yaml_ng::Error| {
        let field = e
            .location()
            .map(|l| format!("line {} column {}", l.line(), l.column()))
            .unwrap_or_else(|| "document".into());
        ctx.err(field, e.to_string())
    };
    // Shape and types first, on the text as written, so errors carry a line.
    serde_yaml_ng::from_str::<RawConfig>(text).map_err(yaml_err)?;
    let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(yaml_err)?;
    expand_env(&ctx, &mut value, "")?;
    let raw: RawConfig = serde_yaml_ng::from_value(value).map_err(|e| {
        ctx.err(
            "document",
            format!("after expanding environment variables: {e}"),
        )
    })?;
    let dedup_window = ctx.duration(
        "dedup_window",
        raw.repeat_interval
            .as_deref()
            .or(raw.dedup_window.as_deref()),
        Duration::from_secs(300),
    )?;
    if raw.repeat_interval.is_some() && raw.dedup_window.is_some() {
        return Err(ctx.err(
            "repeat_interval",
            "give repeat_interval or dedup_window (the same setting), not both",
        ));
    }
    let defaults = GroupSettings {
        by: ctx.group_by(
            "group_by",
            raw.group_by.unwrap_or_else(|| vec!["...".into()]),
        )?,
        wait: ctx.duration_or_zero("group_wait", raw.group_wait.as_deref(), Duration::ZERO)?,
        interval: ctx.duration_or_zero(
            "group_interval",
            raw.group_interval.as_deref(),
            Duration::ZERO,
        )?,
        repeat: dedup_window,
    };
    let max_delivery_age = ctx.duration(
        "max_delivery_age",
        raw.max_delivery_age.as_deref(),
        Duration::from_secs(24 * 3600),
    )?;
    let retry = Retry {
        initial_backoff: ctx.duration(
            "retry.initial_backoff",
            raw.retry
                .as_ref()
                .and_then(|r| r.initial_backoff.as_deref()),
            Duration::from_secs(1),
        )?,
        max_backoff: ctx.duration(
            "retry.max_backoff",
            raw.retry.as_ref().and_then(|r| r.max_backoff.as_deref()),
            Duration::from_secs(300),
        )?,
    };
    if raw.receivers.is_empty() {
        return Err(ctx.err("receivers", "at least one receiver is required"));
    }
    let mut receivers: Vec<Receiver> = Vec::new();
    for (i, r) in raw.receivers.into_iter().enumerate() {
        let field = format!("receivers[{i}]");
        if r.name.trim().is_empty() {
            return Err(ctx.err(format!("{field}.name"), "must not be empty"));
        }
        if receivers.iter().any(|x| x.name == r.name) {
            return Err(ctx.err(
                format!("{field}.name"),
                format!("receiver {:?} is defined twice", r.name),
            ));
        }
        let kinds = [
            r.slack.is_some(),
            r.pagerduty.is_some(),
            r.email.is_some(),
            r.webhook.is_some(),
            r.console.is_some(),
        ]
        .iter()
        .filter(|k| **k)
        .count();
        if kinds != 1 {
            return Err(ctx.err(
                &field,
                format!(
                    "receiver {:?} needs exactly one of slack, pagerduty, email, webhook, console",
                    r.name
                ),
            ));
        }
        let (kind, default_interval) = if let Some(s) = r.slack {
            let f = format!("{field}.slack");
            let url = ctx
                .secret(
                    &f,
                    "webhook_url",
                    s.webhook_url_file.as_deref(),
                    s.webhook_url_env.as_deref(),
                    true,
                )?
                .ok_or_else(|| ctx.err(&f, "webhook_url_file or webhook_url_env is required"))?;
            http_url(&ctx, &format!("{f}.webhook_url"), url.expose())
                // Never echo the URL itself: it is the secret.
                .map_err(|_| ctx.err(format!("{f}.webhook_url"), "is not an http(s) URL"))?;
            ctx.template(&format!("{f}.text_template"), &s.text_template)?;
            (
                ReceiverKind::Slack(SlackConfig {
                    webhook_url: url,
                    channel: s.channel,
                    text_template: s.text_template,
                }),
                Duration::from_secs(1),
            )
        } else if let Some(p) = r.pagerduty {
            let f = format!("{field}.pagerduty");
            let key = ctx
                .secret(
                    &f,
                    "routing_key",
                    p.routing_key_file.as_deref(),
                    p.routing_key_env.as_deref(),
                    true,
                )?
                .ok_or_else(|| ctx.err(&f, "routing_key_file or routing_key_env is required"))?;
            let url = http_url(
                &ctx,
                &format!("{f}.url"),
                p.url
                    .as_deref()
                    .unwrap_or("https://events.pagerduty.com/v2/enqueue"),
            )?;
            ctx.template(&format!("{f}.summary_template"), &p.summary_template)?;
            (
                ReceiverKind::PagerDuty(PagerDutyConfig {
                    routing_key: key,
                    url,
                    summary_template: p.summary_template,
                }),
                Duration::from_millis(500),
            )
        } else if let Some(e) = r.email {
            let f = format!("{field}.email");
            if !e.smarthost.contains(':') {
                return Err(ctx.err(
                    format!("{f}.smarthost"),
                    format!("{:?} needs a port (host:port)", e.smarthost),
                ));
            }
            if e.to.is_empty() {
                return Err(ctx.err(format!("{f}.to"), "at least one address is required"));
            }
            for (j, a) in std::iter::once(&e.from).chain(e.to.iter()).enumerate() {
                if !a.contains('@') {
                    let which = if j == 0 {
                        "from".to_owned()
                    } else {
                        format!("to[{}]", j - 1)
                    };
                    return Err(ctx.err(
                        format!("{f}.{which}"),
                        format!("{a:?} is not an email address"),
                    ));
                }
            }
            let password = ctx.secret(
                &f,
                "password",
                e.password_file.as_deref(),
                e.password_env.as_deref(),
                false,
            )?;
            if password.is_some() && e.username.is_none() {
                return Err(ctx.err(format!("{f}.username"), "is required with a password"));
            }
            if let Some(ca) = &e.ca_file {
                std::fs::read(ca).map_err(|err| {
                    ctx.err(
                        format!("{f}.ca_file"),
                        format!("cannot read {}: {err}", ca.display()),
                    )
                })?;
            }
            ctx.template(&format!("{f}.subject_template"), &e.subject_template)?;
            ctx.template(&format!("{f}.body_template"), &e.body_template)?;
            (
                ReceiverKind::Email(EmailConfig {
                    smarthost: e.smarthost,
                    from: e.from,
                    to: e.to,
                    tls: e.tls.unwrap_or(EmailTls::Starttls),
                    username: e.username,
                    password,
                    ca_file: e.ca_file,
                    subject_template: e.subject_template,
                    body_template: e.body_template,
                }),
                Duration::ZERO,
            )
        } else if let Some(w) = r.webhook {
            let f = format!("{field}.webhook");
            let url = match w.url {
                Some(u) if w.url_file.is_none() && w.url_env.is_none() => Secret::new(u),
                Some(_) => {
                    return Err(ctx.err(&f, "give one of url, url_file and url_env"));
                }
                None => ctx
                    .secret(&f, "url", w.url_file.as_deref(), w.url_env.as_deref(), true)?
                    .ok_or_else(|| ctx.err(&f, "url, url_file or url_env is required"))?,
            };
            http_url(&ctx, &format!("{f}.url"), url.expose())
                // The URL may carry a credential: never echo it.
                .map_err(|_| ctx.err(format!("{f}.url"), "is not an http(s) URL"))?;
            let bearer_token = ctx.secret(
                &f,
                "bearer_token",
                w.bearer_token_file.as_deref(),
                w.bearer_token_env.as_deref(),
                false,
            )?;
            (
                ReceiverKind::Webhook(WebhookConfig { url, bearer_token }),
                Duration::ZERO,
            )
        } else {
            (ReceiverKind::Console, Duration::ZERO)
        };
        let min_interval = match r.min_interval.as_deref() {
            Some("0") | Some("0s") => Duration::ZERO,
            other => ctx.duration(&format!("{field}.min_interval"), other, default_interval)?,
        };
        receivers.push(Receiver {
            name: r.name,
            kind,
            min_interval,
            send_resolved: r.send_resolved.unwrap_or(true),
        });
    }
    let mut routes = Vec::new();
    for (i, r) in raw.routes.into_iter().enumerate() {
        let field = format!("routes[{i}]");
        if r.receivers.is_empty() {
            return Err(ctx.err(
                format!("{field}.receivers"),
                "at least one receiver is required",
            ));
        }
        let mut targets = Vec::new();
        for name in &r.receivers {
            let idx = receivers
                .iter()
                .position(|x| &x.name == name)
                .ok_or_else(|| {
                    ctx.err(
                        format!("{field}.receivers"),
                        format!("unknown receiver {name:?}"),
                    )
                })?;
            targets.push(idx);
        }
        let mut matchers = Vec::new();
        for (k, v) in r.match_eq {
            let m = Matcher::new(&k, MatchOp::Equal, &v)
                .map_err(|e| ctx.err(format!("{field}.match.{k}"), e.to_string()))?;
            matchers.push(m);
        }
        for (k, v) in r.match_re {
            let m = Matcher::new(&k, MatchOp::Regex, &v)
                .map_err(|e| ctx.err(format!("{field}.match_re.{k}"), e.to_string()))?;
            matchers.push(m);
        }
        matchers.extend(ctx.matchers(&format!("{field}.matchers"), &r.matchers)?);
        let group = GroupSettings {
            by: match r.group_by {
                Some(g) => ctx.group_by(&format!("{field}.group_by"), g)?,
                None => defaults.by.clone(),
            },
            wait: ctx.duration_or_zero(
                &format!("{field}.group_wait"),
                r.group_wait.as_deref(),
                defaults.wait,
            )?,
            interval: ctx.duration_or_zero(
                &format!("{field}.group_interval"),
                r.group_interval.as_deref(),
                defaults.interval,
            )?,
            repeat: ctx.duration(
                &format!("{field}.repeat_interval"),
                r.repeat_interval.as_deref(),
                defaults.repeat,
            )?,
        };
        routes.push(Route {
            matchers,
            receivers: targets,
            continue_: r.continue_,
            group,
            key: String::new(),
        });
    }
    if routes.is_empty() {
        // Without routes, every alert goes to every receiver.
        routes.push(Route {
            matchers: Vec::new(),
            receivers: (0..receivers.len()).collect(),
            continue_: false,
            group: defaults,
            key: String::new(),
        });
    }
    let mut inhibit_rules = Vec::new();
    for (i, r) in raw.inhibit_rules.into_iter().enumerate() {
        let field = format!("inhibit_rules[{i}]");
        let source = ctx.matchers(&format!("{field}.source_matchers"), &r.source_matchers)?;
        let target = ctx.matchers(&format!("{field}.target_matchers"), &r.target_matchers)?;
        if source.is_empty() || target.is_empty() {
            return Err(ctx.err(
                &field,
                "source_matchers and target_matchers are both required",
            ));
        }
        inhibit_rules.push(InhibitRule {
            source,
            target,
            equal: r.equal,
        });
    }
    Ok(RelayConfig {
        dedup_window,
        max_delivery_age,
        retry,
        receivers,
        router: Router::new(routes),
        inhibit_rules,
    })
}

impl Config {
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let flag_err = |field: &str, message: String| ConfigError {
            file: "flags".into(),
            field: field.into(),
            message,
        };
        let file = load(&args.config)?;
        let listen: SocketAddr = args.listen.parse().map_err(|e| {
            flag_err(
                "--listen",
                format!("invalid address {:?}: {e}", args.listen),
            )
        })?;
        if args.max_body_bytes < 1024 {
            return Err(flag_err("--max-body-bytes", "must be at least 1024".into()));
        }
        if args.max_alerts == 0 {
            return Err(flag_err("--max-alerts", "must be at least 1".into()));
        }
        let http_security = args
            .server
            .load()
            .map_err(|e| flag_err(e.flag(), e.message()))?;
        if !listen.ip().is_loopback()
            && http_security.tokens.is_empty()
            && !args.allow_unauthenticated
        {
            return Err(flag_err(
                "--listen",
                format!(
                    "{listen} is reachable from other hosts and no --auth-token-file is given: \
                     anyone could page the on-call or resolve live incidents; give \
                     --auth-token-file, or --allow-unauthenticated to accept that"
                ),
            ));
        }
        Ok(Config {
            file,
            config_path: args.config,
            data_dir: args.data_dir,
            listen,
            http_security,
            max_body_bytes: args.max_body_bytes,
            max_alerts: args.max_alerts,
            log_format: args.log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_variables_expand_with_defaults_and_dollar_escapes() {
        std::env::set_var("ETCD_MONITOR_RELAY_TEST_X", "value");
        assert_eq!(
            expand_str("a ${ETCD_MONITOR_RELAY_TEST_X} b").as_deref(),
            Ok("a value b")
        );
        assert_eq!(
            expand_str("${ETCD_MONITOR_RELAY_TEST_UNSET:-https://d.example}").as_deref(),
            Ok("https://d.example")
        );
        assert_eq!(expand_str("cost $$5 $x").as_deref(), Ok("cost $5 $x"));
        let e = expand_str("${ETCD_MONITOR_RELAY_TEST_UNSET}").expect_err("unset");
        assert!(
            e.contains("ETCD_MONITOR_RELAY_TEST_UNSET is not set"),
            "{e}"
        );
        assert!(expand_str("${A-B}").is_err());
        assert!(expand_str("${OPEN").is_err());
    }

    #[test]
    fn grouping_defaults_and_per_route_settings() {
        let cfg = parse(
            Path::new("relay.yml"),
            "group_wait: 10s\nrepeat_interval: 1h\nreceivers:\n  - name: log\n    console: {}\nroutes:\n  - matchers: ['severity=\"critical\"']\n    group_by: [cluster]\n    group_interval: 1m\n    receivers: [log]\n  - receivers: [log]\ninhibit_rules:\n  - source_matchers: ['alertname=\"A\"']\n    target_matchers: ['alertname=\"B\"']\n    equal: [cluster]\n",
        )
        .expect("valid");
        let r = cfg.router.routes();
        assert_eq!(r[0].group.by, GroupBy::Labels(vec!["cluster".into()]));
        assert_eq!(r[0].group.wait, Duration::from_secs(10));
        assert_eq!(r[0].group.interval, Duration::from_secs(60));
        assert_eq!(r[0].group.repeat, Duration::from_secs(3600));
        assert_eq!(r[1].group.by, GroupBy::All);
        assert_eq!(r[1].group.interval, Duration::ZERO);
        assert_eq!(cfg.inhibit_rules.len(), 1);
    }

    #[test]
    fn bad_matchers_and_group_by_name_the_field() {
        for (yaml, want) in [
            (
                "receivers: [{name: l, console: {}}]\nroutes: [{matchers: ['a~b'], receivers: [l]}]\n",
                "routes[0].matchers[0]",
            ),
            (
                "receivers: [{name: l, console: {}}]\nroutes: [{group_by: ['...', a], receivers: [l]}]\n",
                "routes[0].group_by",
            ),
            (
                "receivers: [{name: l, console: {}}]\ninhibit_rules: [{source_matchers: ['a=\"b\"']}]\n",
                "inhibit_rules[0]",
            ),
            (
                "receivers: [{name: l, webhook: {url: '${ETCD_MONITOR_RELAY_TEST_NOPE}'}}]\n",
                "receivers[0].webhook.url",
            ),
        ] {
            let e = parse(Path::new("relay.yml"), yaml).expect_err(yaml);
            assert!(e.to_string().contains(want), "{e} lacks {want}");
        }
    }
}
