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

use crate::routing::{Matcher, Route, Router};

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

    /// Address to serve the ingest API, the read API and /metrics on.
    #[arg(
        long,
        env = "ETCD_MONITOR_RELAY_LISTEN",
        default_value = "0.0.0.0:9095",
        value_name = "ADDR:PORT"
    )]
    pub listen: String,

    /// Largest request body accepted.
    #[arg(long, env = "ETCD_MONITOR_RELAY_MAX_BODY", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,

    #[command(flatten)]
    pub server: ServerArgs,

    /// Log line format.
    #[arg(
        long,
        env = "ETCD_MONITOR_LOG_FORMAT",
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
    pub url: String,
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
    pub dedup_window: Duration,
    pub max_delivery_age: Duration,
    pub retry: Retry,
    pub receivers: Vec<Receiver>,
    pub router: Router,
}

impl RelayConfig {
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
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// TLS and bearer token of the HTTP server (Prometheus sends the token with
    /// `authorization: {credentials_file: ...}` in its `alertmanagers` entry).
    pub http_security: common::http::ServerSecurity,
    pub log_format: LogFormat,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    dedup_window: Option<String>,
    max_delivery_age: Option<String>,
    retry: Option<RawRetry>,
    receivers: Vec<RawReceiver>,
    #[serde(default)]
    routes: Vec<RawRoute>,
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
    url: String,
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
    receivers: Vec<String>,
    #[serde(rename = "continue", default)]
    continue_: bool,
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
        match raw {
            None => Ok(default),
            Some(s) => {
                let d = humantime::parse_duration(s)
                    .map_err(|e| self.err(field, format!("invalid duration {s:?}: {e}")))?;
                if d.is_zero() {
                    return Err(self.err(field, "must be greater than zero"));
                }
                Ok(d)
            }
        }
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

/// Parses and validates the YAML text of `file`.
pub fn parse(file: &Path, text: &str) -> Result<RelayConfig, ConfigError> {
    let ctx = Ctx { file };
    let raw: RawConfig = serde_yaml_ng::from_str(text).map_err(|e| {
        let field = e
            .location()
            .map(|l| format!("line {} column {}", l.line(), l.column()))
            .unwrap_or_else(|| "document".into());
        ctx.err(field, e.to_string())
    })?;
    let dedup_window = ctx.duration(
        "dedup_window",
        raw.dedup_window.as_deref(),
        Duration::from_secs(300),
    )?;
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
            let url = http_url(&ctx, &format!("{f}.url"), &w.url)?;
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
            matchers.push(Matcher::Equal(k, v));
        }
        for (k, v) in r.match_re {
            let re = regex::Regex::new(&format!("^(?:{v})$")).map_err(|e| {
                // The regex crate draws a caret diagram over several lines; its last line
                // says what is wrong.
                let text = e.to_string();
                let why = text
                    .lines()
                    .map(str::trim)
                    .rfind(|l| !l.is_empty())
                    .unwrap_or("invalid")
                    .trim_start_matches("error: ")
                    .to_owned();
                ctx.err(
                    format!("{field}.match_re.{k}"),
                    format!("invalid regex {v:?}: {why}"),
                )
            })?;
            matchers.push(Matcher::Regex(k, re));
        }
        routes.push(Route {
            matchers,
            receivers: targets,
            continue_: r.continue_,
        });
    }
    if routes.is_empty() {
        // Without routes, every alert goes to every receiver.
        routes.push(Route {
            matchers: Vec::new(),
            receivers: (0..receivers.len()).collect(),
            continue_: false,
        });
    }
    Ok(RelayConfig {
        dedup_window,
        max_delivery_age,
        retry,
        receivers,
        router: Router::new(routes),
    })
}

impl Config {
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let flag_err = |field: &str, message: String| ConfigError {
            file: "flags".into(),
            field: field.into(),
            message,
        };
        let text = std::fs::read_to_string(&args.config).map_err(|e| ConfigError {
            file: args.config.display().to_string(),
            field: "--config".into(),
            message: format!("cannot read: {e}"),
        })?;
        let file = parse(&args.config, &text)?;
        let listen: SocketAddr = args.listen.parse().map_err(|e| {
            flag_err(
                "--listen",
                format!("invalid address {:?}: {e}", args.listen),
            )
        })?;
        if args.max_body_bytes < 1024 {
            return Err(flag_err("--max-body-bytes", "must be at least 1024".into()));
        }
        let http_security = args
            .server
            .load()
            .map_err(|e| flag_err(e.flag(), e.message()))?;
        Ok(Config {
            file,
            data_dir: args.data_dir,
            listen,
            http_security,
            max_body_bytes: args.max_body_bytes,
            log_format: args.log_format,
        })
    }
}
