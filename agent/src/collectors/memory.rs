//! Host memory from `/proc/meminfo`.

use procfs::Current;

use crate::snapshot::MemoryFacts;

pub fn collect() -> Result<MemoryFacts, String> {
    let m = procfs::Meminfo::current().map_err(|e| format!("/proc/meminfo: {e}"))?;
    Ok(MemoryFacts {
        total_bytes: m.mem_total,
        // Kernels before 3.14 lack MemAvailable; free + cached is the old estimate.
        available_bytes: m.mem_available.unwrap_or(m.mem_free + m.cached),
    })
}
