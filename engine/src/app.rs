//! Placeholder for the application families' types (the renderer lands from the app-render
//! branch).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppKind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AppFamily {
    pub name: String,
    pub help: String,
    pub kind: AppKind,
    pub series: Vec<AppSeries>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AppSeries {
    pub labels: Vec<(String, String)>,
    pub value: AppValue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AppValue {
    Counter(f64),
    Gauge(f64),
    Histogram { buckets: Vec<(f64, f64)>, sum: f64 },
    Summary { count: f64, sum: f64 },
}
