//! Option values: parsing and validation, pure (no FFI). The plugin's option callbacks feed
//! [`Config::apply`]; a bad value is an `Err` whose text names the option, and startup stops.
//! Once every option is parsed, [`Config::check`] refuses contradictions and names what a
//! combination leaves unused.

use std::ffi::CStr;
use std::net::IpAddr;

use crate::health::QueueLimit;
use crate::http::BasicAuth;
use std::path::PathBuf;

/// Why an option value does not parse (one variant per way it can be wrong; the text is what
/// the operator reads in the startup error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueError {
    EmptyAddress,
    /// `[...]` without `]:port`.
    BracketedWithoutPort(String),
    NotIpv6 {
        value: String,
        host: String,
    },
    NoPort(String),
    UnbracketedIpv6(String),
    BadPort {
        value: String,
        port: String,
    },
    NotNetwork(String),
    BadPrefixLength {
        value: String,
        max: u8,
    },
    BadBucket(String),
    /// A bucket bound given twice, in µs.
    DuplicateBucket(u64),
    TooManyBuckets,
    NotBoolean(String),
}

impl std::fmt::Display for ValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValueError::EmptyAddress => {
                f.write_str("empty address; use host:port, :port, [v6]:port or a UNIX socket path")
            }
            ValueError::BracketedWithoutPort(v) => write!(f, "'{v}': expected [v6-address]:port"),
            ValueError::NotIpv6 { value, host } => {
                write!(f, "'{value}': '{host}' is not an IPv6 address")
            }
            ValueError::NoPort(v) => write!(
                f,
                "'{v}': expected host:port, :port, [v6]:port or a path containing '/'"
            ),
            ValueError::UnbracketedIpv6(v) => {
                write!(f, "'{v}': write IPv6 addresses as [address]:port")
            }
            ValueError::BadPort { value, port } => {
                write!(f, "'{value}': '{port}' is not a port number (0-65535)")
            }
            ValueError::NotNetwork(v) => {
                write!(f, "'{v}' is not an IP address or network (e.g. 10.0.0.0/8)")
            }
            ValueError::BadPrefixLength { value, max } => {
                write!(f, "'{value}': prefix length must be 0-{max}")
            }
            ValueError::BadBucket(p) => write!(
                f,
                "'{p}' is not a duration in seconds between 0.000001 and 3600 written as a \
                 plain decimal with at most 6 decimals (e.g. 0.005)"
            ),
            ValueError::DuplicateBucket(us) => {
                write!(f, "bucket {} given twice", *us as f64 / 1e6)
            }
            ValueError::TooManyBuckets => write!(f, "at most {MAX_BUCKETS} buckets"),
            ValueError::NotBoolean(v) => write!(
                f,
                "'{v}' is not a boolean (true/false, yes/no, on/off, 1/0)"
            ),
        }
    }
}

impl std::error::Error for ValueError {}

/// Where `--prometheus-server` listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    /// `host:port`, `:port` (all IPv4 interfaces, as uWSGI's own sockets) or `[v6]:port`.
    Tcp { host: String, port: u16 },
    /// A UNIX socket path (any value containing `/`).
    Unix(PathBuf),
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerAddr::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            ServerAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            ServerAddr::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Parses a `--prometheus-server` value.
pub fn parse_server_addr(v: &str) -> Result<ServerAddr, ValueError> {
    let v = v.trim();
    if v.is_empty() {
        return Err(ValueError::EmptyAddress);
    }
    if v.contains('/') {
        return Ok(ServerAddr::Unix(PathBuf::from(v)));
    }
    let (host, port) = if let Some(rest) = v.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or_else(|| ValueError::BracketedWithoutPort(v.into()))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(ValueError::NotIpv6 {
                value: v.into(),
                host: h.into(),
            });
        }
        (h.to_string(), p)
    } else {
        let (h, p) = v
            .rsplit_once(':')
            .ok_or_else(|| ValueError::NoPort(v.into()))?;
        if h.contains(':') {
            return Err(ValueError::UnbracketedIpv6(v.into()));
        }
        (if h.is_empty() { "0.0.0.0" } else { h }.to_string(), p)
    };
    let port = port.parse::<u16>().map_err(|_| ValueError::BadPort {
        value: v.into(),
        port: port.into(),
    })?;
    Ok(ServerAddr::Tcp { host, port })
}

/// An IP network (`10.0.0.0/8`, `::1/128`; a bare address is a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(v: &str) -> Result<Cidr, ValueError> {
        let v = v.trim();
        let (addr, bits) = match v.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (v, None),
        };
        let net: IpAddr = addr.parse().map_err(|_| ValueError::NotNetwork(v.into()))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(|| {
                ValueError::BadPrefixLength {
                    value: v.into(),
                    max,
                }
            })?,
        };
        Ok(Cidr { net, bits })
    }

    /// True when `ip` is in the network. Both sides are compared as IPv6, IPv4 as IPv4-mapped
    /// (`::ffff:a.b.c.d`), so an IPv4 network matches IPv4 clients on a dual-stack listener and
    /// a network written in IPv4-mapped form matches IPv4 clients.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let v6 = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        let bits = u32::from(self.bits) + if self.net.is_ipv4() { 96 } else { 0 };
        if bits == 0 {
            return true;
        }
        let shift = 128 - bits;
        (u128::from(v6(self.net)) >> shift) == (u128::from(v6(ip)) >> shift)
    }
}

