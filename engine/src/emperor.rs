//! The Emperor's own families (`emperor = prometheus://ADDR`): one series per vassal, labelled
//! `vassal`, from the Emperor's vassal list (the data its `--emperor-stats` server prints), plus
//! the number of vassals. The host copies the list into [`Vassal`]s; [`EmperorView`] renders
//! them through a [`Layout`], rebuilt only when the set of series changes.

use crate::catalogue::{def, FamilyDef};
use crate::format::{Extra, Format, Kind, Layout, Options};

use Kind::{Counter, Gauge};

pub const VASSALS: FamilyDef = def(
    "emperor_vassals",
    Gauge,
    0,
    "Vassals in the Emperor's list (on-demand ones and those being stopped included).",
);
pub const PRESENT: FamilyDef = def(
    "vassal_present",
    Gauge,
    0,
    "Always 1 for every vassal in the Emperor's list (the vassal label is its config file name without the extension).",
);
pub const RUNNING: FamilyDef = def(
    "vassal_running",
    Gauge,
    0,
    "1 when the vassal has a live process (its pid exists), 0 otherwise (on demand, not spawned yet, or gone).",
);
pub const RESPAWNS: FamilyDef = def(
    "vassal_respawns",
    Counter,
    0,
    "Reloads the Emperor ordered for this vassal (config file changed); uWSGI restarts the count when a dead vassal is re-added.",
);
pub const LOYAL: FamilyDef = def(
    "vassal_loyal",
    Gauge,
    0,
    "1 once the vassal announced its loyalty to the Emperor (it started serving).",
);
pub const READY: FamilyDef = def(
    "vassal_ready",
    Gauge,
    0,
    "1 once the vassal reported being spawned (reset on reload).",
);
pub const ACCEPTING: FamilyDef = def(
    "vassal_accepting",
    Gauge,
    0,
    "1 once the vassal reported accepting requests (reset on reload).",
);
pub const ON_DEMAND: FamilyDef = def(
    "vassal_on_demand",
    Gauge,
    0,
    "1 while an on-demand vassal waits for its first connection (no process).",
);
pub const HEARTBEAT_AGE: FamilyDef = def(
    "vassal_heartbeat_age_seconds",
    Gauge,
    0,
    "Seconds since the vassal's last heartbeat (--heartbeat); only for vassals that sent one.",
);

pub const SCRAPE_UP: FamilyDef = def(
    "vassal_scrape_up",
    Gauge,
    0,
    "1 when the vassal's own exposition was fetched and merged into this one (--prometheus-vassal-socket), 0 when it was not running, did not answer in time or answered something else.",
);

/// The per-vassal families, in output order; [`HEARTBEAT_AGE`] comes last and has series only
/// for vassals with a heartbeat.
const PER_VASSAL: [FamilyDef; 7] = [
    PRESENT, RUNNING, RESPAWNS, LOYAL, READY, ACCEPTING, ON_DEMAND,
];

/// One vassal as the Emperor knows it, copied out of its list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vassal {
    /// The name in the Emperor's list: the config file name (`app.ini`).
    pub name: String,
    pub running: bool,
    pub respawns: u64,
    pub loyal: bool,
    pub ready: bool,
    pub accepting: bool,
    /// Unix time of the last heartbeat, 0 when none was received.
    pub last_heartbeat: i64,
    pub on_demand: bool,
    /// Whether its own exposition was merged ([`SCRAPE_UP`]); None when the Emperor does not
    /// merge vassal expositions.
    pub scrape_up: Option<bool>,
}

/// The `vassal` label of a config file name: its base name without the extension, what
/// uWSGI's `%n` is inside that vassal (`app.ini` → `app`; a glob monitor's
/// `/etc/uwsgi/vassals/app.ini` → `app`). A base name whose last dot is followed by anything
/// but ASCII letters and digits (`app.ini:zerg`, `.hidden`) is kept whole.
pub fn vassal_label(name: &str) -> &str {
    let base = match name.rsplit_once('/') {
        Some((_, base)) if !base.is_empty() => base,
        _ => name,
    };
    match base.rsplit_once('.') {
        Some((stem, ext))
            if !stem.is_empty()
                && !ext.is_empty()
                && ext.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            stem
        }
        _ => base,
    }
}

fn value_of(f: &FamilyDef, v: &Vassal, now: i64) -> i64 {
    match f.name {
        "vassal_present" => 1,
        "vassal_running" => v.running as i64,
        "vassal_respawns" => i64::try_from(v.respawns).unwrap_or(i64::MAX),
        "vassal_loyal" => v.loyal as i64,
        "vassal_ready" => v.ready as i64,
        "vassal_accepting" => v.accepting as i64,
        "vassal_on_demand" => v.on_demand as i64,
        "vassal_heartbeat_age_seconds" => (now - v.last_heartbeat).max(0),
        "vassal_scrape_up" => v.scrape_up.unwrap_or(false) as i64,
        _ => 0,
    }
}

/// The rendered view of the Emperor; keeps its layout between scrapes.
pub struct EmperorView {
    opts: Options,
    /// (label, has heartbeat, has scrape_up) of every vassal the layout was built for.
    key: Vec<(String, bool, bool)>,
    layout: Layout,
    values: Vec<i64>,
}

impl EmperorView {
    pub fn new(opts: Options) -> EmperorView {
        let layout = Self::build(&[], &opts);
        EmperorView {
            opts,
            key: Vec::new(),
            layout,
            values: Vec::new(),
        }
    }

