//! Escaping of label values and `# HELP` text.
//!
//! The two exposition formats differ in one detail:
//!
//! | context | text 0.0.4 | OpenMetrics 1.0 |
//! |---|---|---|
//! | label value | `\` `"` LF | `\` `"` LF |
//! | HELP text | `\` LF | `\` `"` LF |
//!
//! The Go text parser (`expfmt`, used by Prometheus and `promtool`) rejects any
//! other escape sequence, so `\"` must *not* appear in a 0.0.4 HELP line, while
//! the OpenMetrics ABNF forbids a bare `"` in HELP.
//!
//! In addition, HELP text never carries ASCII control characters other than TAB
//! and LF: they are replaced by a space (OpenMetrics forbids carriage returns in
//! an exposition, and nothing useful is lost).

/// Appends `v` escaped as a label value (`\` → `\\`, `"` → `\"`, LF → `\n`). Other ASCII
/// control characters but TAB (a CR in a socket name or mountpoint, say) become a space, as in
/// HELP text: OpenMetrics forbids a carriage return anywhere in an exposition.
pub(crate) fn push_label_value(v: &str, out: &mut String) {
    // Fast path: most values (all of uWSGI's numbers) are plain.
    if !v
        .bytes()
        .any(|b| matches!(b, b'\\' | b'"' | b'\n') || (b.is_ascii_control() && b != b'\t'))
    {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push('\t'),
            c if c.is_ascii_control() => out.push(' '),
            c => out.push(c),
        }
    }
}

/// Appends `v` escaped as HELP text; `quote` also escapes `"` (OpenMetrics).
pub(crate) fn push_help(v: &str, quote: bool, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            '\t' => out.push('\t'),
            c if c.is_ascii_control() => out.push(' '),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(v: &str) -> String {
        let mut s = String::new();
        push_label_value(v, &mut s);
        s
    }

    fn help(v: &str, quote: bool) -> String {
        let mut s = String::new();
        push_help(v, quote, &mut s);
        s
    }

    #[test]
    fn label_values() {
        let cases = [
            ("", ""),
            ("12", "12"),
            ("a\\b", r"a\\b"),
            ("say \"hi\"", r#"say \"hi\""#),
            ("two\nlines", r"two\nlines"),
            ("\\\"\n", r#"\\\"\n"#),
            ("tab\there", "tab\there"),
            ("ünï", "ünï"),
        ];
        for (input, want) in cases {
            assert_eq!(label(input), want, "input {input:?}");
        }
    }

    #[test]
    fn help_text() {
        assert_eq!(help("plain", false), "plain");
        assert_eq!(help("a\\b\nc", false), r"a\\b\nc");
        assert_eq!(help("say \"hi\"", false), "say \"hi\"");
        assert_eq!(help("say \"hi\"", true), r#"say \"hi\""#);
        assert_eq!(help("cr\rnul\0del\x7ftab\t", true), "cr nul del tab\t");
    }
}
