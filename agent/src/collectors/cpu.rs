//! Host CPU seconds by mode from `/proc/stat`, and the 1-minute load average.

use std::collections::BTreeMap;

use procfs::{Current, CurrentSI};

use crate::snapshot::CpuFacts;

pub fn collect() -> Result<CpuFacts, String> {
    let stat = procfs::KernelStats::current().map_err(|e| format!("/proc/stat: {e}"))?;
    let tps = procfs::ticks_per_second() as f64;
    let t = &stat.total;
    let mut modes = BTreeMap::new();
    for (mode, ticks) in [
        ("user", Some(t.user)),
        ("nice", Some(t.nice)),
        ("system", Some(t.system)),
        ("idle", Some(t.idle)),
        ("iowait", t.iowait),
        ("irq", t.irq),
        ("softirq", t.softirq),
        ("steal", t.steal),
    ] {
        if let Some(ticks) = ticks {
            modes.insert(mode.to_owned(), ticks as f64 / tps);
        }
    }
    let load = procfs::LoadAverage::current().map_err(|e| format!("/proc/loadavg: {e}"))?;
    Ok(CpuFacts {
        seconds_by_mode: modes,
        // The kernel prints two decimals; f32 -> f64 would add noise digits.
        load1: (f64::from(load.one) * 100.0).round() / 100.0,
    })
}
