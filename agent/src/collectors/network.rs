//! Bytes, errors and drops per network interface from `/proc/net/dev`.

use crate::snapshot::NetworkFacts;

pub fn collect() -> Result<Vec<NetworkFacts>, String> {
    let devs = procfs::net::dev_status().map_err(|e| format!("/proc/net/dev: {e}"))?;
    let mut out: Vec<NetworkFacts> = devs
        .into_values()
        .map(|d| NetworkFacts {
            device: d.name,
            receive_bytes: d.recv_bytes,
            transmit_bytes: d.sent_bytes,
            receive_errors: d.recv_errs,
            transmit_errors: d.sent_errs,
            receive_drops: d.recv_drop,
            transmit_drops: d.sent_drop,
        })
        .collect();
    out.sort_by(|a, b| a.device.cmp(&b.device));
    Ok(out)
}
