//! `--prometheus-include` / `--prometheus-exclude`: glob patterns matched on family names.
//!
//! # The rule
//!
//! A pattern is matched on the whole name a family is announced under in the Prometheus text
//! format's `# TYPE` line, prefix included: `uwsgi_worker_requests_total` for a counter (its
//! samples' name), `uwsgi_request_duration_seconds` for a histogram (not `_bucket`), the gauge's
//! name for a gauge. A counter also matches under its OpenMetrics `# TYPE` name, without
//! `_total` (`uwsgi_worker_requests`), so that a pattern copied from either format works. A
//! family is kept when no exclude pattern matches it and, if include patterns are given, one of
//! them does: exclude wins.
//!
//! # The grammar
//!
//! `*` matches any run of characters (none included), `?` exactly one, `[abc]`, `[a-z]` one of
//! the set and `[!a-z]` (or `[^a-z]`) one outside it; every other character matches itself.
//! Family names are ASCII `[a-zA-Z0-9_:]`, so a literal outside that set (a `-`, a `.`) could
//! never match: such a pattern is refused with an error naming the character. There is no
//! escape character, since no name contains `*`, `?` or `[`.
//!
//! Hand-written rather than a crate (`glob`, `globset`): the grammar is four constructs, the
//! matcher is forty lines without recursion (linear backtracking to the last `*`, so at worst
//! name length × pattern length steps, and it never panics: see the proptest), and the engine
//! keeps its dependency list short (`globset` would pull in `regex`).

use std::fmt;

/// One element of a parsed pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Byte(u8),
    /// `?`
    One,
    /// `*`
    Star,
    /// `[...]`: inclusive byte ranges, negated with `!` or `^`.
    Class {
        negated: bool,
        ranges: Vec<(u8, u8)>,
    },
}

/// A parsed glob pattern (see the module documentation).
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    tokens: Vec<Token>,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.text)
    }
}

/// Why a pattern does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GlobError {
    Empty,
    /// A `[` without its `]`.
    Unclosed(String),
    /// `[]` or `[!]`.
    EmptyClass(String),
    /// `[z-a]`.
    BadRange {
        pattern: String,
        from: char,
        to: char,
    },
    /// A character no family name contains.
    BadChar {
        pattern: String,
        found: char,
    },
}

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GlobError::Empty => f.write_str("empty pattern"),
            GlobError::Unclosed(p) => write!(f, "'{p}': '[' without its ']'"),
            GlobError::EmptyClass(p) => write!(f, "'{p}': empty [...] set"),
            GlobError::BadRange { pattern, from, to } => {
                write!(f, "'{pattern}': range {from}-{to} is backwards")
            }
            GlobError::BadChar { pattern, found } => write!(
                f,
                "'{pattern}': {found:?} never appears in a family name (names are made of \
                 a-z, A-Z, 0-9, '_' and ':'; patterns add '*', '?' and [...])"
            ),
        }
    }
}

impl std::error::Error for GlobError {}

fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

impl Glob {
    /// Parses a pattern (surrounding blanks trimmed).
    pub fn parse(pattern: &str) -> Result<Glob, GlobError> {
        let text = pattern.trim();
        if text.is_empty() {
            return Err(GlobError::Empty);
        }
        let bad = |found: char| GlobError::BadChar {
            pattern: text.to_owned(),
            found,
        };
        let mut tokens = Vec::new();
        let mut chars = text.char_indices().peekable();
        while let Some((_, c)) = chars.next() {
            let token = match c {
                '*' => {
                    // `**` is `*`.
                    if tokens.last() == Some(&Token::Star) {
                        continue;
                    }
                    Token::Star
                }
                '?' => Token::One,
                '[' => {
                    let negated = chars.next_if(|&(_, c)| c == '!' || c == '^').is_some();
                    let mut ranges = Vec::new();
                    let mut closed = false;
                    while let Some((_, c)) = chars.next() {
                        if c == ']' {
                            closed = true;
                            break;
                        }
                        if !c.is_ascii() || !name_byte(c as u8) {
                            return Err(bad(c));
                        }
                        let mut to = c;
                        if chars.peek().is_some_and(|&(_, d)| d == '-') {
                            chars.next();
                            match chars.next() {
                                Some((_, d)) if d != ']' => {
                                    if !d.is_ascii() || !name_byte(d as u8) {
                                        return Err(bad(d));
                                    }
                                    to = d;
                                }
                                _ => return Err(bad('-')),
                            }
                        }
                        if to < c {
                            return Err(GlobError::BadRange {
                                pattern: text.to_owned(),
                                from: c,
                                to,
                            });
                        }
                        ranges.push((c as u8, to as u8));
                    }
                    if !closed {
                        return Err(GlobError::Unclosed(text.to_owned()));
                    }
                    if ranges.is_empty() {
                        return Err(GlobError::EmptyClass(text.to_owned()));
                    }
                    Token::Class { negated, ranges }
                }
                c if c.is_ascii() && name_byte(c as u8) => Token::Byte(c as u8),
                c => return Err(bad(c)),
            };
            tokens.push(token);
        }
        Ok(Glob {
            text: text.to_owned(),
            tokens,
        })
    }

