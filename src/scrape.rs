//! One scrape, shared by both front ends, and the exporter state it needs: built once in the
//! master before fork ([`install`]) and inherited by the workers.

use std::sync::OnceLock;

use metrics_prometheus_engine::app::{render_app, AppFamily, AppRenderStats};
use metrics_prometheus_engine::catalogue as cat;
use metrics_prometheus_engine::compat::{self, CompatOptions};
use metrics_prometheus_engine::config::{Compat, Config};
use metrics_prometheus_engine::emperor::{EmperorView, Vassal};
use metrics_prometheus_engine::format::{
    Exemplar, Format, Histogram, HistogramLayout, Layout, MetricType, Options, SkipReason,
};
use metrics_prometheus_engine::health::{QueueLimit, Verdict};
use metrics_prometheus_engine::plan::{plan, routed_request_labels, Source, REQUEST_SERIES};

use crate::app_metrics;
use crate::host;
use crate::latency;
use crate::live::{self, Live};
use crate::routes;

/// Why a scrape cannot be answered (the front ends send it as a 503 body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScrapeError {
    NoMetrics,
    NoMaster,
}

impl ScrapeError {
    pub(crate) fn body(self) -> &'static str {
        match self {
            ScrapeError::NoMetrics => "uWSGI's metrics subsystem is disabled (enable-metrics = false); metrics_prometheus has nothing to export\n",
            ScrapeError::NoMaster => "uWSGI runs without a master process, so its metrics are never collected; remove master = false\n",
        }
    }
}

struct Exporter {
    /// In a read-only mapping of its own (`host::alloc::freeze`): built before fork, its pages
    /// stay shared by the master and every worker.
    frozen: &'static Frozen,
    /// Answers may be gzipped (`--prometheus-no-gzip` not given); the dedicated server has
    /// its own copy of the setting.
    #[cfg(uwsgi_routing)]
    gzip: bool,
}

