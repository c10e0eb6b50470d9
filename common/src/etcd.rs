//! etcd connection options shared by the exporter and the bench: the flags, their
//! validation into an [`EtcdConfig`], and construction of gRPC clients and of the HTTP
//! client used for a member's `/metrics` and `/health`.
//!
//! Validation happens once, at start: files are read and parsed here so that a missing
//! certificate or an unreadable password file fails with one line naming the flag, instead
//! of surfacing later as a connection error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use url::Url;

use crate::secret::{read_secret_file, Secret};

/// The etcd connection flags, the same in every binary that talks to etcd.
#[derive(Debug, Clone, clap::Args)]
pub struct EtcdArgs {
    /// etcd client endpoints, comma separated (`host:port`, `http://host:port` or
    /// `https://host:port`). Members not listed are discovered through the member list.
    #[arg(
        long,
        env = "ETCD_MONITOR_ENDPOINTS",
        default_value = "http://127.0.0.1:2379",
        value_name = "URLS"
    )]
    pub endpoints: String,

    /// PEM file with the CA certificate(s) that signed the members' certificates.
    #[arg(long, env = "ETCD_MONITOR_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,

    /// PEM client certificate, for members that require client-certificate auth.
    #[arg(long, env = "ETCD_MONITOR_CERT", value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,

    /// PEM private key of the client certificate.
    #[arg(long, env = "ETCD_MONITOR_KEY", value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,

    /// Accept any server certificate. Dangerous: only for test clusters.
    #[arg(long, env = "ETCD_MONITOR_INSECURE_SKIP_TLS_VERIFY")]
    pub insecure_skip_tls_verify: bool,

    /// etcd user name, when etcd auth is enabled (the password comes from --password-file).
    #[arg(long, env = "ETCD_MONITOR_USER", requires = "password_file")]
    pub user: Option<String>,

    /// File holding the etcd user's password (one line).
    #[arg(
        long,
        env = "ETCD_MONITOR_PASSWORD_FILE",
        value_name = "FILE",
        requires = "user"
    )]
    pub password_file: Option<PathBuf>,

    /// Time allowed to establish a connection to a member.
    #[arg(long, env = "ETCD_MONITOR_DIAL_TIMEOUT", default_value = "2s", value_parser = crate::parse_duration)]
    pub dial_timeout: Duration,

    /// Time allowed for one request to a member.
    #[arg(long, env = "ETCD_MONITOR_COMMAND_TIMEOUT", default_value = "5s", value_parser = crate::parse_duration)]
    pub command_timeout: Duration,
}

/// A configuration problem, naming the flag (and file) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{flag}: {message}")]
    Invalid { flag: &'static str, message: String },
    #[error("{flag}: cannot read {path}: {source}")]
    File {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    /// The flag the error is about.
    pub fn flag(&self) -> &'static str {
        match self {
            ConfigError::Invalid { flag, .. } | ConfigError::File { flag, .. } => flag,
        }
    }

    /// What is wrong, without the flag.
    pub fn message(&self) -> String {
        match self {
            ConfigError::Invalid { message, .. } => message.clone(),
            ConfigError::File { path, source, .. } => {
                format!("cannot read {}: {source}", path.display())
            }
        }
    }
}

/// Client TLS material, read and checked at start.
#[derive(Clone)]
pub struct TlsMaterial {
    pub ca_pem: Option<Vec<u8>>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca", &self.ca_pem.is_some())
            .field("client_cert", &self.identity.is_some())
            .finish()
    }
}

/// Validated etcd connection settings.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    pub endpoints: Vec<Url>,
    pub tls: TlsMaterial,
    pub insecure_skip_tls_verify: bool,
    pub user: Option<(String, Secret)>,
    pub dial_timeout: Duration,
    pub command_timeout: Duration,
}

fn read_file(flag: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::File {
        flag,
        path: path.to_owned(),
        source,
    })
}

