//! Silences: any body of `POST /api/v2/silences`, read as serde reads it and validated at
//! a fixed time. A valid one is then created, shown (`GET`), stored and read back (the
//! store's JSON), expired and updated; none of that may panic, and the stored form must
//! read back to the same silence.

#![no_main]

use alerting::matchers::Labels;
use alerting::silence::{
    format_rfc3339_ms, parse_rfc3339_ms, update, validate, PostableSilence, Silence,
};
use libfuzzer_sys::fuzz_target;

/// 2027-01-15T08:00:00.000Z.
const NOW_MS: i64 = 1_800_000_000_000;
/// The range RFC 3339 can write: years 0000 to 9999.
const MIN_RFC3339_MS: i64 = -62_167_219_200_000;
const MAX_RFC3339_MS: i64 = 253_402_300_799_999;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = serde_json::from_slice::<PostableSilence>(data) else {
        return;
    };
    let Ok(v) = validate(&p, NOW_MS) else {
        return;
    };
    for ms in [v.starts_at_ms(), v.ends_at_ms()] {
        if (MIN_RFC3339_MS..=MAX_RFC3339_MS).contains(&ms) {
            assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Ok(ms));
        }
    }
    let random = data
        .iter()
        .fold(0u128, |h, b| h.rotate_left(5) ^ u128::from(*b));
    let s = Silence::create(v.clone(), random, NOW_MS);
    let _ = s.to_gettable(NOW_MS);
    let stored = serde_json::to_string(&s).expect("serialize a silence");
    let back: Silence = serde_json::from_str(&stored)
        .unwrap_or_else(|e| panic!("stored silence {stored} does not read back: {e}"));
    assert_eq!(back, s);
    let own: Labels = s
        .matchers
        .iter()
        .map(|m| (m.name().to_owned(), m.value().to_owned()))
        .collect();
    let _ = s.matches(&own);
    let _ = s.matches(&Labels::new());
    for t in [
        NOW_MS - 1,
        NOW_MS,
        v.starts_at_ms(),
        v.ends_at_ms(),
        i64::MAX,
        i64::MIN,
    ] {
        let _ = s.state(t);
        let _ = s.to_gettable(t);
        let _ = update(&s, v.clone(), t);
        let mut e = s.clone();
        let _ = e.expire(t);
    }
});