/// What a scrape only reads, built once.
#[derive(Clone)]
struct Frozen {
    layout: Layout,
    /// Where each value of the layout comes from (metrics list first, then extras).
    sources: Vec<Source>,
    live: Live,
    /// Rendering options of the application's families (constant labels, HELP, TYPE).
    format: Options,
    /// With the route label: the request histograms the layout holds without series (see
    /// `HistogramLayout`), as exported, whose series each scraper lays out as they appear.
    routed: Vec<Histogram>,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Reads uWSGI's shape and precomputes the exposition, once, in the master before fork (the
/// workers render from the pages they share with it).
///
/// What a scrape reads is copied into a read-only mapping of its own (`host::alloc::freeze`),
/// and everything else the building allocates lives in a scratch mapping, unmapped at the end
/// (`host::alloc::with_scratch`): the heap is left as it was, so the allocations uWSGI and the
/// application make next, and the workers' own, pack as they would without the plugin.
pub(crate) fn install(cfg: &Config) {
    if EXPORTER.get().is_some() || !host::uwsgi::has_metrics() {
        return;
    }
    // The only allocation of the building that outlives it (written at scrapes): made first,
    // in the heap; `live::read`'s own call is then a no-op.
    host::procfs::setup(host::uwsgi::numproc() + 1);
    let (exporter, scratch) = host::alloc::with_scratch(|| build(cfg));
    if let Some(exporter) = exporter {
        let _ = EXPORTER.set(exporter);
    }
    if let host::alloc::Scratch::Kept(bytes) = scratch {
        host::log(&format!(
            "{bytes} bytes allocated while building the exposition are still in use; its \
             scratch memory is kept"
        ));
    }
    host::release_free_memory();
}

fn build(cfg: &Config) -> Option<Exporter> {
    let list = host::metrics::read_metrics_list()?;
    let (mut topology, live) = live::read(list);
    topology.app_series = app_metrics::table().map(|t| t.capacity());
    if latency::enabled() {
        topology.buckets_us = Some(cfg.buckets_us.clone());
        topology.native_schema = Some(cfg.native_schema);
        topology.queue_time = latency::queue_enabled();
        topology.routes = routes::table().is_some();
    }
    let plan = match cfg.compat {
        None => plan(&topology),
        Some(Compat::UwsgiExporter) => compat::plan(
            &topology,
            &CompatOptions {
                stats_uri: cfg
                    .compat_stats_uri
                    .clone()
                    .or_else(|| topology.stats.clone())
                    .unwrap_or_default(),
                workers: cfg.format.workers,
                cores: cfg.format.cores,
            },
        ),
    };
    let names: Vec<(&str, MetricType)> = plan.names.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    let mut histograms = plan.histograms;
    if topology.routes {
        for h in &mut histograms {
            h.series.clear();
        }
    }
    let layout = Layout::with_histograms(&names, &plan.extras, &histograms, &cfg.format);
    let routed = if topology.routes {
        histograms
            .into_iter()
            .enumerate()
            .filter(|(i, _)| layout.histogram_kept(*i))
            .map(|(_, h)| h)
            .collect()
    } else {
        Vec::new()
    };
    // Skips by design (aliases, worker 0, ...) are documented; collisions between the user's
    // own metric names are worth one line each.
    for s in layout.skipped() {
        if matches!(
            s.reason,
            SkipReason::EmptyName
                | SkipReason::TypeConflict { .. }
                | SkipReason::NameClash { .. }
                | SkipReason::DuplicateSeries { .. }
                | SkipReason::LabelClash { .. }
        ) {
            host::log(&format!("not exported: {s}"));
        }
    }
    log_unmatched(&layout, cfg);
    let frozen = keep(Frozen {
        layout,
        sources: plan.sources,
        live,
        format: cfg.format.clone(),
        routed,
    });
    Some(Exporter {
        frozen,
        #[cfg(uwsgi_routing)]
        gzip: cfg.gzip,
    })
}

/// Names, once at startup, each `--prometheus-include`/`--prometheus-exclude` pattern that
/// matches no family of this instance (a typo; a family another option turned off counts as
/// matched). With `--prometheus-app-metrics`, the application's families only appear later: a
/// pattern that could match one of them (any that does not start with the plugin's prefix,
/// which application families may not use) is not judged.
fn log_unmatched(layout: &Layout, cfg: &Config) {
    let filter = &cfg.format.families;
    let prefix = cfg.format.prefix.as_str();
    for &r in layout.unmatched_patterns() {
        let Some(glob) = filter.get(r) else { continue };
        let only_uwsgi = !prefix.is_empty() && glob.literal_prefix().starts_with(prefix);
        if cfg.app_metrics && !only_uwsgi {
            continue;
        }
        host::log(&format!(
            "{r} {}: the pattern matches no family of this instance",
            glob.as_str()
        ));
    }
}

/// `value` for the life of the process: copied out of the heap into a read-only mapping (see
/// `host::alloc::freeze`), the heap's copy freed; where no mapping can be made, the heap's.
fn keep<T: Clone + Sync>(value: T) -> &'static T {
    match host::alloc::freeze(&value) {
        Some(frozen) => frozen,
        None => Box::leak(Box::new(value)),
    }
}

/// Whether the route action may gzip its answers (set at [`install`]).
#[cfg(uwsgi_routing)]
pub(crate) fn gzip_enabled() -> bool {
    EXPORTER.get().is_some_and(|e| e.gzip)
}

/// Scratch space of one scraper (the server, or one thread of the route action), reused so
/// that a steady scrape allocates nothing.
#[derive(Default)]
pub(crate) struct Scratch {
    values: Vec<i64>,
    live: live::Scratch,
    hist: Vec<u64>,
    exemplars: Vec<Option<Exemplar>>,
    /// The Emperor's view and its copy of the vassal list ([`Exposition::Emperor`] only).
    emperor: Option<EmperorView>,
    vassals: Vec<Vassal>,
    /// What this scraper parsed of the application's table, and its families merged at this
    /// scrape.
    app_cache: app_metrics::Cache,
    app_families: Vec<AppFamily>,
    /// What the last scrape skipped of them (logged when it changes).
    app_skips: AppRenderStats,
    /// This scraper's layout of the routed series.
    routed: Routed,
    /// The rendered exposition.
    pub(crate) out: Vec<u8>,
}

