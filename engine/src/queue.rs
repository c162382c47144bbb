//! Request queue time (`--prometheus-queue-time`): the time a front proxy wrote into an
//! `X-Request-Start` or `X-Queue-Start` header, and how long before uWSGI started the request it
//! was. Pure: the after-request hook hands the header's bytes and `start_of_request` to
//! [`queue_time`].
//!
//! # Accepted forms
//!
//! `[spaces] [t=] DIGITS [. DIGITS] [spaces]`: a plain number or one after `t=`, with an
//! optional decimal fraction, in seconds, milliseconds or microseconds since the Unix epoch.
//! What the proxies send:
//!
//! | proxy | configuration | header value | unit |
//! |---|---|---|---|
//! | nginx | `proxy_set_header X-Request-Start "t=${msec}";` | `t=1700000000.123` | s |
//! | HAProxy | `http-request set-header X-Request-Start t=%Ts%ms` | `t=1700000000123` | ms |
//! | HAProxy | `http-request set-header X-Request-Start t=%[date(0,us)]` | `t=1700000000123456` | µs |
//! | Apache | `RequestHeader set X-Request-Start "%t"` | `t=1700000000123456` | µs |
//! | Heroku router | (always) | `1700000000123` | ms |
//!
//! # The unit rule
//!
//! As New Relic's agents do (Python `_parse_time_stamp`, Ruby `QueueTime.parse_timestamp`), the
//! unit is guessed from the magnitude, assuming the time is after 2000-01-01 (946684800 s): the
//! integer part `n` is microseconds when `n >= 946684800000000`, else milliseconds when
//! `n >= 946684800000`, else seconds when `n >= 946684800`; below that the value is no
//! timestamp and is ignored. The fraction, when there is one, is in the same unit and is
//! truncated to the microsecond. (Unambiguous until the year 31 690, when seconds would reach
//! the milliseconds threshold.) A value in nanoseconds, which New Relic does not accept either,
//! reads as microseconds far in the future: it counts as clock skew, visibly.
//!
//! Anything else (a sign, an exponent, a server name before `t=`, two values, an integer part of
//! more than 19 digits) is ignored: the request is not observed.

/// Unix time of 2000-01-01T00:00:00Z: the earliest time a header can name.
pub const EARLIEST_S: u64 = 946_684_800;

/// The longest queue time recorded, in µs (one hour, the native buckets' last bound): a longer
/// one (a stale or forged header) is recorded as one hour, so that one request cannot swell the
/// histogram's sum.
pub const MAX_QUEUE_US: u64 = 3_600_000_000;

/// The time a header value names, in µs since the Unix epoch (see the module's rules), or
/// `None` when it is not one of the accepted forms.
pub fn parse_request_start(v: &[u8]) -> Option<u64> {
    // Runs in the after-request hook of every request that carries the header: a single pass,
    // integer arithmetic only, no division, and no overflow check per digit (19 digits always
    // fit in a u64; a 20-digit time would be microseconds after the year 318 000).
    const POW10: [u64; 7] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000];
    let v = v.trim_ascii();
    let v = v.strip_prefix(b"t=").unwrap_or(v);
    let digits = |s: &[u8]| s.iter().take_while(|b| b.is_ascii_digit()).count();
    let len = digits(v);
    if len == 0 || len > 19 {
        return None;
    }
    let n = v[..len]
        .iter()
        .fold(0u64, |n, &b| n * 10 + u64::from(b - b'0'));
    let frac = match &v[len..] {
        [] => &[][..],
        [b'.', f @ ..] if digits(f) == f.len() => f,
        _ => return None,
    };
    // The unit, as a power of ten of µs: the fraction's digits above 1 µs.
    let places = if n >= EARLIEST_S * 1_000_000 {
        0
    } else if n >= EARLIEST_S * 1_000 {
        3
    } else if n >= EARLIEST_S {
        6
    } else {
        return None;
    };
    let used = frac.len().min(places);
    let f = frac[..used]
        .iter()
        .fold(0u64, |f, &b| f * 10 + u64::from(b - b'0'))
        * POW10[places - used];
    n.checked_mul(POW10[places])?.checked_add(f)
}

