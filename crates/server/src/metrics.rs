//! Prometheus metrics, in a registry owned by the server state (no global recorder,
//! so several servers can live in one test process).

use std::sync::OnceLock;

use axum::http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A request's labels. Both come from fixed sets, never from the client's bytes:
/// a method outside [`COUNTED_METHODS`] counts as `other`, and the status is the
/// server's own answer, so no request can create a series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    pub transport: &'static str,
}

/// The methods counted under their own name (see [`Metrics::request_counter`]).
const COUNTED_METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];
/// The label of every other method: HTTP lets a client make up any token.
const OTHER_METHOD: &str = "other";
/// Statuses 100..=599 have a slot per method.
const FIRST_STATUS: u16 = 100;
const STATUSES: usize = 500;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    /// `requests`' counter per (method label, status), filled on first use, so
    /// counting a request neither allocates its labels nor hashes them into the
    /// family's locked map. Each is a handle on the family's own counter.
    request_counters: Box<[OnceLock<Counter>]>,
    pub request_seconds: Histogram,
    pub open_streams: Family<TransportLabels, Gauge>,
    pub events_sent: Counter,
    pub push_latency_seconds: Histogram,
    pub changes_applied: Counter,
    pub applied_seq: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("permsync");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        // 50 µs .. ~3 s
        let request_seconds = Histogram::new(exponential_buckets(0.00005, 2.0, 17));
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            request_seconds.clone(),
        );
        let open_streams = Family::<TransportLabels, Gauge>::default();
        registry.register(
            "open_streams",
            "Open event streams by transport",
            open_streams.clone(),
        );
        let events_sent = Counter::default();
        registry.register(
            "events_sent",
            "Events written to streams",
            events_sent.clone(),
        );
        // Commit times are kept to the millisecond, and a push is expected
        // within tens of them.
        let push_latency_seconds = Histogram::new([
            0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]);
        registry.register(
            "push_latency_seconds",
            "Time from a change's commit to its event being written to a stream",
            push_latency_seconds.clone(),
        );
        let changes_applied = Counter::default();
        registry.register(
            "changes_applied",
            "Changelog entries applied to the index",
            changes_applied.clone(),
        );
        let applied_seq = Gauge::default();
        registry.register(
            "applied_seq",
            "The seq of the last change applied",
            applied_seq.clone(),
        );
        Metrics {
            registry,
            requests,
            request_counters: (0..(COUNTED_METHODS.len() + 1) * STATUSES)
                .map(|_| OnceLock::new())
                .collect(),
            request_seconds,
            open_streams,
            events_sent,
            push_latency_seconds,
            changes_applied,
            applied_seq,
        }
    }

    /// The counter of `requests` for a method (any other than the standard ones
    /// counts as `other`) and a status in 100..=599, without allocating or locking
    /// once it exists; `None` for a status outside that range, which no answer has.
    pub fn request_counter(&self, method: &Method, status: u16) -> Option<&Counter> {
        let m = COUNTED_METHODS
            .iter()
            .position(|m| *m == method.as_str())
            .unwrap_or(COUNTED_METHODS.len());
        let s = usize::from(status.checked_sub(FIRST_STATUS)?);
        if s >= STATUSES {
            return None;
        }
        Some(self.request_counters[m * STATUSES + s].get_or_init(|| {
            // A handle on the family's own counter: both count the same requests.
            Counter::clone(&self.requests.get_or_create(&RequestLabels {
                method: COUNTED_METHODS.get(m).copied().unwrap_or(OTHER_METHOD),
                status,
            }))
        }))
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_counters_are_the_familys() {
        let m = Metrics::new();
        m.request_counter(&Method::POST, 200).unwrap().inc();
        m.request_counter(&Method::POST, 200).unwrap().inc();
        let family = m.requests.get_or_create(&RequestLabels {
            method: "POST",
            status: 200,
        });
        assert_eq!(family.get(), 2);
        drop(family);
        let text = m.encode();
        assert!(text.contains(r#"permsync_http_requests_total{method="POST",status="200"} 2"#));
        // Only what was answered is exported.
        assert!(!text.contains(r#"status="404""#));
        // Made-up methods share one series, however many a client invents.
        for i in 0..1000 {
            let odd = Method::from_bytes(format!("X{i:06}M").as_bytes()).unwrap();
            m.request_counter(&odd, 404).unwrap().inc();
        }
        let text = m.encode();
        assert!(text.contains(r#"permsync_http_requests_total{method="other",status="404"} 1000"#));
        assert_eq!(text.matches("status=\"404\"").count(), 1);
        assert!(m.request_counter(&Method::GET, 99).is_none());
        assert!(m.request_counter(&Method::GET, 600).is_none());
        assert!(m.request_counter(&Method::GET, 599).is_some());
    }
}