/// The plugin's settings after option parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub servers: Vec<ServerAddr>,
    /// Permission bits for UNIX-socket servers (`--prometheus-server-mode 660`).
    pub server_mode: Option<u32>,
    /// Owner (`USER[:GROUP]`) for UNIX-socket servers, resolved at bind time.
    pub server_owner: Option<(String, Option<String>)>,
    /// Path that serves the metrics on `--prometheus-server`.
    pub path: String,
    /// TCP clients allowed on `--prometheus-server` (empty: all).
    pub allow: Vec<Cidr>,
    /// Credentials required on `--prometheus-server`.
    pub basic_auth: Option<BasicAuth>,
    /// When `/readyz` judges a listen queue too long (`--prometheus-ready-queue`).
    pub ready_queue: QueueLimit,
    pub format: crate::format::Options,
    /// Request-duration histograms (`--prometheus-no-histograms` turns them off).
    pub histograms: bool,
    /// Finite bucket bounds in microseconds, strictly increasing.
    pub buckets_us: Vec<u64>,
    /// Remember W3C trace ids as exemplars (`--prometheus-exemplars`).
    pub exemplars: bool,
    /// Schema of the native (exponential) request histogram served in protobuf.
    pub native_schema: i8,
    /// The request queue-time histogram from `X-Request-Start` (`--prometheus-queue-time`).
    pub queue_time: bool,
    /// A `route` label on the request histograms, from the request's logvar `route`
    /// (`--prometheus-route-label`; also on with any `--prometheus-route`).
    pub route_label: bool,
    /// `--prometheus-route` rules, in the order given.
    pub routes: Vec<crate::routes::RouteRule>,
    /// Distinct routes kept (`--prometheus-route-max`); `other` not counted.
    pub route_max: usize,
    /// Compress answers with gzip when the client accepts it (`--prometheus-no-gzip` turns it off).
    pub gzip: bool,
    /// Families under another exporter's names (`--prometheus-compat`).
    pub compat: Option<Compat>,
    /// `stats_uri` label value in compat mode (`None`: uWSGI's `--stats` address, or empty).
    pub compat_stats_uri: Option<String>,
    /// In an Emperor: the UNIX socket of each vassal's own exposition, `{vassal}` standing for
    /// the vassal's label (`--prometheus-vassal-socket`); None: vassal expositions not merged.
    pub vassal_socket: Option<String>,
    /// How long a scrape of the Emperor waits for the vassals' expositions, in milliseconds.
    pub vassal_timeout_ms: u32,
    /// Application metrics in shared memory (`--prometheus-app-metrics`).
    pub app_metrics: bool,
    /// Entries of the application metrics' table (`--prometheus-app-series`).
    pub app_series: usize,
    /// The options given at least once, in the order first seen (for [`Config::check`]).
    pub given: Vec<Opt>,
}

use crate::defaults::MAX_VASSAL_TIMEOUT_MS;

/// Another exporter whose family names, types and labels the plugin can reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compat {
    /// timonwong/uwsgi_exporter 1.3 (see `crate::compat`).
    UwsgiExporter,
}

/// Most finite buckets `--prometheus-buckets` accepts.
pub const MAX_BUCKETS: usize = 32;

/// Parses `--prometheus-buckets`: seconds as plain decimals (`0.005,0.01,1`), at microsecond
/// resolution, positive, at most one hour, no duplicates; sorted.
pub fn parse_buckets(v: &str) -> Result<Vec<u64>, ValueError> {
    let mut out = Vec::new();
    for part in v.split(',') {
        let p = part.trim();
        out.push(parse_seconds_us(p).ok_or_else(|| ValueError::BadBucket(p.into()))?);
    }
    out.sort_unstable();
    if let Some(w) = out.windows(2).find(|w| w[0] == w[1]) {
        return Err(ValueError::DuplicateBucket(w[0]));
    }
    if out.len() > MAX_BUCKETS {
        return Err(ValueError::TooManyBuckets);
    }
    Ok(out)
}

/// `"0.005"` → 5000 µs. `None` for anything but a positive plain decimal of at most 6
/// decimals, up to 3600 s.
fn parse_seconds_us(p: &str) -> Option<u64> {
    let (int, frac) = p.split_once('.').unwrap_or((p, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) || frac.len() > 6 {
        return None;
    }
    let whole: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut micros: u64 = 0;
    for (i, b) in frac.bytes().enumerate() {
        micros += u64::from(b - b'0') * 10u64.pow(5 - i as u32);
    }
    let us = whole.checked_mul(1_000_000)?.checked_add(micros)?;
    (us > 0 && us <= 3_600_000_000).then_some(us)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            servers: Vec::new(),
            server_mode: None,
            server_owner: None,
            path: crate::defaults::PATH.to_string(),
            allow: Vec::new(),
            basic_auth: None,
            ready_queue: QueueLimit::default(),
            format: crate::format::Options::default(),
            histograms: true,
            buckets_us: parse_buckets(crate::defaults::BUCKETS)
                .expect("the default buckets parse (tested)"),
            exemplars: false,
            gzip: true,
            native_schema: crate::defaults::NATIVE_SCHEMA,
            queue_time: false,
            route_label: false,
            routes: Vec::new(),
            route_max: crate::defaults::ROUTE_MAX,
            compat: None,
            compat_stats_uri: None,
            vassal_socket: None,
            vassal_timeout_ms: crate::defaults::VASSAL_TIMEOUT_MS,
            app_metrics: false,
            app_series: crate::defaults::APP_SERIES,
            given: Vec::new(),
        }
    }
}

/// What uWSGI must turn on for an option (`UWSGI_OPT_MASTER | UWSGI_OPT_METRICS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implies {
    Nothing,
    MasterAndMetrics,
}

/// One option as uWSGI sees it: the plugin builds its C option table from [`OPTIONS`], so a
/// name, its help text and its kind are written exactly once, here.
#[derive(Debug, Clone, Copy)]
pub struct OptionDecl {
    pub opt: Opt,
    /// The name without `--`, NUL-terminated for uWSGI's table.
    pub name: &'static CStr,
    pub help: &'static CStr,
    /// `--opt VALUE` (else a flag, which still accepts uWSGI's boolean spellings in ini files).
    pub takes_value: bool,
    pub implies: Implies,
}

macro_rules! declare_options {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $kind:ident, $implies:ident, $($help:expr),+; )*) => {
        /// The options this plugin registers.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Opt { $( $(#[$doc])* $variant ),* }

        /// Every option, in the order of uWSGI's table (`--help` lists them in this order).
        pub const OPTIONS: &[OptionDecl] = &[ $( OptionDecl {
            opt: Opt::$variant,
            name: $name,
            help: help(concat!($($help),+, "\0")),
            takes_value: declare_options!(@value $kind),
            implies: Implies::$implies,
        } ),* ];
    };
    (@value value) => { true };
    (@value flag) => { false };
}