    fn build(key: &[(String, bool, bool)], opts: &Options) -> Layout {
        let vassal = |l: &String| vec![("vassal".to_string(), l.clone())];
        let mut extras: Vec<Extra> = vec![VASSALS.series(Vec::new())];
        for f in PER_VASSAL {
            extras.extend(key.iter().map(|(l, _, _)| f.series(vassal(l))));
        }
        extras.extend(
            key.iter()
                .filter(|(_, hb, _)| *hb)
                .map(|(l, _, _)| HEARTBEAT_AGE.series(vassal(l))),
        );
        extras.extend(
            key.iter()
                .filter(|(_, _, up)| *up)
                .map(|(l, _, _)| SCRAPE_UP.series(vassal(l))),
        );
        Layout::with_extras(&[], &extras, opts)
    }

    fn key_of(v: &Vassal) -> (String, bool, bool) {
        (
            vassal_label(&v.name).to_string(),
            v.last_heartbeat > 0,
            v.scrape_up.is_some(),
        )
    }

    /// The layout in use (for its skip report: two vassal files with the same label).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Renders `vassals` (in the Emperor's list order) at Unix time `now` into `out` (cleared
    /// first). Two vassals with the same label: the first one's series win. Returns whether the
    /// layout was rebuilt (the set of series changed).
    pub fn render(&mut self, vassals: &[Vassal], now: i64, fmt: Format, out: &mut Vec<u8>) -> bool {
        let same = self.key.len() == vassals.len()
            && self
                .key
                .iter()
                .zip(vassals)
                .all(|(k, v)| *k == Self::key_of(v));
        if !same {
            self.key = vassals.iter().map(Self::key_of).collect();
            self.layout = Self::build(&self.key, &self.opts);
        }
        self.values.clear();
        self.values.push(vassals.len() as i64);
        for f in PER_VASSAL {
            self.values
                .extend(vassals.iter().map(|v| value_of(&f, v, now)));
        }
        self.values.extend(
            vassals
                .iter()
                .filter(|v| v.last_heartbeat > 0)
                .map(|v| value_of(&HEARTBEAT_AGE, v, now)),
        );
        self.values.extend(
            vassals
                .iter()
                .filter(|v| v.scrape_up.is_some())
                .map(|v| value_of(&SCRAPE_UP, v, now)),
        );
        out.clear();
        self.layout.render(&self.values, fmt, out);
        !same
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(name: &str) -> Vassal {
        Vassal {
            name: name.into(),
            running: true,
            respawns: 2,
            loyal: true,
            ready: true,
            accepting: true,
            ..Vassal::default()
        }
    }

    #[test]
    fn labels_drop_the_extension_only() {
        assert_eq!(vassal_label("app.ini"), "app");
        assert_eq!(vassal_label("a.b.yaml"), "a.b");
        assert_eq!(vassal_label("app"), "app");
        assert_eq!(vassal_label("app.ini:zerg"), "app.ini:zerg");
        assert_eq!(vassal_label(".hidden"), ".hidden");
        assert_eq!(vassal_label("app."), "app.");
    }

    #[test]
    fn labels_of_glob_monitor_paths_are_base_names() {
        // The glob monitor names vassals by the path it matched; %n in the vassal is the base
        // name without extension, and the label must agree with it.
        assert_eq!(vassal_label("/etc/uwsgi/vassals/app.ini"), "app");
        assert_eq!(vassal_label("vassals/a.b.yaml"), "a.b");
        assert_eq!(vassal_label("app.d/x"), "x");
        assert_eq!(vassal_label("/v/.hidden"), ".hidden");
    }

    #[test]
    fn scrape_up_only_when_merging() {
        let mut view = EmperorView::new(Options::default());
        let mut out = Vec::new();
        let mut a = v("a.ini");
        view.render(std::slice::from_ref(&a), 0, Format::Text, &mut out);
        assert!(!String::from_utf8_lossy(&out).contains("scrape_up"));
        a.scrape_up = Some(false);
        assert!(view.render(std::slice::from_ref(&a), 0, Format::Text, &mut out));
        assert!(String::from_utf8_lossy(&out).contains("uwsgi_vassal_scrape_up{vassal=\"a\"} 0\n"));
    }

    #[test]
    fn renders_one_contiguous_family_per_def() {
        let mut view = EmperorView::new(Options::default());
        let mut hb = v("b.xml");
        hb.last_heartbeat = 90;
        hb.on_demand = true;
        hb.running = false;
        let mut out = Vec::new();
        view.render(&[v("a.ini"), hb], 100, Format::Text, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("uwsgi_emperor_vassals 2\n"), "{text}");
        assert!(text.contains("uwsgi_vassal_respawns_total{vassal=\"a\"} 2\n"));
        assert!(text.contains("uwsgi_vassal_running{vassal=\"b\"} 0\n"));
        assert!(text.contains("uwsgi_vassal_on_demand{vassal=\"b\"} 1\n"));
        assert!(text.contains("uwsgi_vassal_heartbeat_age_seconds{vassal=\"b\"} 10\n"));
        assert!(!text.contains("uwsgi_vassal_heartbeat_age_seconds{vassal=\"a\"}"));
        // Each family announced once.
        for f in [
            "uwsgi_vassal_present",
            "uwsgi_vassal_loyal",
            "uwsgi_emperor_vassals",
        ] {
            assert_eq!(text.matches(&format!("# TYPE {f} ")).count(), 1, "{text}");
        }
    }

    #[test]
    fn layout_follows_the_list() {
        let mut view = EmperorView::new(Options::default());
        let mut out = Vec::new();
        view.render(&[v("a.ini"), v("b.ini")], 0, Format::Text, &mut out);
        view.render(&[v("b.ini")], 0, Format::Text, &mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains("uwsgi_emperor_vassals 1\n"));
        assert!(!text.contains("vassal=\"a\""));
        view.render(&[], 0, Format::Text, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("uwsgi_emperor_vassals 0\n"));
        assert!(!text.contains("vassal_present"));
    }
}