/// Parses one endpoint. Without a scheme, `https` is assumed when TLS material is given.
pub fn parse_endpoint(raw: &str, tls: bool) -> Result<Url, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("empty endpoint".into());
    }
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else if tls {
        format!("https://{raw}")
    } else {
        format!("http://{raw}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| format!("invalid endpoint {raw:?}: {e}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!(
            "invalid endpoint {raw:?}: scheme must be http or https, not {:?}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("invalid endpoint {raw:?}: no host"));
    }
    if url.port().is_none() {
        return Err(format!(
            "invalid endpoint {raw:?}: no port (etcd's is 2379)"
        ));
    }
    if url.path() != "/" && !url.path().is_empty() {
        return Err(format!(
            "invalid endpoint {raw:?}: unexpected path {:?}",
            url.path()
        ));
    }
    if url.query().is_some() || !url.username().is_empty() {
        return Err(format!(
            "invalid endpoint {raw:?}: only scheme://host:port is allowed"
        ));
    }
    Ok(url)
}

/// Reads the CA bundle given by `flag` and checks that it holds PEM certificates.
pub fn read_ca_bundle(flag: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let pem = read_file(flag, path)?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ConfigError::Invalid {
        flag,
        message: format!("{} is not a PEM certificate: {e}", path.display()),
    })?;
    if certs.is_empty() {
        return Err(ConfigError::Invalid {
            flag,
            message: format!("{} holds no PEM certificate", path.display()),
        });
    }
    Ok(pem)
}

/// Reads the bearer token given by `flag`: surrounding whitespace trimmed, at least
/// `min_len` characters, and usable in an `Authorization` header.
pub fn read_token_file(
    flag: &'static str,
    path: &Path,
    min_len: usize,
) -> Result<Secret, ConfigError> {
    let raw = read_secret_file(path).map_err(|source| ConfigError::File {
        flag,
        path: path.to_owned(),
        source,
    })?;
    let token = raw.expose().trim();
    let invalid = |what: &str| ConfigError::Invalid {
        flag,
        message: format!("{}: {what}", path.display()),
    };
    if token.is_empty() {
        return Err(invalid("the token is empty"));
    }
    if token.len() < min_len {
        return Err(invalid(&format!(
            "the token must be at least {min_len} characters"
        )));
    }
    if reqwest::header::HeaderValue::from_str(token).is_err() {
        return Err(invalid("the token is not a valid header value"));
    }
    Ok(Secret::new(token))
}