impl Scratch {
    /// Gives the pages of the large buffers back to the kernel, keeping their capacity (see
    /// `host::alloc::release_pages`): the next scrape faults them in again, allocation-free.
    pub(crate) fn release_pages(&mut self) {
        host::alloc::release_pages(&mut self.out);
        host::alloc::release_pages(&mut self.values);
        host::alloc::release_pages(&mut self.hist);
        host::alloc::release_pages(&mut self.exemplars);
    }
}

/// A scraper's layout of the request histograms' routed series (`routes.rs`): rebuilt when the
/// shared table's generation moves, that is when a series is recorded for the first time, so
/// at most once per series over the instance's life.
#[derive(Default)]
struct Routed {
    /// The table's generation it was built at (`None`: never built).
    generation: Option<u64>,
    layout: HistogramLayout,
    /// The recorders' series laid out, in layout order: request histogram, queue-time one.
    requests: Vec<usize>,
    queue: Vec<usize>,
}

impl Routed {
    /// Lays out the series recorded so far of the `routed` histograms.
    fn rebuild(&mut self, table: &routes::Table, routed: &[Histogram], opts: &Options) {
        self.generation = Some(table.generation());
        let (mut seen_requests, mut seen_queue) = (Vec::new(), Vec::new());
        table.seen(&mut seen_requests, &mut seen_queue);
        let mut names: Vec<Option<String>> = vec![None; table.ids()];
        let mut name = |id: usize| -> Option<String> {
            let slot = names.get_mut(id)?;
            if slot.is_none() {
                *slot = table
                    .name(id)
                    .map(|b| String::from_utf8_lossy(&b).into_owned());
            }
            slot.clone()
        };
        self.requests.clear();
        self.queue.clear();
        let mut hists = Vec::with_capacity(routed.len());
        for h in routed {
            let mut h = h.clone();
            if h.family == cat::REQUEST_QUEUE {
                for &id in &seen_queue {
                    if let Some(n) = name(id) {
                        h.series.push(vec![("route".to_owned(), n)]);
                        self.queue.push(id);
                    }
                }
            } else {
                for &(id, k) in &seen_requests {
                    if let Some(n) = name(id) {
                        h.series.push(routed_request_labels(k, &n));
                        self.requests.push(id * REQUEST_SERIES + k);
                    }
                }
            }
            hists.push(h);
        }
        self.layout = HistogramLayout::new(&hists, opts);
    }
}

/// What a server exposes: this uWSGI instance (`--prometheus-server`), or the Emperor it runs
/// in (`emperor = prometheus://ADDR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exposition {
    Instance,
    Emperor,
}

/// Rendering options of the Emperor's exposition (set by [`install_emperor`]).
static EMPEROR_OPTS: OnceLock<Options> = OnceLock::new();

/// Fixes the Emperor's rendering options. Emperor, the monitor's `init`, once.
pub(crate) fn install_emperor(cfg: &Config) {
    let _ = EMPEROR_OPTS.set(cfg.format.clone());
}

/// Renders `source` into `scratch.out`.
pub(crate) fn render_source(
    source: Exposition,
    fmt: Format,
    scratch: &mut Scratch,
) -> Result<(), ScrapeError> {
    match source {
        Exposition::Instance => render(fmt, scratch),
        Exposition::Emperor => {
            render_emperor(fmt, scratch);
            Ok(())
        }
    }
}

/// The Emperor's own families, read from its vassal list now. Emperor loop only.
fn render_emperor(fmt: Format, scratch: &mut Scratch) {
    let mut vassals = std::mem::take(&mut scratch.vassals);
    read_vassals(&mut vassals);
    render_vassals(&vassals, fmt, scratch);
    scratch.vassals = vassals;
}

/// The Emperor's vassal list, copied (see `host::emperor::read_vassals`). Emperor loop only.
pub(crate) fn read_vassals(out: &mut Vec<Vassal>) {
    host::emperor::read_vassals(out);
}

/// Renders the Emperor's own families of `vassals` into `scratch.out`.
pub(crate) fn render_vassals(vassals: &[Vassal], fmt: Format, scratch: &mut Scratch) {
    let view = scratch
        .emperor
        .get_or_insert_with(|| EmperorView::new(EMPEROR_OPTS.get().cloned().unwrap_or_default()));
    let now = host::uwsgi::now_us() / 1_000_000;
    if view.render(vassals, now, fmt, &mut scratch.out) {
        // Two vassal files with the same label (`app.ini`, `app.yaml`): said once per change.
        let chosen = |s: &&metrics_prometheus_engine::format::Skipped| {
            matches!(s.reason, SkipReason::Filtered { .. })
        };
        for s in view.layout().skipped().iter().filter(|s| !chosen(s)) {
            host::log(&format!("emperor: not exported: {s}"));
        }
    }
}

