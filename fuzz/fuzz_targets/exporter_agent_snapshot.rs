//! The exporter's reading of an agent's snapshot: the first 8 bytes are the time of the
//! check (little-endian milliseconds since the epoch), the rest any body of
//! `GET /api/v1/snapshot`. Parsing and the staleness verdict must not panic (or overflow:
//! fuzz builds have debug assertions on), and what parses has a sane interval.

#![no_main]

use exporter::agents::{parse, MAX_INTERVAL_MS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((now, body)) = data.split_first_chunk::<8>() else {
        return;
    };
    let now = u64::from_le_bytes(*now);
    let Ok(report) = parse(body) else {
        return;
    };
    assert!(!report.member.is_empty());
    if let Some(ms) = report.interval_ms {
        assert!((1..=MAX_INTERVAL_MS).contains(&ms), "{ms}");
    }
    if let Some(age) = report.stale_ms(now) {
        let at = report.at_unix_ms.unwrap_or_default();
        assert_eq!(
            age,
            now - at,
            "stale only when the snapshot is from before now"
        );
    }
});
