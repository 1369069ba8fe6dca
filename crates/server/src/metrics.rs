//! Prometheus metrics, in a registry owned by the server state (no global recorder,
//! so several servers can live in one test process).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    pub transport: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
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
        // 100 µs .. ~6.5 s
        let push_latency_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 17));
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
            request_seconds,
            open_streams,
            events_sent,
            push_latency_seconds,
            changes_applied,
            applied_seq,
        }
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