    /// The pattern as given (trimmed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The literal characters the pattern starts with (before its first `*`, `?` or `[`):
    /// every name it matches starts with them.
    pub fn literal_prefix(&self) -> String {
        self.tokens
            .iter()
            .map_while(|t| match t {
                Token::Byte(b) => Some(char::from(*b)),
                _ => None,
            })
            .collect()
    }

    /// Whether the pattern matches the whole of `name`.
    pub fn matches(&self, name: &str) -> bool {
        let (name, toks) = (name.as_bytes(), &self.tokens[..]);
        let (mut n, mut t) = (0, 0);
        // After the last `*` seen: the token after it and the name position it resumes from.
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            match toks.get(t) {
                Some(Token::Star) => {
                    star = Some((t + 1, n));
                    t += 1;
                    continue;
                }
                Some(tok) if tok.matches_byte(name[n]) => {
                    t += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
            // Mismatch: let the last `*` swallow one more byte, or fail.
            match star {
                Some((st, sn)) => {
                    star = Some((st, sn + 1));
                    t = st;
                    n = sn + 1;
                }
                None => return false,
            }
        }
        toks[t..].iter().all(|tok| *tok == Token::Star)
    }
}

impl Token {
    fn matches_byte(&self, b: u8) -> bool {
        match self {
            Token::Byte(c) => *c == b,
            Token::One => true,
            Token::Star => false,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&b)) != *negated
            }
        }
    }
}

/// Include and exclude patterns (empty: every family is kept).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FamilyFilter {
    pub include: Vec<Glob>,
    pub exclude: Vec<Glob>,
}

/// A pattern of a [`FamilyFilter`]: which list, and its index in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternRef {
    Include(usize),
    Exclude(usize),
}

impl FamilyFilter {
    /// True when no pattern is given (every family is kept).
    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// Whether a family announced as `name` (and, for a counter, also known as `alt`, its
    /// OpenMetrics name without `_total`) is kept.
    pub fn keeps(&self, name: &str, alt: Option<&str>) -> bool {
        if self.is_empty() {
            return true;
        }
        let hit = |g: &Glob| g.matches(name) || alt.is_some_and(|a| g.matches(a));
        !self.exclude.iter().any(hit) && (self.include.is_empty() || self.include.iter().any(hit))
    }

    /// Every pattern, in the order include then exclude.
    pub fn patterns(&self) -> impl Iterator<Item = (PatternRef, &Glob)> {
        let inc = self.include.iter().enumerate();
        let exc = self.exclude.iter().enumerate();
        inc.map(|(i, g)| (PatternRef::Include(i), g))
            .chain(exc.map(|(i, g)| (PatternRef::Exclude(i), g)))
    }

    /// The pattern `r` refers to.
    pub fn get(&self, r: PatternRef) -> Option<&Glob> {
        match r {
            PatternRef::Include(i) => self.include.get(i),
            PatternRef::Exclude(i) => self.exclude.get(i),
        }
    }

    /// Marks in `seen` (one flag per pattern, in [`FamilyFilter::patterns`] order) the patterns
    /// that match `name` or `alt`.
    pub fn mark(&self, name: &str, alt: Option<&str>, seen: &mut [bool]) {
        for ((_, g), s) in self.patterns().zip(seen.iter_mut()) {
            if !*s && (g.matches(name) || alt.is_some_and(|a| g.matches(a))) {
                *s = true;
            }
        }
    }

    /// [`FamilyFilter::mark`], then [`FamilyFilter::keeps`]: what the layout asks of every
    /// family it builds.
    pub fn admit(&self, name: &str, alt: Option<&str>, seen: &mut [bool]) -> bool {
        if self.is_empty() {
            return true;
        }
        self.mark(name, alt, seen);
        self.keeps(name, alt)
    }

    /// The patterns whose flag in `seen` (as filled by [`FamilyFilter::mark`]) is false.
    pub fn unmatched(&self, seen: &[bool]) -> Vec<PatternRef> {
        self.patterns()
            .zip(seen)
            .filter(|(_, s)| !**s)
            .map(|((r, _), _)| r)
            .collect()
    }

    /// Number of patterns.
    pub fn len(&self) -> usize {
        self.include.len() + self.exclude.len()
    }
}

