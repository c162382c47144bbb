//! `format::negotiate` on arbitrary `Accept` header bytes: never panics, and
//! obeys properties that follow from its documented rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metrics_prometheus_engine::format::{negotiate, Format};

fuzz_target!(|data: &[u8]| {
    let f = negotiate(Some(data));
    assert_eq!(negotiate(None), Format::Text);
    assert_eq!(negotiate(Some(data)), f, "not deterministic");

    // Ranges are independent: their order does not matter.
    let mut ranges: Vec<&[u8]> = data.split(|&b| b == b',').collect();
    ranges.reverse();
    let reversed: Vec<u8> = ranges.join(&b',');
    assert_eq!(negotiate(Some(&reversed)), f, "order of ranges matters");

    // Type names, parameter names and versions compare case-insensitively
    // (q-values are digits; other parameters are ignored).
    assert_eq!(
        negotiate(Some(&data.to_ascii_uppercase())),
        f,
        "case matters"
    );
    assert_eq!(
        negotiate(Some(&data.to_ascii_lowercase())),
        f,
        "case matters"
    );

    // A `*/*;q=0` range cannot change the outcome.
    let mut more = data.to_vec();
    more.extend_from_slice(b",*/*;q=0");
    assert_eq!(negotiate(Some(&more)), f, "*/*;q=0 changed the outcome");

    // Text at q=1 with the most specific range always wins (ties go to text).
    let mut text_first = b"text/plain;version=0.0.4;q=1,".to_vec();
    text_first.extend_from_slice(data);
    assert_eq!(negotiate(Some(&text_first)), Format::Text, "text;q=1 lost");

    // With no range that can match text (no `*`, no `text`), a most specific
    // OpenMetrics range at q=1 wins.
    let can_match_text = data.split(|&b| b == b',').any(|r| {
        let media = r.split(|&b| b == b';').next().unwrap_or_default();
        let ty = media.split(|&b| b == b'/').next().unwrap_or_default();
        let ty = ty.trim_ascii();
        ty.eq_ignore_ascii_case(b"text") || ty == b"*"
    });
    if !can_match_text {
        let mut om_first = b"application/openmetrics-text;version=1.0.0,".to_vec();
        om_first.extend_from_slice(data);
        assert_eq!(
            negotiate(Some(&om_first)),
            Format::OpenMetrics,
            "openmetrics;version=1.0.0 lost with no range matching text"
        );
    }
});
