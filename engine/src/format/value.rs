//! Values: integers scaled by a power of ten, as exact decimals for the text formats and as the
//! doubles nearest to those decimals for protobuf, so that every format carries the same
//! numbers.

/// Longest rendering of a value: `-9223372036854775808` or
/// `-9223372.036854775808`.
pub(super) const MAX_VALUE_LEN: usize = 22;

const POW10: [u64; 13] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
    100_000_000_000,
    1_000_000_000_000,
];

/// Appends `v / 10^scale` as an exact decimal (no exponent, no trailing zeros
/// after the point, no point for whole numbers).
// `#[inline]`: the text formats call it once per series from another module (`render.rs`),
// which may be another codegen unit; it must stay inlined into that loop (see push_scaled).
#[inline]
pub(super) fn push_value(out: &mut Vec<u8>, v: i64, scale: u8) {
    push_scaled(out, v < 0, v.unsigned_abs(), scale);
}

/// Appends `±u / 10^scale` (`-` when `neg` and `u != 0`) as [`push_value`] does.
// Once the histogram and protobuf writers called it too, LLVM stopped inlining it into the
// per-series loop of the text formats: a call per series made the 16 x 32 text render 12 %
// slower (b71d89a; bench/engine_baseline.py).
#[inline]
pub(super) fn push_scaled(out: &mut Vec<u8>, neg: bool, u: u64, scale: u8) {
    let mut buf = itoa::Buffer::new();
    if neg && u != 0 {
        out.push(b'-');
    }
    if scale == 0 {
        out.extend_from_slice(buf.format(u).as_bytes());
        return;
    }
    let scale = usize::from(scale).min(POW10.len() - 1);
    let (int, mut frac) = (u / POW10[scale], u % POW10[scale]);
    out.extend_from_slice(buf.format(int).as_bytes());
    if frac != 0 {
        let mut digits = [b'0'; 12];
        for d in digits[..scale].iter_mut().rev() {
            *d = b'0' + (frac % 10) as u8;
            frac /= 10;
        }
        let mut n = scale;
        while digits[n - 1] == b'0' {
            n -= 1;
        }
        out.push(b'.');
        out.extend_from_slice(&digits[..n]);
    }
}

/// `±u / 10^scale` as the double nearest to that decimal, i.e. what parsing the text format's
/// rendering gives. For `u < 2^53` (and `10^scale` exact, scale <= 22) the IEEE division of
/// two exact doubles is correctly rounded, so it is that double; above, the decimal is
/// formatted on the stack and parsed (correctly rounded too, and allocation-free). `scale` is
/// clamped to 12 as in [`push_scaled`].
pub(super) fn exact_f64(neg: bool, u: u64, scale: u8) -> f64 {
    const POW10_F64: [f64; 13] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12,
    ];
    let scale = usize::from(scale).min(12);
    let x = if u < 1 << 53 || scale == 0 {
        // `as` rounds to nearest, ties to even: exact below 2^53, correctly rounded above.
        u as f64 / POW10_F64[scale]
    } else {
        let p = POW10[scale];
        let (int, mut frac) = (u / p, u % p);
        let mut buf = [0u8; 40];
        let mut it = itoa::Buffer::new();
        let digits = it.format(int).as_bytes();
        buf[..digits.len()].copy_from_slice(digits);
        let mut n = digits.len();
        buf[n] = b'.';
        for d in buf[n + 1..=n + scale].iter_mut().rev() {
            *d = b'0' + (frac % 10) as u8;
            frac /= 10;
        }
        n += 1 + scale;
        std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(u as f64 / POW10_F64[scale])
    };
    if neg {
        -x
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(v: i64, scale: u8) -> String {
        let mut out = Vec::new();
        push_value(&mut out, v, scale);
        String::from_utf8(out).expect("UTF-8 output")
    }

    #[test]
    fn values() {
        let cases: &[(i64, u8, &str)] = &[
            (0, 0, "0"),
            (42, 0, "42"),
            (-42, 0, "-42"),
            (i64::MAX, 0, "9223372036854775807"),
            (i64::MIN, 0, "-9223372036854775808"),
            (0, 6, "0"),
            (1_500_000, 6, "1.5"),
            (7, 6, "0.000007"),
            (-7, 6, "-0.000007"),
            (-1_500_000, 6, "-1.5"),
            (2_000_000, 6, "2"),
            (-2_000_000, 6, "-2"),
            (123_456_789, 6, "123.456789"),
            (1_000_001, 6, "1.000001"),
            (250, 3, "0.25"),
            (i64::MAX, 6, "9223372036854.775807"),
            (i64::MIN, 6, "-9223372036854.775808"),
            (i64::MIN, 12, "-9223372.036854775808"),
            (1, 12, "0.000000000001"),
            (5, 1, "0.5"),
        ];
        for &(v, s, want) in cases {
            assert_eq!(value(v, s), want, "{v} / 10^{s}");
            assert!(value(v, s).len() <= MAX_VALUE_LEN);
        }
    }

    #[test]
    fn doubles_match_the_decimals() {
        let mut buf = Vec::new();
        for (u, scale) in [
            (0u64, 6u8),
            (1, 6),
            (7, 6),
            (1_500_000, 6),
            (123_456_789, 6),
            ((1 << 53) - 1, 6),
            (1 << 53, 6),
            ((1 << 53) + 1, 6),
            (9_007_199_254_740_993, 3),
            (u64::MAX, 6),
            (u64::MAX, 12),
            (u64::MAX, 0),
            (i64::MAX as u64, 0),
            (12_345_678_901_234_567_891, 7),
            (1, 12),
            (5, 1),
            (250, 3),
        ] {
            buf.clear();
            push_scaled(&mut buf, false, u, scale);
            let text: f64 = std::str::from_utf8(&buf).unwrap().parse().unwrap();
            assert_eq!(
                exact_f64(false, u, scale).to_bits(),
                text.to_bits(),
                "{u} / 10^{scale}"
            );
            assert_eq!(exact_f64(true, u, scale), -text);
        }
    }
}