/// A help text as uWSGI's table needs it (NUL-terminated); a bad one fails the build.
const fn help(text: &'static str) -> &'static CStr {
    match CStr::from_bytes_with_nul(text.as_bytes()) {
        Ok(c) => c,
        Err(_) => panic!("a help text contains a NUL byte"),
    }
}

declare_options! {
    Server = c"prometheus-server", value, MasterAndMetrics,
        "serve Prometheus metrics from the master on ADDR (host:port, :port, [v6]:port or a UNIX socket path); implies --master and --enable-metrics";
    ServerMode = c"prometheus-server-mode", value, Nothing,
        "permission bits (octal, e.g. 660) of --prometheus-server UNIX sockets";
    ServerOwner = c"prometheus-server-owner", value, Nothing,
        "owner (USER or USER:GROUP) of --prometheus-server UNIX sockets";
    Path = c"prometheus-path", value, Nothing,
        "path of the metrics on --prometheus-server (default ", default_path!(), ")";
    Allow = c"prometheus-allow", value, Nothing,
        "comma-separated networks (10.0.0.0/8, ::1) allowed to connect to --prometheus-server over TCP; others get 403";
    BasicAuth = c"prometheus-basic-auth", value, Nothing,
        "require HTTP basic auth on --prometheus-server: USER:sha256:HEX (HEX = sha256 of the password); /healthz and /readyz stay open";
    ReadyQueue = c"prometheus-ready-queue", value, Nothing,
        "/readyz of --prometheus-server answers 503 when a socket has N or more connections waiting to be accepted (default: the socket's backlog / ", ready_queue_divisor!(), ", rounded up; 0: queues not judged)";
    Prefix = c"prometheus-prefix", value, Nothing,
        "prefix of every exported metric family (default ", default_prefix!(), ")";
    NoWorkers = c"prometheus-no-workers", flag, Nothing,
        "do not export per-worker (uwsgi_worker_*) families";
    NoCores = c"prometheus-no-cores", flag, Nothing,
        "do not export per-core (thread or async core) series";
    Include = c"prometheus-include", value, Nothing,
        "export only the families whose name matches GLOB (repeatable, or comma-separated; * any run, ? one character, [a-z] a set): the name of the text format's # TYPE line, prefix included (uwsgi_worker_*; a counter's ends in _total, and also matches without it); application families included";
    Exclude = c"prometheus-exclude", value, Nothing,
        "do not export the families whose name matches GLOB (repeatable, or comma-separated; same matching as --prometheus-include, and wins over it); decided once at startup for uWSGI's families";
    NoHelp = c"prometheus-no-help", flag, Nothing,
        "omit # HELP lines";
    NoType = c"prometheus-no-type", flag, Nothing,
        "omit # TYPE lines";
    Buckets = c"prometheus-buckets", value, Nothing,
        "bounds of the request-duration histogram buckets, in seconds, comma-separated (default ", default_buckets!(), ")";
    NoHistograms = c"prometheus-no-histograms", flag, Nothing,
        "do not record request-duration histograms (no after-request hook)";
    NativeSchema = c"prometheus-native-schema", value, Nothing,
        "schema (-4..8, default ", default_native_schema!(), "; buckets grow by a factor of 2^(2^-schema)) of the native request histogram served to Prometheus in protobuf";
    Exemplars = c"prometheus-exemplars", flag, Nothing,
        "attach the W3C traceparent trace id of the latest request of each histogram bucket as an OpenMetrics exemplar";
    QueueTime = c"prometheus-queue-time", flag, Nothing,
        "record uwsgi_request_queue_seconds, the time from the front proxy receiving each request to uWSGI starting it, from its X-Request-Start or X-Queue-Start header (t=SECONDS.MILLIS as nginx's t=${msec}, or seconds, milliseconds or microseconds since the epoch, told apart by magnitude); the proxy must set the header on every request (off by default: the header is never read)";
    RouteLabel = c"prometheus-route-label", flag, Nothing,
        "add a route label to the request histograms, from the request's logvar route (set by the application: uwsgi.set_logvar('route', '/users/<id>')), else from the first --prometheus-route rule matching PATH_INFO, else route=\"other\"";
    Route = c"prometheus-route", value, Nothing,
        "'REGEX NAME' (repeatable, first match wins, after the logvar route): requests whose PATH_INFO matches REGEX get route=NAME, e.g. '^/api/users/[0-9]+$ /api/users/:id'; implies --prometheus-route-label";
    RouteMax = c"prometheus-route-max", value, Nothing,
        "distinct routes kept (default ", default_route_max!(), ", at most ", max_route_max!(), "); a new route past them counts as route=\"other\" and in uwsgi_route_overflow_total";
    NoGzip = c"prometheus-no-gzip", flag, Nothing,
        "never compress answers (by default they are gzipped when the client's Accept-Encoding allows it and the body is at least ", gzip_min_size!(), " bytes)";
    Label = c"prometheus-label", value, Nothing,
        "add the label NAME=VALUE to every exported series (repeatable), e.g. to tell several instances on one host apart";
    Compat = c"prometheus-compat", value, Nothing,
        "uwsgi_exporter: export the families timonwong/uwsgi_exporter exports, under its names, types and labels (the plugin's other families keep their names)";
    CompatStatsUri = c"prometheus-compat-stats-uri", value, Nothing,
        "value of the stats_uri label in --prometheus-compat uwsgi_exporter mode (default: uWSGI's --stats address, or empty)";
    VassalSocket = c"prometheus-vassal-socket", value, Nothing,
        "in an Emperor serving emperor = prometheus://ADDR: merge every vassal's own exposition, fetched at scrape time from the UNIX socket PATTERN, where {vassal} is the vassal's file name without its extension (e.g. /run/uwsgi/{vassal}.prom.sock)";
    AppMetrics = c"prometheus-app-metrics", flag, MasterAndMetrics,
        "keep the values of the application's prometheus_client metrics in shared memory (import the metrics_prometheus Python package first, e.g. shared-pyimport = metrics_prometheus) and export them with uWSGI's; implies --master";
    AppSeries = c"prometheus-app-series", value, Nothing,
        "entries of the application metrics' table, fixed at startup (default ", default_app_series!(), ", at most ", max_app_series!(), "); each sample (a counter, a gauge, a histogram bucket) takes one";
    VassalTimeout = c"prometheus-vassal-timeout", value, Nothing,
        "milliseconds a scrape of the Emperor waits for the vassals' expositions (default ", default_vassal_timeout_ms!(), ", at most ", max_vassal_timeout_ms!(), "); a vassal that has not answered by then is reported with uwsgi_vassal_scrape_up 0";
}

impl Opt {
    /// The declaration of this option.
    pub fn decl(self) -> &'static OptionDecl {
        OPTIONS
            .iter()
            .find(|d| d.opt == self)
            .expect("every Opt variant is declared in OPTIONS by the same macro")
    }

    /// The option's name without `--`.
    pub fn name(self) -> &'static str {
        self.decl().name.to_str().unwrap_or("prometheus-?")
    }

    pub fn takes_value(self) -> bool {
        self.decl().takes_value
    }
}

/// A bad option value: startup stops with this message, which names the option and never
/// echoes a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub opt: Opt,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid value for --{}: {}",
            self.opt.name(),
            self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// Turns a parser's error for `opt` into the startup message.
    fn of<E: std::fmt::Display>(opt: Opt) -> impl Fn(E) -> ConfigError {
        move |e| ConfigError {
            opt,
            reason: e.to_string(),
        }
    }
}