/// What `/readyz` answers, read now (see `Live::readiness`). Master only.
pub(crate) fn readiness(
    limit: QueueLimit,
    scratch: &mut Scratch,
) -> Result<Verdict<'static>, ScrapeError> {
    let Some(exp) = EXPORTER.get() else {
        return Err(ScrapeError::NoMetrics);
    };
    Ok(exp.frozen.live.readiness(limit, &mut scratch.live))
}

/// Renders the exposition into `scratch.out`.
pub(crate) fn render(fmt: Format, scratch: &mut Scratch) -> Result<(), ScrapeError> {
    scratch.out.clear();
    let Some(exp) = EXPORTER.get() else {
        return Err(ScrapeError::NoMetrics);
    };
    if !host::uwsgi::has_master() {
        return Err(ScrapeError::NoMaster);
    }
    let exp = exp.frozen;
    exp.live
        .fill(&exp.sources, &mut scratch.values, &mut scratch.live);
    let native = fmt == Format::Protobuf;
    match routes::table().filter(|_| !exp.routed.is_empty()) {
        None => {
            latency::collect(&mut scratch.hist, &mut scratch.exemplars, native, None);
            exp.layout.render_all(
                &scratch.values,
                &scratch.hist,
                &scratch.exemplars,
                fmt,
                &mut scratch.out,
            );
        }
        Some(table) => {
            // The layout's histograms have no series: no values for them.
            exp.layout
                .render_all(&scratch.values, &[], &[], fmt, &mut scratch.out);
            let r = &mut scratch.routed;
            if r.generation != Some(table.generation()) {
                r.rebuild(table, &exp.routed, &exp.format);
            }
            latency::collect(
                &mut scratch.hist,
                &mut scratch.exemplars,
                native,
                Some((&r.requests, &r.queue)),
            );
            before_eof(fmt, &mut scratch.out, |out| {
                r.layout.render(&scratch.hist, &scratch.exemplars, fmt, out);
            });
        }
    }
    if let Some(table) = app_metrics::table() {
        render_app_families(table, &exp.format, fmt, scratch);
    }
    Ok(())
}

/// Runs `append` on `out` with OpenMetrics' closing `# EOF` (if `out` ends with it) moved
/// after what it appends.
fn before_eof<T>(fmt: Format, out: &mut Vec<u8>, append: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    const EOF: &[u8] = b"# EOF\n";
    let eof = fmt == Format::OpenMetrics && out.ends_with(EOF);
    if eof {
        out.truncate(out.len() - EOF.len());
    }
    let result = append(out);
    if eof {
        out.extend_from_slice(EOF);
    }
    result
}

/// Appends the application's families (`--prometheus-app-metrics`) after uWSGI's, before
/// OpenMetrics' `# EOF`.
fn render_app_families(
    table: &app_metrics::Table,
    opts: &Options,
    fmt: Format,
    scratch: &mut Scratch,
) {
    table.collect(
        &mut scratch.app_cache,
        |pid| host::uwsgi::pid_alive(i32::try_from(pid).unwrap_or(0)),
        &mut scratch.app_families,
    );
    let families = &scratch.app_families;
    let stats = before_eof(fmt, &mut scratch.out, |out| {
        render_app(families, fmt, opts, out)
    });
    let skips = (stats.skipped_families, stats.skipped_series);
    if skips
        != (
            scratch.app_skips.skipped_families,
            scratch.app_skips.skipped_series,
        )
    {
        if let Some(first) = stats.first_skip {
            let name = scratch
                .app_families
                .get(first.family)
                .map_or("", |f| f.name.as_str());
            host::log(&format!(
                "application metrics not exported: {} families and {} series (first: {name:?}, \
                 {:?})",
                skips.0, skips.1, first.reason
            ));
        }
    }
    scratch.app_skips = stats;
}