impl fmt::Display for PatternRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PatternRef::Include(_) => "--prometheus-include",
            PatternRef::Exclude(_) => "--prometheus-exclude",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn g(p: &str) -> Glob {
        Glob::parse(p).expect("valid pattern")
    }

    #[test]
    fn globs_match_whole_names() {
        let cases: &[(&str, &str, bool)] = &[
            ("uwsgi_worker_*", "uwsgi_worker_requests_total", true),
            ("uwsgi_worker_*", "uwsgi_worker_", true),
            ("uwsgi_worker_*", "uwsgi_workers", false),
            ("uwsgi_worker_*", "x_uwsgi_worker_a", false),
            ("*_total", "uwsgi_requests_total", true),
            ("*_total", "uwsgi_requests_total_x", false),
            ("*", "", true),
            ("*", "anything", true),
            ("**a**", "bab", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbYcZ", false),
            ("a*b*c", "abcbc", true),
            ("uwsgi_?", "uwsgi_x", true),
            ("uwsgi_?", "uwsgi_", false),
            ("uwsgi_?", "uwsgi_xy", false),
            ("uwsgi_[wc]*", "uwsgi_worker_x", true),
            ("uwsgi_[wc]*", "uwsgi_core_x", true),
            ("uwsgi_[wc]*", "uwsgi_socket_x", false),
            ("uwsgi_[!wc]*", "uwsgi_socket_x", true),
            ("uwsgi_[^wc]*", "uwsgi_worker_x", false),
            ("x[a-c0-9]", "xb", true),
            ("x[a-c0-9]", "x7", true),
            ("x[a-c0-9]", "xd", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("exac", "exact", false),
            ("ns:*", "ns:x", true),
        ];
        for &(p, name, want) in cases {
            assert_eq!(g(p).matches(name), want, "{p} on {name}");
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert_eq!(Glob::parse(" "), Err(GlobError::Empty));
        for (p, want) in [
            ("uwsgi-x", "'uwsgi-x': '-' never appears in a family name"),
            ("a.b", "'a.b': '.' never appears"),
            ("x[ab", "'x[ab': '[' without its ']'"),
            ("x[]", "'x[]': empty [...] set"),
            ("x[!]", "'x[!]': empty [...] set"),
            ("x[z-a]", "'x[z-a]': range z-a is backwards"),
            ("x[a-]", "'x[a-]': '-' never appears"),
            ("é", "'é': 'é' never appears"),
        ] {
            let e = Glob::parse(p).unwrap_err().to_string();
            assert!(e.starts_with(want), "{p}: {e}");
        }
        assert_eq!(g(" a* ").as_str(), "a*");
        assert_eq!(g("uwsgi_w*_x").literal_prefix(), "uwsgi_w");
        assert_eq!(g("[u]wsgi").literal_prefix(), "");
        assert_eq!(g("exact").literal_prefix(), "exact");
    }

    #[test]
    fn exclude_wins_and_include_restricts() {
        let mut f = FamilyFilter::default();
        assert!(f.is_empty() && f.keeps("anything", None));
        f.exclude.push(g("uwsgi_worker_*"));
        assert!(!f.keeps("uwsgi_worker_requests_total", Some("uwsgi_worker_requests")));
        assert!(f.keeps("uwsgi_requests_total", Some("uwsgi_requests")));
        f.include.push(g("uwsgi_w*"));
        assert!(!f.keeps("uwsgi_worker_requests_total", None));
        assert!(f.keeps("uwsgi_workers", None));
        assert!(!f.keeps("uwsgi_requests_total", None));
        // A counter matches under either name.
        let f = FamilyFilter {
            include: vec![g("uwsgi_requests")],
            exclude: vec![],
        };
        assert!(f.keeps("uwsgi_requests_total", Some("uwsgi_requests")));
        assert!(!f.keeps("uwsgi_requests_total", None));
        let mut seen = vec![false; f.len()];
        f.mark("uwsgi_x", None, &mut seen);
        assert_eq!(seen, [false]);
        f.mark("uwsgi_requests_total", Some("uwsgi_requests"), &mut seen);
        assert_eq!(seen, [true]);
        let refs: Vec<String> = f
            .patterns()
            .map(|(r, g)| format!("{r} {}", g.as_str()))
            .collect();
        assert_eq!(refs, ["--prometheus-include uwsgi_requests"]);
    }

    /// A reference matcher: the obvious recursion, for short inputs.
    fn reference(toks: &[Token], name: &[u8]) -> bool {
        match toks.split_first() {
            None => name.is_empty(),
            Some((Token::Star, rest)) => (0..=name.len()).any(|i| reference(rest, &name[i..])),
            Some((t, rest)) => {
                name.first().is_some_and(|&b| t.matches_byte(b)) && reference(rest, &name[1..])
            }
        }
    }

    proptest! {
        #[test]
        fn matching_never_panics(pattern in "\\PC{0,24}", name in "\\PC{0,40}") {
            if let Ok(glob) = Glob::parse(&pattern) {
                let _ = glob.matches(&name);
            }
        }

        #[test]
        fn matching_agrees_with_the_reference(
            pattern in "[ab_*?]{0,8}|[ab*]{0,3}\\[!?[a-c]{1,2}\\][ab*]{0,3}",
            name in "[abc_]{0,12}",
        ) {
            if let Ok(glob) = Glob::parse(&pattern) {
                prop_assert_eq!(glob.matches(&name), reference(&glob.tokens, name.as_bytes()));
            }
        }
    }
}
