//! Option values: `config::parse_server_addr` and `Config::apply` for every
//! `OPTIONS`, on arbitrary sequences of (option, value).
//!
//! Input (lossy UTF-8): records separated by `\n`, each `NAME=VALUE` or a bare
//! `NAME` (a flag without value, i.e. `None`). NAME is an option name with or
//! without `prometheus-` (`prometheus-server`, `server`); any other NAME picks
//! an option by its hash, so every input drives some option and seeds stay
//! valid when options are added or reordered.
//!
//! Properties: never panics; a rejected value's error names the option and
//! (single-valued options) leaves the config unchanged; an accepted value is stored as documented;
//! an accepted server address prints back to an equal address; the format
//! options in the resulting config always build a layout that renders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metrics_prometheus_engine::config::{parse_server_addr, Cidr, Config, Opt, ServerAddr, OPTIONS};
use metrics_prometheus_engine::format::{validate_prefix, Format, Layout, MetricType};
use metrics_prometheus_engine::http::{validate_path, BasicAuth};

fuzz_target!(|data: &[u8]| {
    if data.len() > 4096 {
        return;
    }
    let mut cfg = Config::default();
    let text = String::from_utf8_lossy(data);
    for rec in text.split('\n') {
        let (name, value) = match rec.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (rec, None),
        };
        let opt = OPTIONS
            .iter()
            .map(|d| d.opt)
            .find(|o| o.name() == name || o.name().strip_prefix("prometheus-") == Some(name))
            .unwrap_or_else(|| {
                let h = name
                    .bytes()
                    .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
                OPTIONS[h % OPTIONS.len()].opt
            });

        // The address parser on its own, on every value.
        if let Some(v) = value {
            if let Ok(addr) = parse_server_addr(v) {
                let shown = addr.to_string();
                assert_eq!(
                    parse_server_addr(&shown).as_ref(),
                    Ok(&addr),
                    "{v:?} parsed to {addr:?}, which prints as {shown:?}"
                );
                if let ServerAddr::Tcp { host, .. } = &addr {
                    assert!(!host.is_empty() && !host.contains('/'));
                }
            }
        }

        let before = cfg.clone();
        match cfg.apply(opt, value) {
            Err(e) => {
                assert_eq!(e.opt, opt);
                let e = e.to_string();
                // `--prometheus-allow a,b` is applied part by part: a bad later part leaves
                // the earlier ones in place. Harmless (a rejected value stops startup), so
                // not asserted for it.
                if opt != Opt::Allow {
                    assert_eq!(cfg, before, "rejected {opt:?}={value:?} changed the config");
                }
                let want = format!("invalid value for --{}: ", opt.name());
                assert!(
                    e.starts_with(&want),
                    "error {e:?} does not name --{}",
                    opt.name()
                );
            }
            Ok(()) => match opt {
                Opt::Server => {
                    let addr = parse_server_addr(value.unwrap_or("")).expect("accepted");
                    assert!(cfg.servers.contains(&addr));
                    assert!(cfg.servers.len() <= before.servers.len() + 1);
                }
                Opt::ServerMode => {
                    let m = cfg.server_mode.expect("mode set");
                    assert!(m <= 0o777);
                    let v = value.unwrap_or("");
                    assert_eq!(u32::from_str_radix(v, 8).ok(), Some(m));
                }
                Opt::Path => {
                    assert_eq!(cfg.path, value.unwrap_or(""));
                    assert!(validate_path(&cfg.path).is_ok());
                }
                Opt::Prefix => {
                    assert_eq!(cfg.format.prefix, value.unwrap_or(""));
                    assert!(validate_prefix(&cfg.format.prefix).is_ok());
                }
                Opt::Allow => {
                    for part in value.unwrap_or("").split(',') {
                        let c = Cidr::parse(part).expect("accepted part parses");
                        assert!(cfg.allow.contains(&c));
                        // A network contains the address it was written with.
                        let t = part.trim();
                        let addr: std::net::IpAddr = t
                            .split_once('/')
                            .map_or(t, |(a, _)| a)
                            .parse()
                            .expect("accepted address parses");
                        assert!(
                            c.contains(addr),
                            "--prometheus-allow {t:?} does not contain {addr}"
                        );
                    }
                }
                Opt::BasicAuth => {
                    let v = value.unwrap_or("");
                    assert_eq!(cfg.basic_auth, Some(BasicAuth::parse(v).expect("accepted")));
                    let user = v.split_once(':').expect("USER:").0;
                    assert_eq!(cfg.basic_auth.as_ref().map(|a| a.user.as_str()), Some(user));
                }
                Opt::NoWorkers | Opt::NoCores | Opt::NoHelp | Opt::NoType => {
                    assert!(!opt.takes_value());
                    if value.is_none() {
                        let f = &cfg.format;
                        let on = match opt {
                            Opt::NoWorkers => f.workers,
                            Opt::NoCores => f.cores,
                            Opt::NoHelp => f.help,
                            _ => f.types,
                        };
                        assert!(!on, "bare --{} did not turn it off", opt.name());
                    }
                }
                // Options added later: covered by "no panic" and the error check above.
                #[allow(unreachable_patterns)]
                _ => {}
            },
        }
    }

    // Whatever options were accepted, the engine renders with them.
    let metrics = [
        ("worker.1.requests", MetricType::Counter),
        ("worker.1.core.0.requests", MetricType::Counter),
        ("core.avg_response_time", MetricType::Gauge),
        ("socket.0.listen_queue", MetricType::Gauge),
    ];
    let layout = Layout::new(&metrics, &cfg.format);
    let mut out = Vec::new();
    layout.render(&[1, 2, 3, 4], Format::OpenMetrics, &mut out);
    assert!(out.ends_with(b"# EOF\n"));
    assert!(layout.series() + layout.skipped().len() == metrics.len());
});