impl Config {
    /// Applies one option occurrence. `value` is `None` for flags.
    pub fn apply(&mut self, opt: Opt, value: Option<&str>) -> Result<(), ConfigError> {
        self.set(opt, value)?;
        if !self.given.contains(&opt) {
            self.given.push(opt);
        }
        Ok(())
    }

    /// [`Config::apply`] but for the record of what was given.
    fn set(&mut self, opt: Opt, value: Option<&str>) -> Result<(), ConfigError> {
        match opt {
            Opt::Server
            | Opt::ServerMode
            | Opt::ServerOwner
            | Opt::Path
            | Opt::Allow
            | Opt::BasicAuth
            | Opt::ReadyQueue => self.set_server(opt, value),
            Opt::Buckets
            | Opt::NoHistograms
            | Opt::Exemplars
            | Opt::NativeSchema
            | Opt::QueueTime
            | Opt::RouteLabel
            | Opt::Route
            | Opt::RouteMax => self.set_histograms(opt, value),
            Opt::VassalSocket | Opt::VassalTimeout => self.set_emperor(opt, value),
            Opt::AppMetrics => {
                self.app_metrics = flag(value).map_err(ConfigError::of(opt))?;
                Ok(())
            }
            Opt::AppSeries => {
                let v = value.unwrap_or("").trim();
                self.app_series = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=crate::defaults::MAX_APP_SERIES).contains(n))
                    .ok_or_else(|| ConfigError {
                        opt,
                        reason: format!(
                            "'{v}' is not a number of series from 1 to {}",
                            crate::defaults::MAX_APP_SERIES
                        ),
                    })?;
                Ok(())
            }
            // Listed, not `_`: a new option must be given a group here (the compiler says so),
            // never fall into one whose `match` does not know it.
            Opt::Prefix
            | Opt::NoWorkers
            | Opt::NoCores
            | Opt::Include
            | Opt::Exclude
            | Opt::NoHelp
            | Opt::NoType
            | Opt::NoGzip
            | Opt::Label
            | Opt::Compat
            | Opt::CompatStatsUri => self.set_format(opt, value),
        }
    }

    /// The dedicated server: where it listens and who may ask.
    fn set_server(&mut self, opt: Opt, value: Option<&str>) -> Result<(), ConfigError> {
        let err = ConfigError::of::<String>(opt);
        match opt {
            Opt::Server => {
                let addr = parse_server_addr(value.unwrap_or("")).map_err(ConfigError::of(opt))?;
                if !self.servers.contains(&addr) {
                    self.servers.push(addr);
                }
            }
            Opt::ServerMode => {
                let v = value.unwrap_or("");
                let mode = u32::from_str_radix(v, 8)
                    .ok()
                    .filter(|m| !v.is_empty() && *m <= 0o777)
                    .ok_or_else(|| err(format!("'{v}' is not an octal mode such as 660")))?;
                self.server_mode = Some(mode);
            }
            Opt::ServerOwner => {
                let v = value.unwrap_or("").trim();
                let (user, group) = match v.split_once(':') {
                    Some((u, g)) => (u, Some(g)),
                    None => (v, None),
                };
                let ok = |n: &str| {
                    !n.is_empty()
                        && n.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                };
                if !ok(user) || group.is_some_and(|g| !ok(g)) {
                    return Err(err(format!("'{v}': expected USER or USER:GROUP")));
                }
                self.server_owner = Some((user.to_string(), group.map(str::to_string)));
            }
            Opt::Path => {
                let p = value.unwrap_or("");
                crate::http::validate_path(p).map_err(ConfigError::of(opt))?;
                self.path = p.to_string();
            }
            Opt::Allow => {
                for part in value.unwrap_or("").split(',') {
                    let cidr = Cidr::parse(part).map_err(ConfigError::of(opt))?;
                    if !self.allow.contains(&cidr) {
                        self.allow.push(cidr);
                    }
                }
            }
            Opt::BasicAuth => {
                self.basic_auth =
                    Some(BasicAuth::parse(value.unwrap_or("")).map_err(ConfigError::of(opt))?);
            }
            Opt::ReadyQueue => {
                let v = value.unwrap_or("").trim();
                let n = v.parse::<u32>().map_err(|_| {
                    err(format!(
                        "'{v}' is not a number of waiting connections (0 turns the check off)"
                    ))
                })?;
                self.ready_queue = QueueLimit::from_option(n);
            }
            _ => unreachable!("server options only"),
        }
        Ok(())
    }

    /// What is exported and how it is named.
    fn set_format(&mut self, opt: Opt, value: Option<&str>) -> Result<(), ConfigError> {
        let err = ConfigError::of::<String>(opt);
        match opt {
            Opt::Prefix => {
                let p = value.unwrap_or("");
                crate::format::validate_prefix(p).map_err(ConfigError::of(opt))?;
                self.format.prefix = p.to_string();
            }
            // Flags take uWSGI's boolean spellings, so `prometheus-no-help = false` in an ini
            // file means what it says.
            Opt::NoWorkers => self.format.workers = !flag(value).map_err(ConfigError::of(opt))?,
            Opt::NoCores => self.format.cores = !flag(value).map_err(ConfigError::of(opt))?,
            Opt::Include | Opt::Exclude => {
                let filter = &mut self.format.families;
                let list = if opt == Opt::Include {
                    &mut filter.include
                } else {
                    &mut filter.exclude
                };
                let globs = value
                    .unwrap_or("")
                    .split(',')
                    .map(crate::format::Glob::parse)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(ConfigError::of(opt))?;
                for glob in globs {
                    if !list.contains(&glob) {
                        list.push(glob);
                    }
                }
            }
            Opt::NoHelp => self.format.help = !flag(value).map_err(ConfigError::of(opt))?,
            Opt::NoType => self.format.types = !flag(value).map_err(ConfigError::of(opt))?,
            Opt::NoGzip => self.gzip = !flag(value).map_err(ConfigError::of(opt))?,
            Opt::Label => {
                let (name, value) = crate::format::parse_label(value.unwrap_or(""))
                    .map_err(ConfigError::of(opt))?;
                if self.format.labels.iter().any(|(k, _)| *k == name) {
                    return Err(err(format!("label {name:?} given twice")));
                }
                self.format.labels.push((name, value));
            }
            Opt::Compat => {
                self.compat = match value.unwrap_or("").trim() {
                    "uwsgi_exporter" => Some(Compat::UwsgiExporter),
                    "" | "none" => None,
                    v => {
                        return Err(err(format!(
                            "'{v}' is not a known exporter (known: uwsgi_exporter, none)"
                        )))
                    }
                };
            }
            Opt::CompatStatsUri => {
                self.compat_stats_uri = Some(value.unwrap_or("").to_owned());
            }
            _ => unreachable!("format options only"),
        }
        Ok(())
    }

    /// The request histograms.
    fn set_histograms(&mut self, opt: Opt, value: Option<&str>) -> Result<(), ConfigError> {
        let err = ConfigError::of::<String>(opt);
        match opt {
            Opt::Buckets => {
                self.buckets_us =
                    parse_buckets(value.unwrap_or("")).map_err(ConfigError::of(opt))?
            }
            Opt::NoHistograms => self.histograms = !flag(value).map_err(ConfigError::of(opt))?,
            Opt::Exemplars => self.exemplars = flag(value).map_err(ConfigError::of(opt))?,
            Opt::QueueTime => self.queue_time = flag(value).map_err(ConfigError::of(opt))?,
            Opt::RouteLabel => self.route_label = flag(value).map_err(ConfigError::of(opt))?,
            Opt::Route => {
                let rule = crate::routes::RouteRule::parse(value.unwrap_or("")).map_err(err)?;
                self.routes.push(rule);
            }
            Opt::RouteMax => {
                let v = value.unwrap_or("").trim();
                let max = crate::defaults::MAX_ROUTE_MAX;
                self.route_max = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        err(format!("'{v}' is not a number of routes from 1 to {max}"))
                    })?;
            }
            Opt::NativeSchema => {
                let v = value.unwrap_or("").trim();
                self.native_schema = v
                    .parse::<i8>()
                    .ok()
                    .filter(|s| (-4..=8).contains(s))
                    .ok_or_else(|| err(format!("'{v}' is not a schema from -4 to 8")))?;
            }
            _ => unreachable!("histograms options only"),
        }
        Ok(())
    }

    /// The Emperor's merge of its vassals' expositions.
    fn set_emperor(&mut self, opt: Opt, value: Option<&str>) -> Result<(), ConfigError> {
        let err = ConfigError::of::<String>(opt);
        match opt {
            Opt::VassalSocket => {
                let v = value.unwrap_or("").trim();
                if !v.contains("{vassal}") || v.contains('\0') {
                    return Err(err(format!(
                        "'{v}' must be a UNIX socket path containing {{vassal}}, e.g. /run/uwsgi/{{vassal}}.prom.sock"
                    )));
                }
                self.vassal_socket = Some(v.to_string());
            }
            Opt::VassalTimeout => {
                let v = value.unwrap_or("").trim();
                self.vassal_timeout_ms = v
                    .parse::<u32>()
                    .ok()
                    .filter(|ms| (10..=MAX_VASSAL_TIMEOUT_MS).contains(ms))
                    .ok_or_else(|| {
                        err(format!(
                            "'{v}' is not a number of milliseconds from 10 to {MAX_VASSAL_TIMEOUT_MS}"
                        ))
                    })?;
            }
            _ => unreachable!("emperor options only"),
        }
        Ok(())
    }
}

