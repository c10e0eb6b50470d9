//! Email over SMTP with lettre: STARTTLS required by default, implicit TLS (`tls`), or
//! plain only when the config says `none`; optional authentication. SMTP 4xx answers and
//! connection failures are retried, 5xx answers are permanent.

use std::time::Duration;

use futures::future::BoxFuture;
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{render, DeliveryError, Notification, Notifier, DEFAULT_TITLE};
use crate::config::{EmailConfig, EmailTls};

pub struct Email {
    cfg: EmailConfig,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

/// The default body: the title, then each alert with its annotations, labels and times.
pub const DEFAULT_BODY: &str = "{{ title }}\n{% for a in alerts %}\n== {{ a.status | upper }}: {{ a.labels.alertname }}\n{% for k, v in a.annotations|items %}{{ k }}: {{ v }}\n{% endfor %}Labels:\n{% for k, v in a.labels|items %}  {{ k }}={{ v }}\n{% endfor %}Started: {{ a.starts_at }}{% if a.status == 'resolved' %}\nEnded: {{ a.ends_at }}{% endif %}\n{% if a.generator_url %}Source: {{ a.generator_url }}\n{% endif %}{% endfor %}";

impl Email {
    pub fn new(cfg: EmailConfig) -> Result<Self, String> {
        let (host, port) = cfg
            .smarthost
            .rsplit_once(':')
            .ok_or_else(|| format!("smarthost {:?} needs a port", cfg.smarthost))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("smarthost {:?}: invalid port", cfg.smarthost))?;
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(Duration::from_secs(20)));
        let tls_params = || -> Result<TlsParameters, String> {
            let mut p = TlsParameters::builder(host.to_owned());
            if let Some(ca) = &cfg.ca_file {
                let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
                let cert =
                    Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", ca.display()))?;
                p = p.add_root_certificate(cert);
            }
            p.build_rustls().map_err(|e| format!("TLS for {host}: {e}"))
        };
        b = match cfg.tls {
            EmailTls::Starttls => b.tls(Tls::Required(tls_params()?)),
            EmailTls::Tls => b.tls(Tls::Wrapper(tls_params()?)),
            EmailTls::None => b.tls(Tls::None),
        };
        if let (Some(user), Some(pw)) = (&cfg.username, &cfg.password) {
            b = b.credentials(Credentials::new(user.clone(), pw.expose().to_owned()));
        }
        let from: Mailbox = cfg
            .from
            .parse()
            .map_err(|e| format!("from {:?}: {e}", cfg.from))?;
        let to = cfg
            .to
            .iter()
            .map(|t| t.parse::<Mailbox>().map_err(|e| format!("to {t:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Email {
            transport: b.build(),
            cfg,
            from,
            to,
        })
    }

    /// Subject and body for `n`.
    pub fn render(&self, n: Notification<'_>) -> Result<(String, String), DeliveryError> {
        let subject = render(
            self.cfg
                .subject_template
                .as_deref()
                .unwrap_or(DEFAULT_TITLE),
            n,
        )?;
        let body_tpl = self.cfg.body_template.as_deref().unwrap_or(DEFAULT_BODY);
        let body = render(
            &body_tpl.replace("{{ title }}", &subject.replace('{', "{{ '{' }}")),
            n,
        )?;
        Ok((subject, body))
    }
}

impl Notifier for Email {
    fn send<'a>(&'a self, n: Notification<'a>) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let (subject, body) = self.render(n)?;
            let mut m = Message::builder().from(self.from.clone()).subject(subject);
            for t in &self.to {
                m = m.to(t.clone());
            }
            let msg = m
                .header(ContentType::TEXT_PLAIN)
                .body(body)
                .map_err(|e| DeliveryError::permanent(format!("building the message: {e}")))?;
            match self.transport.send(msg).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_permanent() => Err(DeliveryError::permanent(format!(
                    "SMTP: {}",
                    common::etcd::error_chain(&e)
                ))),
                Err(e) => Err(DeliveryError::retryable(format!(
                    "SMTP: {}",
                    common::etcd::error_chain(&e)
                ))),
            }
        })
    }
}
