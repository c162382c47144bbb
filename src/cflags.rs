//! Splitting and filtering of `uwsgi --cflags` output (used by build.rs and unit-tested here).
//!
//! `uwsgi --cflags` prints flags meant for a shell: `-DUWSGI_VERSION="\"2.0.31\""` must reach the
//! compiler as `-DUWSGI_VERSION="2.0.31"`. bindgen and `cc` take argv words, not a shell line, so
//! the shell's quote removal is done here.

/// Splits a shell-style command line into words (double quotes with `\"`/`\\` escapes, single
/// quotes, backslash escapes outside quotes). An unterminated quote ends at the end of input.
pub fn split_shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_ascii_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    cur.push(q);
                }
            }
            '"' => {
                in_word = true;
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => match chars.peek() {
                            Some(&n @ ('"' | '\\' | '$' | '`')) => {
                                cur.push(n);
                                chars.next();
                            }
                            _ => cur.push('\\'),
                        },
                        _ => cur.push(q),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            _ => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Keeps the flags that decide struct layout and header lookup: defines, undefines, absolute
/// include paths and forced includes. Drops optimisation, debug, warning and hardening flags, and
/// relative `-I` paths (they point into the uWSGI source tree, which the header dump replaces).
pub fn layout_flags(words: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = words.iter();
    while let Some(w) = it.next() {
        if w.starts_with("-D") || w.starts_with("-U") {
            if w.len() == 2 {
                if let Some(v) = it.next() {
                    out.push(format!("{w}{v}"));
                }
            } else {
                out.push(w.clone());
            }
        } else if let Some(path) = w.strip_prefix("-I") {
            let path = if path.is_empty() {
                it.next().map(String::as_str).unwrap_or("")
            } else {
                path
            };
            if path.starts_with('/') {
                out.push(format!("-I{path}"));
            }
        } else if w == "-include" {
            if let Some(v) = it.next() {
                out.push("-include".to_string());
                out.push(v.clone());
            }
        }
    }
    out
}

/// True when the flags define `name` (as `-Dname` or `-Dname=...`).
#[allow(dead_code)] // used by build.rs, which includes this file
pub fn defines(flags: &[String], name: &str) -> bool {
    flags.iter().any(|f| {
        f.strip_prefix("-D")
            .map(|d| d == name || d.strip_prefix(name).is_some_and(|r| r.starts_with('=')))
            .unwrap_or(false)
    })
}

/// The value of `-DUWSGI_VERSION="..."`, without quotes.
pub fn uwsgi_version(flags: &[String]) -> Option<String> {
    flags.iter().find_map(|f| {
        f.strip_prefix("-DUWSGI_VERSION=")
            .map(|v| v.trim_matches('"').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = r#"-O2 -I. -Wall -D_LARGEFILE_SOURCE -D_FILE_OFFSET_BITS=64 -g -O2 -ffile-prefix-map=/build/uwsgi-Q8eEU7/uwsgi-2.0.21=. -fstack-protector-strong -Wformat -Werror=format-security -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -DUWSGI_HAS_IFADDRS -DUWSGI_ZLIB -DUWSGI_LOCK_USE_MUTEX -DUWSGI_EVENT_USE_EPOLL -DUWSGI_EVENT_TIMER_USE_TIMERFD -DUWSGI_EVENT_FILEMONITOR_USE_INOTIFY  -DUWSGI_PCRE -DUWSGI_ROUTING -DUWSGI_CAP -DUWSGI_UUID -DUWSGI_VERSION="\"2.0.21-debian\"" -DUWSGI_VERSION_BASE="2" -DUWSGI_VERSION_MAJOR="0" -DUWSGI_VERSION_MINOR="21" -DUWSGI_VERSION_REVISION="0" -DUWSGI_VERSION_CUSTOM="\"debian\"" -DUWSGI_YAML -DUWSGI_LIBYAML -I/usr/include/yajl -DUWSGI_JSON -DUWSGI_JSON_YAJL -DUWSGI_SSL -I/usr/include/libxml2 -DUWSGI_XML -DUWSGI_XML_LIBXML2 -DUWSGI_PLUGIN_DIR="\"/usr/lib/uwsgi/plugins\"""#;

    #[test]
    fn splits_like_a_shell() {
        let w = split_shell_words(r#"a  "b c" 'd e' f\ g -DX="\"1\"" """#);
        assert_eq!(w, vec!["a", "b c", "d e", "f g", "-DX=\"1\"", ""]);
    }

    #[test]
    fn debian_line_keeps_layout_flags_only() {
        let flags = layout_flags(&split_shell_words(DEBIAN));
        assert!(flags.contains(&"-DUWSGI_VERSION=\"2.0.21-debian\"".to_string()));
        assert!(flags.contains(&"-D_FILE_OFFSET_BITS=64".to_string()));
        assert!(flags.contains(&"-I/usr/include/yajl".to_string()));
        assert!(flags.contains(&"-DUWSGI_PLUGIN_DIR=\"/usr/lib/uwsgi/plugins\"".to_string()));
        assert!(!flags
            .iter()
            .any(|f| f == "-I." || f.starts_with("-W") || f.starts_with("-O")));
        assert!(!flags.iter().any(|f| f.starts_with("-f") || f == "-g"));
        assert!(defines(&flags, "UWSGI_ROUTING"));
        assert!(defines(&flags, "UWSGI_SSL"));
        assert!(!defines(&flags, "UWSGI_PCRE2"));
        assert!(!defines(&flags, "UWSGI_ROUTIN"));
        assert_eq!(uwsgi_version(&flags).as_deref(), Some("2.0.21-debian"));
    }

    #[test]
    fn separated_arguments() {
        let w: Vec<String> = ["-D", "A=1", "-I", "/x", "-I", "rel", "-include", "/y.h"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(layout_flags(&w), vec!["-DA=1", "-I/x", "-include", "/y.h"]);
    }
}