/// A flag's value as uWSGI spells booleans (no value means true).
/// Two options that cannot both do what they say: startup stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub opt: Opt,
    pub reason: &'static str,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--{}: {}", self.opt.name(), self.reason)
    }
}

impl std::error::Error for Conflict {}

/// An option that the rest of the configuration leaves without effect: logged once at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub opt: Opt,
    pub reason: &'static str,
}

impl std::fmt::Display for Ignored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--{} is ignored: {}", self.opt.name(), self.reason)
    }
}

impl Config {
    fn given(&self, opt: Opt) -> bool {
        self.given.contains(&opt)
    }

    /// Whether the request histograms carry a `route` label.
    pub fn routes_on(&self) -> bool {
        self.route_label || !self.routes.is_empty()
    }

    /// Once every option is parsed: a combination that would mislead (exemplars or the
    /// queue-time histogram without the request histograms whose hook records them, credentials or networks that protect nothing while the
    /// metrics stay reachable through the route action) is a [`Conflict`]; an option that
    /// merely has nothing to act on is [`Ignored`]. `emperor` is true when an `emperor =
    /// prometheus://ADDR` monitor is configured (its listener takes the server options too).
    pub fn check(&self, emperor: bool) -> Result<Vec<Ignored>, Conflict> {
        let conflict = |opt, reason| Err(Conflict { opt, reason });
        let listener = !self.servers.is_empty() || emperor;
        if self.exemplars && !self.histograms {
            return conflict(
                Opt::Exemplars,
                "exemplars live in the request histograms, which --prometheus-no-histograms \
                 turns off; give one of the two",
            );
        }
        if self.queue_time && !self.histograms {
            return conflict(
                Opt::QueueTime,
                "the queue-time histogram is recorded by the after-request hook of the request \
                 histograms, which --prometheus-no-histograms turns off; give one of the two",
            );
        }
        if self.routes_on() && !self.histograms {
            let opt = if self.routes.is_empty() {
                Opt::RouteLabel
            } else {
                Opt::Route
            };
            return conflict(
                opt,
                "the route label is a label of the request histograms, which \
                 --prometheus-no-histograms turns off; give one of the two",
            );
        }
        if crate::routes::distinct_names(&self.routes) > self.route_max {
            return conflict(
                Opt::Route,
                "the rules name more distinct routes than --prometheus-route-max keeps; raise \
                 it or merge routes",
            );
        }
        if self.given(Opt::BasicAuth) && !listener {
            return conflict(
                Opt::BasicAuth,
                "it protects --prometheus-server, and none is configured (the route action \
                 is protected by uWSGI's own routing, e.g. the basicauth route)",
            );
        }
        if self.given(Opt::Allow) && !listener {
            return conflict(
                Opt::Allow,
                "it restricts --prometheus-server, and none is configured (restrict the route \
                 action with uWSGI's routing, e.g. a remote-addr route)",
            );
        }
        let tcp = emperor
            || self
                .servers
                .iter()
                .any(|s| matches!(s, ServerAddr::Tcp { .. }));
        let unix = emperor
            || self
                .servers
                .iter()
                .any(|s| matches!(s, ServerAddr::Unix(_)));
        let no_histograms = "--prometheus-no-histograms turns the request histograms off";
        let rules = [
            (Opt::Buckets, !self.histograms, no_histograms),
            (Opt::NativeSchema, !self.histograms, no_histograms),
            (
                Opt::RouteMax,
                !self.routes_on(),
                "it bounds the route label, which neither --prometheus-route-label nor \
                 --prometheus-route turns on",
            ),
            (
                Opt::CompatStatsUri,
                self.compat.is_none(),
                "it only labels the --prometheus-compat uwsgi_exporter families",
            ),
            (
                Opt::Path,
                !listener,
                "it is the path of --prometheus-server, and none is configured (the route \
                 action answers on its route's own path)",
            ),
            (
                Opt::ReadyQueue,
                self.servers.is_empty(),
                "it is for /readyz of --prometheus-server, and none is configured",
            ),
            (
                Opt::ServerMode,
                !unix,
                "no --prometheus-server listens on a UNIX socket",
            ),
            (
                Opt::ServerOwner,
                !unix,
                "no --prometheus-server listens on a UNIX socket",
            ),
            (
                Opt::Allow,
                !tcp,
                "it applies to TCP clients, and every --prometheus-server is a UNIX socket \
                 (protect those with --prometheus-server-mode and -owner)",
            ),
            (
                Opt::VassalSocket,
                !emperor,
                "only an Emperor serving emperor = prometheus://ADDR merges vassal expositions",
            ),
            (
                Opt::AppSeries,
                !self.app_metrics,
                "it sizes the table of --prometheus-app-metrics, which is off",
            ),
            (
                Opt::VassalTimeout,
                !self.given(Opt::VassalSocket),
                "it bounds the wait for --prometheus-vassal-socket, which is not given",
            ),
        ];
        Ok(rules
            .into_iter()
            .filter(|&(opt, unused, _)| unused && self.given(opt))
            .map(|(opt, _, reason)| Ignored { opt, reason })
            .collect())
    }
}

