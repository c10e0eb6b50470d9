//! Reading the project's own HTTP peers (members' `/metrics`, the agents), shared by the
//! exporter and ctl: URLs shown without their credentials, bounded GETs that follow no
//! redirect, and `--agent` targets.

use tokio::time::{timeout_at, Instant};

/// The longest part of a `Location` header quoted in an error.
const MAX_LOCATION_SHOWN: usize = 200;

/// `url` as it may be shown in an error, a log or a label: any user and password
/// replaced by `***` (`https://***:***@host/...`, or `***@` for a user alone, since a
/// token is sometimes passed as the user), and otherwise exactly as given, so a URL
/// without credentials shows as itself. Done on the text, not by reparsing it: the
/// userinfo is everything before the last `@` of the authority (up to the first `/`, `?`
/// or `#`), which hides at least what a URL parser would take for it.
pub fn redacted(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r))
            if !s.is_empty()
                && s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(&c)) =>
        {
            (Some(s), r)
        }
        _ => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let hidden = match rest[..at].split_once(':') {
        Some(("", _)) => ":***",
        Some(_) => "***:***",
        None => "***",
    };
    let host_and_after = &rest[at + 1..];
    match scheme {
        Some(s) => format!("{s}://{hidden}@{host_and_after}"),
        None => format!("{hidden}@{host_and_after}"),
    }
}

/// GETs `url` before `deadline`, refusing a body over `limit` bytes and any redirect (a
/// 3xx is an error naming the status and where it pointed). Errors show the URL
/// [`redacted`].
pub async fn get_body(
    http: &reqwest::Client,
    url: &str,
    limit: usize,
    deadline: Instant,
) -> Result<(reqwest::StatusCode, Vec<u8>), String> {
    let shown = redacted(url);
    let fetch = async {
        let failed = |e: reqwest::Error| {
            format!(
                "GET {shown}: {}",
                crate::etcd::error_chain(&e.without_url())
            )
        };
        let mut resp = http.get(url).send().await.map_err(failed)?;
        let status = resp.status();
        if status.is_redirection() {
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned());
            return Err(match location {
                Some(l) => format!(
                    "GET {shown}: status {status}, a redirect to {:?}, which is not followed",
                    clip(&redacted(&l), MAX_LOCATION_SHOWN)
                ),
                None => format!("GET {shown}: status {status}, a redirect, which is not followed"),
            });
        }
        // A client built with reqwest's default policy follows redirects before `send`
        // returns; the clients we build do not (see common::etcd), and should one ever,
        // what it fetched elsewhere is still not taken for the member's answer.
        if !same_resource(resp.url().as_str(), url) {
            return Err(format!(
                "GET {shown}: answered from {}, after a redirect, which is not accepted",
                redacted(resp.url().as_str())
            ));
        }
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(format!("GET {shown}: body larger than {limit} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > limit {
                return Err(format!("GET {shown}: body larger than {limit} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    };
    timeout_at(deadline, fetch)
        .await
        .map_err(|_| format!("GET {shown}: timed out"))?
}

/// Whether two URLs name the same resource, whoever they are sent as (reqwest takes the
/// user and password out of the URL into an `Authorization` header).
fn same_resource(a: &str, b: &str) -> bool {
    let bare = |s: &str| {
        url::Url::parse(s).ok().map(|mut u| {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u
        })
    };
    matches!((bare(a), bare(b)), (Some(a), Some(b)) if a == b)
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One `--agent` flag: a URL, optionally pinned to a member (`NAME=URL`).
///
/// The URL may carry basic-auth credentials (`https://user:password@host:9101`); `url`
/// keeps them and is only for requests (reqwest sends them as an `Authorization`
/// header). Everything shown, a metric label, the API, an error, a log, uses `display`:
/// the same URL with the user and the password each replaced by `***`
/// (`https://***:***@host:9101`); without credentials the two are the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTarget {
    pub member: Option<String>,
    /// For requests only: may hold a password.
    pub url: String,
    /// For labels, the API, errors and logs.
    pub display: String,
}

/// Parses `URL` or `NAME=URL`. Errors show the URL without its credentials.
pub fn parse_target(raw: &str) -> Result<AgentTarget, String> {
    let raw = raw.trim();
    let (member, url) = match raw.split_once('=') {
        Some((m, u)) if !m.contains("://") => (Some(m.trim().to_owned()), u.trim()),
        _ => (None, raw),
    };
    if member.as_deref() == Some("") {
        return Err(format!(
            "invalid agent {:?}: empty member name before '='",
            redacted(raw)
        ));
    }
    let shown = redacted(url);
    let parsed = url::Url::parse(url).map_err(|e| format!("invalid agent URL {shown:?}: {e}"))?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err(format!(
            "invalid agent URL {shown:?}: scheme must be http or https"
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("invalid agent URL {shown:?}: no host"));
    }
    let url = url.trim_end_matches('/').to_owned();
    Ok(AgentTarget {
        member,
        display: redacted(&url),
        url,
    })
}

/// How the exporter and ctl reach etcd-monitor's own agents and relay over HTTP(S): the
/// CA their certificates are checked against (default: the system's roots) and the bearer
/// token they want (`--monitor-cacert`, `--monitor-token-file`).
#[derive(Debug, Clone, Default)]
pub struct Components {
    pub ca_pem: Option<Vec<u8>>,
    pub token: Option<crate::secret::Secret>,
}

impl Components {
    /// From the files of `--monitor-cacert` and `--monitor-token-file`, read and checked.
    pub fn from_files(
        cacert: Option<&std::path::Path>,
        token_file: Option<&std::path::Path>,
    ) -> Result<Self, crate::etcd::ConfigError> {
        Ok(Components {
            ca_pem: cacert
                .map(|p| crate::etcd::read_ca_bundle("--monitor-cacert", p))
                .transpose()?,
            token: token_file
                .map(|p| crate::etcd::read_token_file("--monitor-token-file", p, 1))
                .transpose()?,
        })
    }

    /// An HTTP client for the agents and the relay, with `timeout` per request.
    pub fn client(&self, timeout: std::time::Duration) -> Result<reqwest::Client, reqwest::Error> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(timeout)
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if let Some(ca) = &self.ca_pem {
            b = b.tls_built_in_root_certs(false);
            for cert in reqwest::Certificate::from_pem_bundle(ca)? {
                b = b.add_root_certificate(cert);
            }
        }
        // The token was checked to be a valid header value at start.
        let bearer = self.token.as_ref().and_then(|t| {
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.expose())).ok()
        });
        if let Some(mut value) = bearer {
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, value);
            b = b.default_headers(headers);
        }
        b.build()
    }
}