/// One request's queue time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueTime {
    /// µs from the header's time to `start_of_request`: 0 when the header is later (clock
    /// skew), at most [`MAX_QUEUE_US`].
    pub wait_us: u64,
    /// The header named a time after `start_of_request`: the proxy's clock is ahead of this
    /// host's (or the value is not the proxy's).
    pub skew: bool,
}

/// The queue time of a request started at `start_us` (µs since the epoch) whose header says
/// `header`, or `None` when the header is not an accepted form.
pub fn queue_time(header: &[u8], start_us: u64) -> Option<QueueTime> {
    let at = parse_request_start(header)?;
    Some(QueueTime {
        wait_us: start_us.saturating_sub(at).min(MAX_QUEUE_US),
        skew: at > start_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: u64 = 1_700_000_000;

    #[test]
    fn every_documented_form() {
        for (v, want) in [
            // nginx t=${msec}
            (&b"t=1700000000.123"[..], T * 1_000_000 + 123_000),
            (b"t=1700000000.000", T * 1_000_000),
            // HAProxy t=%Ts%ms, Heroku
            (b"t=1700000000123", T * 1_000_000 + 123_000),
            (b"1700000000123", T * 1_000_000 + 123_000),
            // HAProxy date(0,us), Apache %t
            (b"t=1700000000123456", T * 1_000_000 + 123_456),
            (b"1700000000123456", T * 1_000_000 + 123_456),
            // plain seconds, with and without a fraction of any length
            (b"1700000000", T * 1_000_000),
            (b"1700000000.5", T * 1_000_000 + 500_000),
            (b"1700000000.1234567", T * 1_000_000 + 123_456),
            (b"1700000000.", T * 1_000_000),
            // milliseconds and microseconds with a fraction
            (b"1700000000123.9", T * 1_000_000 + 123_900),
            (b"1700000000123456.9", T * 1_000_000 + 123_456),
            // spaces around
            (b"  t=1700000000.123 ", T * 1_000_000 + 123_000),
            (b"\t1700000000123\t", T * 1_000_000 + 123_000),
        ] {
            assert_eq!(
                parse_request_start(v),
                Some(want),
                "{}",
                String::from_utf8_lossy(v)
            );
        }
    }

    #[test]
    fn unit_thresholds() {
        let e = EARLIEST_S;
        assert_eq!(parse_request_start(b"946684800"), Some(e * 1_000_000));
        assert_eq!(parse_request_start(b"946684799"), None);
        assert_eq!(
            parse_request_start(b"946684799999"),
            Some(946_684_799_999 * 1_000_000)
        );
        assert_eq!(parse_request_start(b"946684800000"), Some(e * 1_000_000));
        assert_eq!(
            parse_request_start(b"946684799999999"),
            Some(946_684_799_999_999 * 1_000)
        );
        assert_eq!(parse_request_start(b"946684800000000"), Some(e * 1_000_000));
        assert_eq!(
            parse_request_start(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        // 20 digits: refused (microseconds after the year 318 000).
        assert_eq!(parse_request_start(b"18446744073709551615"), None);
        // Nanoseconds read as microseconds (far future): skew, visibly.
        let ns = format!("{}", T * 1_000_000_000);
        assert_eq!(parse_request_start(ns.as_bytes()), Some(T * 1_000_000_000));
    }

    #[test]
    fn malformed_values_are_ignored() {
        for v in [
            &b""[..],
            b"t=",
            b" ",
            b".5",
            b"t=.5",
            b"0",
            b"12345",
            b"-1700000000",
            b"+1700000000",
            b"1.7e9",
            b"1700000000,123",
            b"t=1700000000 t=1700000001",
            b"1700000000.12.3",
            b"1700000000.1x",
            b"t = 1700000000",
            b"T=1700000000",
            b"s=1700000000",
            b"web1 t=1700000000",
            b"18446744073709551616",
            b"99999999999999999999999",
            b"1700000000\x001",
        ] {
            assert_eq!(
                parse_request_start(v),
                None,
                "{:?}",
                String::from_utf8_lossy(v)
            );
        }
    }

    #[test]
    fn queue_times() {
        let start = T * 1_000_000 + 300_000;
        assert_eq!(
            queue_time(b"t=1700000000.000", start),
            Some(QueueTime {
                wait_us: 300_000,
                skew: false
            })
        );
        assert_eq!(
            queue_time(b"t=1700000001.000", start),
            Some(QueueTime {
                wait_us: 0,
                skew: true
            })
        );
        assert_eq!(
            queue_time(b"1700000000300000", start),
            Some(QueueTime {
                wait_us: 0,
                skew: false
            })
        );
        assert_eq!(
            queue_time(b"946684800", start),
            Some(QueueTime {
                wait_us: MAX_QUEUE_US,
                skew: false
            })
        );
        assert_eq!(queue_time(b"garbage", start), None);
    }

    proptest! {
        /// Never panics, whatever the bytes; what it accepts is a time after 2000.
        #[test]
        fn any_bytes(v in proptest::collection::vec(any::<u8>(), 0..40), start in any::<u64>()) {
            if let Some(us) = parse_request_start(&v) {
                prop_assert!(us >= EARLIEST_S * 1_000_000);
            }
            if let Some(q) = queue_time(&v, start) {
                prop_assert!(q.wait_us <= MAX_QUEUE_US);
                prop_assert!(!q.skew || q.wait_us == 0);
            }
        }

        /// Bytes drawn from the alphabet of the forms, so that near-misses are frequent.
        #[test]
        fn near_misses(v in "[ t=0-9.x-]{0,24}") {
            let _ = parse_request_start(v.as_bytes());
        }

        /// Exact on every documented form, for any time from 2000 to 2286 (10^10 s).
        #[test]
        fn exact(us in EARLIEST_S * 1_000_000..10_000_000_000_000_000u64, t in any::<bool>(), pad in 0usize..3) {
            let p = if t { "t=" } else { "" };
            let sp = " ".repeat(pad);
            let (s, frac) = (us / 1_000_000, us % 1_000_000);
            // microseconds
            let v = format!("{sp}{p}{us}{sp}");
            prop_assert_eq!(parse_request_start(v.as_bytes()), Some(us));
            // milliseconds, integer (Heroku, HAProxy t=%Ts%ms) and with the µs as a fraction
            let v = format!("{p}{}", us / 1_000);
            prop_assert_eq!(parse_request_start(v.as_bytes()), Some(us / 1_000 * 1_000));
            let v = format!("{p}{}.{:03}", us / 1_000, us % 1_000);
            prop_assert_eq!(parse_request_start(v.as_bytes()), Some(us));
            // seconds: nginx's t=${msec}, whole seconds, and a µs fraction
            let v = format!("{p}{s}.{:03}", frac / 1_000);
            prop_assert_eq!(parse_request_start(v.as_bytes()), Some(us / 1_000 * 1_000));
            let v = format!("{p}{s}");
            prop_assert_eq!(parse_request_start(v.as_bytes()), Some(s * 1_000_000));
            let v = format!("{p}{s}.{frac:06}");
            prop_assert_eq!(parse_request_start(v.as_bytes()), Some(us));
            // queue time against a later start
            let q = queue_time(format!("{p}{us}").as_bytes(), us + 300_000);
            prop_assert_eq!(q, Some(QueueTime { wait_us: 300_000, skew: false }));
            let q = queue_time(format!("{p}{us}").as_bytes(), us - 1);
            prop_assert_eq!(q, Some(QueueTime { wait_us: 0, skew: true }));
        }
    }
}