fn flag(value: Option<&str>) -> Result<bool, ValueError> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("1") | Some("true") | Some("yes") | Some("on") => Ok(true),
        Some("0") | Some("false") | Some("no") | Some("off") => Ok(false),
        Some(v) => Err(ValueError::NotBoolean(v.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(h: &str, p: u16) -> ServerAddr {
        ServerAddr::Tcp {
            host: h.into(),
            port: p,
        }
    }

    #[test]
    fn server_addresses() {
        assert_eq!(
            parse_server_addr("127.0.0.1:9101"),
            Ok(tcp("127.0.0.1", 9101))
        );
        assert_eq!(parse_server_addr(":9101"), Ok(tcp("0.0.0.0", 9101)));
        assert_eq!(parse_server_addr("localhost:0"), Ok(tcp("localhost", 0)));
        assert_eq!(parse_server_addr("[::1]:9101"), Ok(tcp("::1", 9101)));
        assert_eq!(
            parse_server_addr("/run/uwsgi/metrics.sock"),
            Ok(ServerAddr::Unix("/run/uwsgi/metrics.sock".into()))
        );
        assert_eq!(
            parse_server_addr("./m.sock"),
            Ok(ServerAddr::Unix("./m.sock".into()))
        );
        for bad in [
            "",
            "9101",
            "host:",
            "host:99999",
            "::1:80",
            "[zz]:80",
            "[::1]80",
            "h:-1",
        ] {
            assert!(parse_server_addr(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(tcp("::1", 5).to_string(), "[::1]:5");
    }

    #[test]
    fn networks() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("test address");
        let n = Cidr::parse("10.0.0.0/8").expect("valid");
        assert!(n.contains(ip("10.1.2.3")) && !n.contains(ip("11.0.0.1")));
        assert!(n.contains(ip("::ffff:10.9.9.9")));
        assert!(!n.contains(ip("::1")));
        let h = Cidr::parse("127.0.0.1").expect("valid");
        assert!(h.contains(ip("127.0.0.1")) && !h.contains(ip("127.0.0.2")));
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("valid")
            .contains(ip("1.2.3.4")));
        let mapped = Cidr::parse("::ffff:10.0.0.0/104").expect("valid");
        assert!(mapped.contains(ip("10.2.3.4")) && mapped.contains(ip("::ffff:10.0.0.1")));
        assert!(!mapped.contains(ip("11.0.0.1")));
        assert!(Cidr::parse("::/0").expect("valid").contains(ip("1.2.3.4")));
        let v6 = Cidr::parse("fd00::/8").expect("valid");
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        for bad in ["", "10.0.0.0/33", "::/129", "host", "10.0.0.0/x"] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn basic_auth_values() {
        let hex = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";
        let a = BasicAuth::parse(&format!("prom:sha256:{hex}")).expect("valid");
        assert_eq!(a.user, "prom");
        assert_eq!(a.sha256[0], 0x5e);
        assert_eq!(format!("{a:?}"), "BasicAuth(<redacted>)");
        for bad in [
            "prom:password",
            ":sha256:00",
            "prom:sha256:zz",
            "prom:sha256:",
        ] {
            assert!(BasicAuth::parse(bad).is_err(), "{bad:?}");
        }
        let mut c = Config::default();
        let e = c
            .apply(Opt::BasicAuth, Some("prom:secret-password"))
            .expect_err("plain passwords are refused")
            .to_string();
        assert!(!e.contains("secret-password"), "{e}");
        c.apply(Opt::Allow, Some("127.0.0.1, 10.0.0.0/8"))
            .expect("valid option");
        assert_eq!(c.allow.len(), 2);
    }

    #[test]
    fn errors_name_the_option() {
        let mut c = Config::default();
        let e = c.apply(Opt::Server, Some("nope")).unwrap_err();
        assert_eq!(e.opt, Opt::Server);
        let e = e.to_string();
        assert!(
            e.starts_with("invalid value for --prometheus-server: "),
            "{e}"
        );
        let e = c.apply(Opt::Prefix, Some("9bad")).unwrap_err().to_string();
        assert!(
            e.starts_with("invalid value for --prometheus-prefix: "),
            "{e}"
        );
        assert_eq!(c, Config::default());
    }

    #[test]
    fn include_and_exclude() {
        let mut c = Config::default();
        assert!(c.format.families.is_empty());
        c.apply(Opt::Include, Some("uwsgi_worker_*, uwsgi_requests_total"))
            .expect("valid patterns");
        c.apply(Opt::Include, Some("uwsgi_worker_*"))
            .expect("again");
        c.apply(Opt::Exclude, Some("uwsgi_worker_core_*"))
            .expect("valid pattern");
        let pats = |l: &[crate::format::Glob]| -> Vec<String> {
            l.iter().map(|g| g.as_str().to_owned()).collect()
        };
        assert_eq!(
            pats(&c.format.families.include),
            ["uwsgi_worker_*", "uwsgi_requests_total"]
        );
        assert_eq!(pats(&c.format.families.exclude), ["uwsgi_worker_core_*"]);
        let before = c.clone();
        for bad in ["", "a,", "uwsgi-x", "x[", "ok,a.b"] {
            let e = c.apply(Opt::Exclude, Some(bad)).unwrap_err().to_string();
            assert!(
                e.starts_with("invalid value for --prometheus-exclude: "),
                "{e}"
            );
        }
        assert_eq!(c, before, "a refused value changes nothing");
        assert_eq!(c.check(false), Ok(vec![]));
    }

    #[test]
    fn vassal_options() {
        let mut c = Config::default();
        c.apply(Opt::VassalSocket, Some("/run/uwsgi/{vassal}.prom.sock"))
            .unwrap();
        assert_eq!(
            c.vassal_socket.as_deref(),
            Some("/run/uwsgi/{vassal}.prom.sock")
        );
        assert!(c.apply(Opt::VassalSocket, Some("/run/x.sock")).is_err());
        c.apply(Opt::VassalTimeout, Some("250")).unwrap();
        assert_eq!(c.vassal_timeout_ms, 250);
        for bad in ["", "5", "10001", "1s"] {
            assert!(c.apply(Opt::VassalTimeout, Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_are_declared_once() {
        let mut names: Vec<&str> = OPTIONS.iter().map(|d| d.opt.name()).collect();
        assert_eq!(names.len(), 30);
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), OPTIONS.len(), "duplicate option name");
        for d in OPTIONS {
            assert!(d.name.to_str().is_ok_and(|n| n.starts_with("prometheus-")));
            assert!(!d.help.to_bytes().is_empty());
            assert_eq!(d.opt.decl().name, d.name);
        }
        assert!(Opt::Server.takes_value() && !Opt::NoHelp.takes_value());
        assert_eq!(Opt::Server.decl().implies, Implies::MasterAndMetrics);
    }

    #[test]
    fn labels_and_compat() {
        let mut c = Config::default();
        c.apply(Opt::Label, Some("host=web-1"))
            .expect("valid label");
        c.apply(Opt::Label, Some("dc=eu=1")).expect("valid label");
        assert_eq!(
            c.format.labels,
            [
                ("host".to_string(), "web-1".to_string()),
                ("dc".to_string(), "eu=1".to_string())
            ]
        );
        for bad in ["host=again", "worker=1", "__x=1", "x", "a-b=1", "e="] {
            let e = c.apply(Opt::Label, Some(bad)).unwrap_err().to_string();
            assert!(
                e.starts_with("invalid value for --prometheus-label: "),
                "{e}"
            );
        }
        assert_eq!(c.format.labels.len(), 2);
        assert_eq!(c.compat, None);
        c.apply(Opt::Compat, Some("uwsgi_exporter")).expect("known");
        assert_eq!(c.compat, Some(Compat::UwsgiExporter));
        let e = c
            .apply(Opt::Compat, Some("statsd"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid value for --prometheus-compat: 'statsd'"),
            "{e}"
        );
        c.apply(Opt::CompatStatsUri, Some("unix:///run/stats.sock"))
            .expect("any value");
        assert_eq!(
            c.compat_stats_uri.as_deref(),
            Some("unix:///run/stats.sock")
        );
    }

    #[test]
    fn buckets() {
        assert_eq!(
            parse_buckets("0.005, 1,0.5"),
            Ok(vec![5_000, 500_000, 1_000_000])
        );
        assert_eq!(
            parse_buckets(".25,3600,0.000001"),
            Ok(vec![1, 250_000, 3_600_000_000])
        );
        for bad in [
            "",
            "0",
            "-1",
            "1e-3",
            "0.0000001",
            "3600.000001",
            "abc",
            "1,,2",
            "1,1.0",
            "inf",
            "NaN",
            " ",
            "1.2.3",
        ] {
            assert!(parse_buckets(bad).is_err(), "{bad:?}");
        }
        let many = (1..=33)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert!(parse_buckets(&many).is_err());
        let mut c = Config::default();
        assert_eq!(
            c.buckets_us,
            [
                5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
                5_000_000, 10_000_000
            ]
        );
        assert!(c.histograms && !c.exemplars);
        let e = c
            .apply(Opt::Buckets, Some("0.1,x"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid value for --prometheus-buckets: 'x'"),
            "{e}"
        );
        assert_eq!(c.native_schema, 3);
        c.apply(Opt::NativeSchema, Some("-4"))
            .expect("valid schema");
        assert_eq!(c.native_schema, -4);
        for bad in ["9", "-5", "x", ""] {
            assert!(c.apply(Opt::NativeSchema, Some(bad)).is_err(), "{bad:?}");
        }
        c.apply(Opt::NoHistograms, None).expect("flag");
        c.apply(Opt::Exemplars, Some("true")).expect("flag");
        assert!(!c.histograms && c.exemplars);
    }

    #[test]
    fn flags_and_values() {
        let mut c = Config::default();
        c.apply(Opt::Server, Some(":1")).expect("valid option");
        c.apply(Opt::Server, Some(":1")).expect("valid option");
        c.apply(Opt::Prefix, Some("app_")).expect("valid option");
        c.apply(Opt::NoWorkers, None).expect("valid option");
        c.apply(Opt::NoHelp, None).expect("valid option");
        c.apply(Opt::NoType, None).expect("valid option");
        assert_eq!(c.servers, vec![tcp("0.0.0.0", 1)]);
        assert_eq!(c.format.prefix, "app_");
        assert!(!c.format.workers && !c.format.help && !c.format.types);
        c.apply(Opt::NoHelp, Some("false")).expect("valid option");
        assert!(c.format.help);
        assert!(c.apply(Opt::NoType, Some("maybe")).is_err());
        c.apply(Opt::ServerMode, Some("660")).expect("valid option");
        assert_eq!(c.server_mode, Some(0o660));
        for bad in ["", "9", "1000", "rw"] {
            assert!(c.apply(Opt::ServerMode, Some(bad)).is_err(), "{bad:?}");
        }
        c.apply(Opt::ServerOwner, Some("www-data:adm"))
            .expect("valid option");
        assert_eq!(
            c.server_owner,
            Some(("www-data".to_string(), Some("adm".to_string())))
        );
        for bad in ["", ":adm", "a b", "u:"] {
            assert!(c.apply(Opt::ServerOwner, Some(bad)).is_err(), "{bad:?}");
        }
        c.apply(Opt::Path, Some("/m")).expect("valid option");
        assert_eq!(c.path, "/m");
        assert!(c.apply(Opt::Path, Some("m")).is_err());
    }

    fn configured(opts: &[(Opt, Option<&str>)]) -> Config {
        let mut c = Config::default();
        for &(o, v) in opts {
            c.apply(o, v).expect("valid value");
        }
        c
    }

    #[test]
    fn contradictions_stop_startup() {
        let c = configured(&[(Opt::Exemplars, None), (Opt::NoHistograms, None)]);
        let e = c.check(false).unwrap_err();
        assert_eq!(e.opt, Opt::Exemplars);
        assert!(e.to_string().starts_with("--prometheus-exemplars: "), "{e}");
        let c = configured(&[(Opt::NoHistograms, None), (Opt::QueueTime, None)]);
        let e = c.check(false).unwrap_err();
        assert_eq!(e.opt, Opt::QueueTime);
        assert!(
            e.to_string().starts_with("--prometheus-queue-time: "),
            "{e}"
        );
        // Given as false, it asks for nothing.
        let c = configured(&[(Opt::NoHistograms, None), (Opt::QueueTime, Some("false"))]);
        assert_eq!(c.check(false), Ok(vec![]));
        assert!(!Config::default().queue_time);
        let c = configured(&[(Opt::QueueTime, Some("on"))]);
        assert!(c.queue_time && c.check(false) == Ok(vec![]));
        let auth = (
            Opt::BasicAuth,
            Some("u:sha256:".to_owned() + &"a".repeat(64)),
        );
        let c = configured(&[(auth.0, auth.1.as_deref())]);
        assert_eq!(c.check(false).unwrap_err().opt, Opt::BasicAuth);
        // With a listener, or in an Emperor serving prometheus://, they do what they say.
        assert_eq!(c.check(true), Ok(vec![]));
        let c = configured(&[(Opt::Allow, Some("10.0.0.0/8"))]);
        assert_eq!(c.check(false).unwrap_err().opt, Opt::Allow);
        let c = configured(&[
            (Opt::Allow, Some("10.0.0.0/8")),
            (Opt::Server, Some("127.0.0.1:0")),
        ]);
        assert_eq!(c.check(false), Ok(vec![]));
    }

    #[test]
    fn useless_options_are_named() {
        let ignored = |opts: &[(Opt, Option<&str>)], emperor| -> Vec<Opt> {
            let c = configured(opts);
            c.check(emperor)
                .expect("no conflict")
                .iter()
                .map(|i| i.opt)
                .collect()
        };
        let unix = (Opt::Server, Some("/run/m.sock"));
        let tcp = (Opt::Server, Some(":9290"));
        assert_eq!(
            ignored(
                &[
                    (Opt::NoHistograms, None),
                    (Opt::Buckets, Some("0.1")),
                    (Opt::NativeSchema, Some("2")),
                    (Opt::CompatStatsUri, Some("x")),
                    (Opt::Path, Some("/m")),
                    (Opt::ServerMode, Some("660")),
                    (Opt::ServerOwner, Some("www")),
                    (Opt::VassalSocket, Some("/run/{vassal}.sock")),
                    (Opt::VassalTimeout, Some("500")),
                ],
                false
            ),
            [
                Opt::Buckets,
                Opt::NativeSchema,
                Opt::CompatStatsUri,
                Opt::Path,
                Opt::ServerMode,
                Opt::ServerOwner,
                Opt::VassalSocket,
            ]
        );
        assert_eq!(
            ignored(&[tcp, (Opt::ServerMode, Some("660"))], false),
            [Opt::ServerMode]
        );
        assert_eq!(ignored(&[unix, (Opt::ServerMode, Some("660"))], false), []);
        assert_eq!(
            ignored(&[unix, (Opt::Allow, Some("::1"))], false),
            [Opt::Allow]
        );
        assert_eq!(
            ignored(&[(Opt::VassalTimeout, Some("500"))], true),
            [Opt::VassalTimeout]
        );
        assert_eq!(
            ignored(
                &[
                    (Opt::VassalSocket, Some("/run/{vassal}.sock")),
                    (Opt::VassalTimeout, Some("500")),
                    (Opt::ServerMode, Some("660"))
                ],
                true
            ),
            []
        );
        assert_eq!(
            ignored(
                &[
                    (Opt::Compat, Some("uwsgi_exporter")),
                    (Opt::CompatStatsUri, Some("x"))
                ],
                false
            ),
            []
        );
    }

    #[test]
    fn ready_queue_values() {
        let mut c = Config::default();
        assert_eq!(c.ready_queue, QueueLimit::HalfBacklog);
        c.apply(Opt::ReadyQueue, Some(" 3 ")).expect("valid value");
        assert_eq!(c.ready_queue, QueueLimit::At(3));
        c.apply(Opt::ReadyQueue, Some("0")).expect("valid value");
        assert_eq!(c.ready_queue, QueueLimit::Off);
        for bad in ["", "-1", "x", "1.5", "4294967296"] {
            let e = c.apply(Opt::ReadyQueue, Some(bad)).unwrap_err().to_string();
            assert!(
                e.starts_with("invalid value for --prometheus-ready-queue: "),
                "{e}"
            );
        }
        // Only /readyz of --prometheus-server reads it (the Emperor's judges no queue).
        let c = configured(&[(Opt::ReadyQueue, Some("3"))]);
        let ignored: Vec<Opt> = c.check(true).unwrap().iter().map(|i| i.opt).collect();
        assert_eq!(ignored, [Opt::ReadyQueue]);
        let c = configured(&[(Opt::ReadyQueue, Some("3")), (Opt::Server, Some(":9117"))]);
        assert_eq!(c.check(false), Ok(vec![]));
        // The metrics path cannot be a probe's.
        let e = Config::default()
            .apply(Opt::Path, Some("/healthz"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("health endpoint"), "{e}");
    }

    #[test]
    fn help_texts_carry_the_defaults() {
        let help = |o: Opt| o.decl().help.to_str().expect("UTF-8").to_owned();
        assert!(help(Opt::Path).contains("(default /metrics)"));
        assert!(help(Opt::Prefix).contains("(default uwsgi_)"));
        assert!(help(Opt::Buckets).contains(crate::defaults::BUCKETS));
        assert!(help(Opt::NativeSchema).contains("default 3;"));
        assert!(help(Opt::NoGzip).contains("at least 1024 bytes"));
        assert!(help(Opt::VassalTimeout).contains("(default 1000, at most 10000)"));
        assert!(help(Opt::ReadyQueue).contains("(default: the socket's backlog / 2, rounded up;"));
        let d = Config::default();
        assert_eq!(d.native_schema, crate::defaults::NATIVE_SCHEMA);
        assert_eq!(d.path, crate::defaults::PATH);
        assert_eq!(d.format.prefix, crate::defaults::PREFIX);
    }
}
