//! The `route` label of the request histograms (`--prometheus-route-label`,
//! `--prometheus-route`): the rules and what a route value may be. The host decides, per
//! request, first match wins: the request's logvar `route` (set by the application), then the
//! first rule whose regex matches `PATH_INFO`, then [`OTHER`]; it keeps the distinct values in
//! shared memory, at most `--prometheus-route-max` of them.

use std::borrow::Cow;

use regex::bytes::RegexSet;

/// The route of requests that no logvar and no rule name, and of new routes past the maximum.
pub const OTHER: &str = "other";

/// Longest route value kept, in bytes: uWSGI's logvars hold at most 255 bytes, and a rule's
/// name is held to the same.
pub const MAX_ROUTE_LEN: usize = 255;

/// One `--prometheus-route 'REGEX NAME'` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    pub pattern: String,
    pub name: String,
}

impl RouteRule {
    /// Parses `REGEX NAME`: the regex up to the first whitespace (as uWSGI's own `route =
    /// REGEX action`; write a space in a regex as `\x20` or `\s`), the name after it.
    pub fn parse(v: &str) -> Result<RouteRule, String> {
        let v = v.trim();
        let Some((pattern, name)) = v.split_once(char::is_whitespace) else {
            return Err(format!(
                "'{v}': expected 'REGEX NAME', e.g. '^/api/users/[0-9]+$ /api/users/:id'"
            ));
        };
        let name = name.trim();
        if name.len() > MAX_ROUTE_LEN {
            return Err(format!(
                "route name '{name}' is longer than {MAX_ROUTE_LEN} bytes"
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(format!("route name {name:?} contains a control character"));
        }
        // Compiled here only to refuse a bad one at startup; `Rules` compiles the set.
        regex::bytes::Regex::new(pattern)
            .map_err(|e| format!("'{pattern}' is not a valid regular expression: {e}"))?;
        Ok(RouteRule {
            pattern: pattern.to_owned(),
            name: name.to_owned(),
        })
    }
}

/// The rules, compiled once into one automaton: a request's path is scanned once whatever the
/// number of rules.
#[derive(Debug, Clone)]
pub struct Rules {
    set: RegexSet,
    /// Per rule, the index of its name in `names`.
    name_of: Vec<usize>,
    /// The distinct names, in order of first appearance.
    names: Vec<String>,
}

impl Rules {
    /// Compiles `rules` (each already checked by [`RouteRule::parse`]).
    pub fn new(rules: &[RouteRule]) -> Result<Rules, regex::Error> {
        let set = RegexSet::new(rules.iter().map(|r| r.pattern.as_str()))?;
        let mut names: Vec<String> = Vec::new();
        let name_of = rules
            .iter()
            .map(|r| match names.iter().position(|n| *n == r.name) {
                Some(i) => i,
                None => {
                    names.push(r.name.clone());
                    names.len() - 1
                }
            })
            .collect();
        Ok(Rules {
            set,
            name_of,
            names,
        })
    }

    /// The distinct names of the rules, in order of first appearance.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The name (an index into [`Rules::names`]) of the first rule, in the order given, whose
    /// regex matches `path`.
    pub fn first_match(&self, path: &[u8]) -> Option<usize> {
        if self.name_of.is_empty() {
            return None;
        }
        let first = self.set.matches(path).iter().next()?;
        self.name_of.get(first).copied()
    }
}

/// Distinct route names the rules use, [`OTHER`] not counted (it takes no entry).
pub fn distinct_names(rules: &[RouteRule]) -> usize {
    let mut names: Vec<&str> = rules
        .iter()
        .map(|r| r.name.as_str())
        .filter(|n| *n != OTHER)
        .collect();
    names.sort_unstable();
    names.dedup();
    names.len()
}

/// A route value as it is kept and exported: valid UTF-8 (an invalid sequence becomes U+FFFD,
/// as a label value must be UTF-8), at most [`MAX_ROUTE_LEN`] bytes (cut on a character
/// boundary). `None` for an empty value, which names no route.
pub fn clean(value: &[u8]) -> Option<Cow<'_, [u8]>> {
    if value.is_empty() {
        return None;
    }
    let s = String::from_utf8_lossy(value);
    let cut = |s: &str| {
        let mut end = s.len().min(MAX_ROUTE_LEN);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        end
    };
    Some(match s {
        Cow::Borrowed(b) => Cow::Borrowed(&b.as_bytes()[..cut(b)]),
        Cow::Owned(o) => {
            let end = cut(&o);
            let mut v = o.into_bytes();
            v.truncate(end);
            Cow::Owned(v)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(spec: &[&str]) -> Rules {
        let parsed: Vec<RouteRule> = spec.iter().map(|s| RouteRule::parse(s).expect(s)).collect();
        Rules::new(&parsed).expect("compiles")
    }

    #[test]
    fn first_rule_in_order_wins() {
        let r = rules(&[
            "^/api/users/[0-9]+$ /api/users/:id",
            "^/api/ /api/*",
            "^/api/users/me$ /api/users/me",
            "^/static/ /static",
            "^/api/v2/ /api/*",
        ]);
        assert_eq!(
            r.names(),
            ["/api/users/:id", "/api/*", "/api/users/me", "/static"]
        );
        let name = |p: &[u8]| r.first_match(p).map(|i| r.names()[i].as_str());
        assert_eq!(name(b"/api/users/42"), Some("/api/users/:id"));
        // Rule 2 comes before rule 3, which also matches.
        assert_eq!(name(b"/api/users/me"), Some("/api/*"));
        assert_eq!(name(b"/api/v2/x"), Some("/api/*"));
        assert_eq!(name(b"/static/a.css"), Some("/static"));
        assert_eq!(name(b"/"), None);
        // Paths are bytes: a non-UTF-8 path still matches.
        assert_eq!(name(b"/static/\xff"), Some("/static"));
        assert_eq!(rules(&[]).first_match(b"/x"), None);
    }

    #[test]
    fn bad_rules_say_why() {
        for (v, want) in [
            ("^/x$", "expected 'REGEX NAME'"),
            ("", "expected 'REGEX NAME'"),
            ("^/x( name", "not a valid regular expression"),
            ("^/x$ a\u{7}b", "control character"),
        ] {
            let e = RouteRule::parse(v).expect_err(v);
            assert!(e.contains(want), "{v}: {e}");
        }
        let long = format!("^/x$ {}", "n".repeat(256));
        assert!(RouteRule::parse(&long).expect_err("long").contains("255"));
        // Extra whitespace around and inside the name.
        let r = RouteRule::parse("  ^/x$\t  the x route ").expect("parses");
        assert_eq!(
            (r.pattern.as_str(), r.name.as_str()),
            ("^/x$", "the x route")
        );
    }

    #[test]
    fn distinct_names_leave_other_out() {
        let parsed: Vec<RouteRule> = ["^/a a", "^/b b", "^/c a", "^/d other"]
            .iter()
            .map(|s| RouteRule::parse(s).expect(s))
            .collect();
        assert_eq!(distinct_names(&parsed), 2);
    }

    #[test]
    fn values_are_cleaned() {
        assert_eq!(clean(b""), None);
        assert_eq!(clean(b"/a").as_deref(), Some(&b"/a"[..]));
        assert_eq!(clean(b"/a\xffb").as_deref(), Some("/a\u{fffd}b".as_bytes()));
        let long = "é".repeat(200);
        let c = clean(long.as_bytes()).expect("value");
        assert_eq!(c.len(), 254, "cut on a character boundary");
        assert!(std::str::from_utf8(&c).is_ok());
    }
}
