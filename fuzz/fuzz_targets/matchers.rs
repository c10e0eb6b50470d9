//! Matchers: any text as a matcher list (route `matchers:`, inhibit rules, the v2 API's
//! `filter`). A parsed list must print (`Display`) to text that parses back to equal
//! matchers, one by one and as a list, and matching must not panic.

#![no_main]

use alerting::matchers::{matchers_match, parse_matcher, parse_matchers, Labels, MAX_INPUT_BYTES};
use libfuzzer_sys::fuzz_target;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ms) = parse_matchers(text) else {
        return;
    };
    for m in &ms {
        let shown = m.to_string();
        // Quoting can make the text longer than the input; past the input limit the parser
        // refuses it by design, so only shorter texts must read back.
        if shown.len() <= MAX_INPUT_BYTES {
            match parse_matcher(&shown) {
                Ok(back) => assert_eq!(&back, m, "{text:?} -> {shown:?}"),
                Err(e) => panic!(
                    "{text:?}: the matcher {m:?} prints as {shown:?}, which does not parse: {e}"
                ),
            }
        }
    }
    let list = format!(
        "{{{}}}",
        ms.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    if list.len() <= MAX_INPUT_BYTES {
        match parse_matchers(&list) {
            Ok(back) => assert_eq!(back, ms, "{text:?} -> {list:?}"),
            Err(e) => panic!("{text:?}: the matchers print as {list:?}, which does not parse: {e}"),
        }
    }
    // The matchers' own names and values as a label set, so that `=` can match too.
    let own: Labels = ms
        .iter()
        .map(|m| (m.name().to_owned(), m.value().to_owned()))
        .collect();
    let sets = [
        Labels::new(),
        labels(&[
            ("alertname", "EtcdNoLeader"),
            ("severity", "critical"),
            ("cluster", "prod"),
        ]),
        labels(&[
            ("instance", "10.0.0.1:2379"),
            ("job", "etcd"),
            ("", ""),
            ("ü", "\u{0}\n\"\\"),
        ]),
        own,
    ];
    for set in &sets {
        let all = matchers_match(&ms, set);
        assert_eq!(all, ms.iter().all(|m| m.matches(set)));
        for m in &ms {
            let _ = m.matches_value(text);
        }
    }
});
