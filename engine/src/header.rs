//! HTTP header values (RFC 9110 §5.6): a comma-separated list of elements, each a value (a
//! media range, a content coding) followed by `;`-separated parameters, some of them a
//! q-value. Parsed here for both headers the engine reads: `Accept` (`format/negotiate.rs`)
//! and `Accept-Encoding` (`compress.rs`).

/// The elements of a comma-separated header list: each one's value (trimmed) and its
/// parameters ([`Params`]). Empty elements come out too, with an empty value.
pub(crate) fn elements(header: &[u8]) -> impl Iterator<Item = (&[u8], Params<'_>)> {
    header.split(|&b| b == b',').map(|element| {
        let mut parts = element.split(semicolon as fn(&u8) -> bool);
        let value = trim(parts.next().unwrap_or_default());
        (value, Params(parts))
    })
}

fn semicolon(b: &u8) -> bool {
    *b == b';'
}

/// The `;`-separated parameters of one element, each trimmed (empty ones included).
pub(crate) struct Params<'a>(std::slice::Split<'a, u8, fn(&u8) -> bool>);

impl<'a> Iterator for Params<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        self.0.next().map(trim)
    }
}

/// A media-type parameter `name=value` (RFC 9110 §5.6.6), leniently: whitespace around `=`
/// is allowed and a quoted value loses its quotes (no escapes are undone). `None` without
/// `=`.
pub(crate) fn parameter(param: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = param.iter().position(|&b| b == b'=')?;
    let key = trim(&param[..eq]);
    let mut value = trim(&param[eq + 1..]);
    if value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"' {
        value = &value[1..value.len() - 1];
    }
    Some((key, value))
}

/// The q-value of a weight parameter as RFC 9110 §12.4.2 writes it, `q=` or `Q=` with nothing
/// around the `=`; `None` for any other parameter. (`Accept-Encoding` reads its weights this
/// way; `Accept`, whose q is one of a media range's parameters, through [`parameter`].)
pub(crate) fn weight(param: &[u8]) -> Option<&[u8]> {
    param
        .strip_prefix(b"q=")
        .or_else(|| param.strip_prefix(b"Q="))
        .map(trim)
}

/// `s` without leading and trailing ASCII whitespace.
pub(crate) fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

/// Parses an RFC 9110 qvalue (`0`, `0.5`, `1.000`...) into thousandths;
/// digits past the third decimal are ignored. `None` if malformed or > 1.
pub(crate) fn parse_q(v: &[u8]) -> Option<u16> {
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(dot) => (&v[..dot], &v[dot + 1..]),
        None => (v, &[][..]),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.iter().chain(frac).all(u8::is_ascii_digit) || int.len() > 4 {
        return None;
    }
    let mut q: u32 = 0;
    for &d in int {
        q = q * 10 + u32::from(d - b'0');
    }
    q *= 1000;
    for (i, &d) in frac.iter().take(3).enumerate() {
        q += u32::from(d - b'0') * [100, 10, 1][i];
    }
    if q > 1000 || (q == 1000 && frac.iter().any(|&d| d != b'0')) {
        return None;
    }
    Some(q as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_values() {
        assert_eq!(parse_q(b"0"), Some(0));
        assert_eq!(parse_q(b"1"), Some(1000));
        assert_eq!(parse_q(b"1.000"), Some(1000));
        assert_eq!(parse_q(b"0.5"), Some(500));
        assert_eq!(parse_q(b"0.75"), Some(750));
        assert_eq!(parse_q(b"0.1234"), Some(123));
        assert_eq!(parse_q(b".5"), Some(500));
        assert_eq!(parse_q(b"1.5"), None);
        assert_eq!(parse_q(b"2"), None);
        assert_eq!(parse_q(b""), None);
        assert_eq!(parse_q(b"."), None);
        assert_eq!(parse_q(b"-1"), None);
        assert_eq!(parse_q(b"abc"), None);
        assert_eq!(parse_q(b"99999999999"), None);
    }

    #[test]
    fn lists_and_parameters() {
        let got: Vec<(&[u8], Vec<&[u8]>)> = elements(b" a/b ; x=1;; q = 0.5 ,,gzip")
            .map(|(v, p)| (v, p.collect()))
            .collect();
        let want: Vec<(&[u8], Vec<&[u8]>)> = vec![
            (b"a/b", vec![b"x=1", b"", b"q = 0.5"]),
            (b"", vec![]),
            (b"gzip", vec![]),
        ];
        assert_eq!(got, want);
        assert_eq!(parameter(b"q = 0.5"), Some((&b"q"[..], &b"0.5"[..])));
        assert_eq!(parameter(b"v=\"1.0\""), Some((&b"v"[..], &b"1.0"[..])));
        assert_eq!(parameter(b"v"), None);
        assert_eq!(weight(b"q=0.5"), Some(&b"0.5"[..]));
        assert_eq!(weight(b"Q= 1"), Some(&b"1"[..]));
        assert_eq!(weight(b"q = 0.5"), None);
        assert_eq!(weight(b"x=1"), None);
    }
}