impl EtcdConfig {
    pub fn from_args(args: &EtcdArgs) -> Result<Self, ConfigError> {
        let ca_pem = match &args.cacert {
            Some(p) => Some(read_ca_bundle("--cacert", p)?),
            None => None,
        };
        let identity = match (&args.cert, &args.key) {
            (Some(c), Some(k)) => {
                let cert = read_file("--cert", c)?;
                let key = read_file("--key", k)?;
                if reqwest::Certificate::from_pem_bundle(&cert).map_or(true, |v| v.is_empty()) {
                    return Err(ConfigError::Invalid {
                        flag: "--cert",
                        message: format!("{} holds no PEM certificate", c.display()),
                    });
                }
                let mut both = cert.clone();
                both.push(b'\n');
                both.extend_from_slice(&key);
                reqwest::Identity::from_pem(&both).map_err(|e| ConfigError::Invalid {
                    flag: "--cert/--key",
                    message: format!(
                        "{} and {} are not a PEM certificate and its key: {e}",
                        c.display(),
                        k.display()
                    ),
                })?;
                Some((cert, key))
            }
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    flag: "--cert/--key",
                    message: "both must be given".into(),
                })
            }
        };
        let tls = TlsMaterial { ca_pem, identity };
        let tls_given = tls.ca_pem.is_some() || tls.identity.is_some();
        let mut endpoints = Vec::new();
        for raw in args.endpoints.split(',') {
            let url = parse_endpoint(raw, tls_given).map_err(|message| ConfigError::Invalid {
                flag: "--endpoints",
                message,
            })?;
            if !endpoints.contains(&url) {
                endpoints.push(url);
            }
        }
        let user = match (&args.user, &args.password_file) {
            (Some(u), Some(p)) => {
                if u.is_empty() {
                    return Err(ConfigError::Invalid {
                        flag: "--user",
                        message: "empty user name".into(),
                    });
                }
                let pw = read_secret_file(p).map_err(|source| ConfigError::File {
                    flag: "--password-file",
                    path: p.clone(),
                    source,
                })?;
                if pw.expose().is_empty() {
                    return Err(ConfigError::Invalid {
                        flag: "--password-file",
                        message: format!("{} is empty", p.display()),
                    });
                }
                Some((u.clone(), pw))
            }
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    flag: "--user/--password-file",
                    message: "both must be given".into(),
                })
            }
        };
        for (flag, d) in [
            ("--dial-timeout", args.dial_timeout),
            ("--command-timeout", args.command_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Invalid {
                    flag,
                    message: "must be greater than zero".into(),
                });
            }
        }
        if args.insecure_skip_tls_verify && user.is_some() {
            tracing::warn!(
                "--insecure-skip-tls-verify with --user: the etcd password goes to servers whose certificates are not checked"
            );
        }
        if args.insecure_skip_tls_verify {
            // Build the TLS config once now so that a bad client certificate is reported
            // at start like on the verifying path.
            crate::insecure::client_config(tls.identity.as_ref()).map_err(|message| {
                ConfigError::Invalid {
                    flag: "--cert/--key",
                    message,
                }
            })?;
        }
        Ok(Self {
            endpoints,
            tls,
            insecure_skip_tls_verify: args.insecure_skip_tls_verify,
            user,
            dial_timeout: args.dial_timeout,
            command_timeout: args.command_timeout,
        })
    }

    /// tonic TLS settings: the CA given (else the system roots) and the client certificate.
    fn tls_options(&self) -> TlsOptions {
        let mut tls = TlsOptions::new();
        match &self.tls.ca_pem {
            Some(ca) => tls = tls.ca_certificate(Certificate::from_pem(ca)),
            None => tls = tls.with_native_roots(),
        }
        if let Some((cert, key)) = &self.tls.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        tls
    }

    /// The etcd user, if any, on `opts`.
    fn with_auth(&self, opts: ConnectOptions) -> ConnectOptions {
        match &self.user {
            Some((user, pw)) => opts
                .with_user(user.clone(), pw.expose().to_owned())
                .with_auto_token_refresh(true),
            None => opts,
        }
    }

    /// Waits for `connect` (which authenticates when a user is set) for at most the dial
    /// plus the command timeout.
    async fn within_timeout(
        &self,
        what: &str,
        connect: impl std::future::Future<Output = Result<Client, etcd_client::Error>>,
    ) -> Result<Client, etcd_client::Error> {
        match tokio::time::timeout(self.dial_timeout + self.command_timeout, connect).await {
            Ok(res) => res,
            Err(_) => Err(etcd_client::Error::EndpointError(format!(
                "connecting to {what} timed out"
            ))),
        }
    }

    /// gRPC connect options for one endpoint URL (TLS only applies to `https`).
    pub fn connect_options(&self, endpoint: &str) -> ConnectOptions {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(self.dial_timeout)
            .with_timeout(self.command_timeout)
            .with_keep_alive(Duration::from_secs(10), self.command_timeout);
        if endpoint.starts_with("https://") {
            opts = opts.with_tls(self.tls_options());
        }
        self.with_auth(opts)
    }

    /// Connects to exactly one endpoint (no load balancing), so that per-member requests
    /// such as `Status` answer for that member. With auth, this authenticates.
    pub async fn connect(&self, endpoint: &str) -> Result<Client, etcd_client::Error> {
        if self.insecure_skip_tls_verify && endpoint.starts_with("https://") {
            return self.connect_insecure(endpoint).await;
        }
        let connect = Client::connect([endpoint], Some(self.connect_options(endpoint)));
        self.within_timeout(endpoint, connect).await
    }

    /// [`Self::connect`] without certificate verification (`--insecure-skip-tls-verify`).
    async fn connect_insecure(&self, endpoint: &str) -> Result<Client, etcd_client::Error> {
        let config = crate::insecure::client_config(self.tls.identity.as_ref())
            .map_err(etcd_client::Error::InvalidArgs)?;
        let channel =
            crate::insecure::channel(endpoint, config, self.dial_timeout, self.command_timeout)
                .map_err(etcd_client::Error::InvalidArgs)?;
        let opts = self.with_auth(ConnectOptions::new());
        let connect = Client::from_channel(etcd_client::Channel::Tonic(channel), Some(opts));
        self.within_timeout(endpoint, connect).await
    }

    /// Connects to one endpoint over a plain tonic channel (no balancer and its request
    /// buffer in between): for load generation, where that queue is what limits a
    /// connection's concurrency.
    pub async fn connect_direct(&self, endpoint: &str) -> Result<Client, etcd_client::Error> {
        if self.insecure_skip_tls_verify && endpoint.starts_with("https://") {
            return self.connect_insecure(endpoint).await;
        }
        let mut ep = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| etcd_client::Error::InvalidArgs(format!("{endpoint}: {e}")))?
            .connect_timeout(self.dial_timeout)
            .timeout(self.command_timeout)
            .tcp_nodelay(true);
        if endpoint.starts_with("https://") {
            ep = ep
                .tls_config(self.tls_options())
                .map_err(etcd_client::Error::TransportError)?;
        }
        let opts = self.with_auth(ConnectOptions::new());
        let connect =
            Client::from_channel(etcd_client::Channel::Tonic(ep.connect_lazy()), Some(opts));
        self.within_timeout(endpoint, connect).await
    }

    /// Connects with all configured endpoints load-balanced (for work that any member can do).
    pub async fn connect_all(&self) -> Result<Client, etcd_client::Error> {
        let eps: Vec<String> = self.endpoints.iter().map(endpoint_str).collect();
        let first = eps.first().cloned().unwrap_or_default();
        let connect = Client::connect(&eps, Some(self.connect_options(&first)));
        self.within_timeout("the endpoints", connect).await
    }

    /// An HTTP client for members' `/metrics` and `/health`, with the same TLS settings.
    pub fn http_client(&self) -> Result<reqwest::Client, reqwest::Error> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(self.dial_timeout)
            .timeout(self.command_timeout)
            .no_proxy()
            // A redirect would take the client certificate (and whatever the member's
            // answer points at) elsewhere: a member's /metrics and /health never redirect.
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(2);
        if let Some(ca) = &self.tls.ca_pem {
            b = b
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(ca)?);
        }
        if let Some((cert, key)) = &self.tls.identity {
            let mut both = cert.clone();
            both.push(b'\n');
            both.extend_from_slice(key);
            b = b.identity(reqwest::Identity::from_pem(&both)?);
        }
        if self.insecure_skip_tls_verify {
            b = b.danger_accept_invalid_certs(true);
        }
        b.build()
    }
}

