//! The console receiver: one log line per notification.

use futures::future::BoxFuture;

use super::{render, DeliveryError, Notification, Notifier, DEFAULT_TITLE};

pub struct Console;

impl Notifier for Console {
    fn send<'a>(&'a self, n: Notification<'a>) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let title = render(DEFAULT_TITLE, n)?;
            tracing::info!(
                target: "alert",
                receiver = n.receiver,
                status = n.status().as_str(),
                group = %n.n.group_key,
                alerts = n.n.alerts.len(),
                "{title}"
            );
            Ok(())
        })
    }
}
