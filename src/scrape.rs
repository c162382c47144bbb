//! One scrape, shared by both front ends, and the exporter state it needs: built once in the
//! master before fork ([`install`]) and inherited by the workers.

use std::sync::OnceLock;

use metrics_prometheus_engine::compat::{self, CompatOptions};
use metrics_prometheus_engine::config::{Compat, Config};
use metrics_prometheus_engine::format::{Exemplar, Format, Layout, MetricType, SkipReason};
use metrics_prometheus_engine::plan::{plan, Source};

use crate::histogram;
use crate::host;
use crate::live::{self, Live};

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
    layout: Layout,
    /// Where each value of the layout comes from (metrics list first, then extras).
    sources: Vec<Source>,
    live: Live,
    /// Answers may be gzipped (`--prometheus-no-gzip` not given); the dedicated server has
    /// its own copy of the setting.
    #[cfg(uwsgi_routing)]
    gzip: bool,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Reads uWSGI's shape and precomputes the exposition. Master, `postinit_apps`, once.
pub(crate) fn install(cfg: &Config) {
    if !host::uwsgi::has_metrics() {
        return;
    }
    let Some(list) = host::metrics::read_metrics_list() else {
        return;
    };
    let (mut topology, live) = live::read(list);
    if histogram::enabled() {
        topology.buckets_us = Some(cfg.buckets_us.clone());
        topology.native_schema = Some(cfg.native_schema);
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
    let layout = Layout::with_histograms(&names, &plan.extras, &plan.histograms, &cfg.format);
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
    let mut sources = plan.sources;
    // Kept for the life of the process: no spare capacity from the planner's pushes.
    sources.shrink_to_fit();
    let _ = EXPORTER.set(Exporter {
        layout,
        sources,
        live,
        #[cfg(uwsgi_routing)]
        gzip: cfg.gzip,
    });
    host::release_free_memory();
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
    /// The rendered exposition.
    pub(crate) out: Vec<u8>,
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
    exp.live
        .fill(&exp.sources, &mut scratch.values, &mut scratch.live);
    histogram::collect(
        &mut scratch.hist,
        &mut scratch.exemplars,
        fmt == Format::Protobuf,
    );
    exp.layout.render_all(
        &scratch.values,
        &scratch.hist,
        &scratch.exemplars,
        fmt,
        &mut scratch.out,
    );
    Ok(())
}