/// An endpoint URL as etcd-client wants it: `scheme://host:port`, no trailing slash.
pub fn endpoint_str(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

/// One line for an etcd client error, with its causes (tonic hides the useful part in
/// the source chain).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_trimmed_and_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write");
            p
        };
        let ok = file("ok", "  s3cret-token \n");
        assert_eq!(
            read_token_file("--t", &ok, 1).expect("valid").expose(),
            "s3cret-token"
        );
        let err = |p: &Path, min: usize| {
            read_token_file("--t", p, min)
                .expect_err("refused")
                .to_string()
        };
        assert!(err(&ok, 16).contains("at least 16 characters"));
        assert!(err(&file("empty", " \n"), 1).contains("empty"));
        assert!(err(&file("ctl", "a\u{7}b"), 1).contains("header value"));
        assert!(err(&dir.path().join("none"), 1).starts_with("--t: cannot read"));
    }

    #[test]
    fn endpoints_accept_bare_and_scheme_forms() {
        assert_eq!(
            parse_endpoint("127.0.0.1:2379", false)
                .expect("ok")
                .as_str(),
            "http://127.0.0.1:2379/"
        );
        assert_eq!(
            parse_endpoint(" 10.0.0.1:2379 ", true)
                .expect("ok")
                .scheme(),
            "https"
        );
        assert_eq!(
            parse_endpoint("https://etcd-1:2379", false)
                .expect("ok")
                .host_str(),
            Some("etcd-1")
        );
    }

    #[test]
    fn endpoints_reject_garbage_with_the_reason() {
        for (raw, want) in [
            ("", "empty"),
            ("ftp://h:1", "scheme"),
            ("http://h", "no port"),
            ("http://h:1/v3", "path"),
            ("not a url:xx", "invalid endpoint"),
        ] {
            let err = parse_endpoint(raw, false).expect_err(raw);
            assert!(err.contains(want), "{raw}: {err}");
        }
    }
}
