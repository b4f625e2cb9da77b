//! The metrics themselves, over prometheus-client.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::{BanKind, Outcome};
use crate::client::ClientKey;
use crate::clock::{Clock, Timestamp};
use crate::store::{Store, StoreFuture};

/// The `Content-Type` of [`exposition`]'s text: the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The text a `/metrics` endpoint serves for `registry` (the one given to
/// [`Floodgate::metrics`](crate::Floodgate::metrics), holding floodgate's metrics beside the
/// app's own), in the Prometheus text format, with [`CONTENT_TYPE`].
///
/// # Examples
///
/// ```
/// use actix_web::{web, HttpResponse};
/// use floodgate::metrics::{exposition, Registry, CONTENT_TYPE};
/// use floodgate::Floodgate;
///
/// let mut registry = Registry::default();
/// let floodgate = Floodgate::new().metrics(&mut registry);
/// let registry = web::Data::new(registry);
/// let route = web::get().to(|registry: web::Data<Registry>| async move {
///     match exposition(&registry) {
///         Ok(text) => HttpResponse::Ok().content_type(CONTENT_TYPE).body(text),
///         Err(_) => HttpResponse::InternalServerError().finish(),
///     }
/// });
/// ```
pub fn exposition(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut open = String::new();
    prometheus_client::encoding::text::encode(&mut open, registry)?;
    Ok(prometheus_text(&open))
}

/// OpenMetrics text (what prometheus-client writes) in the Prometheus text format: a
/// counter's `HELP` and `TYPE` name its samples (`x_total`), and there is no `# EOF`.
fn prometheus_text(open: &str) -> String {
    let counters: std::collections::HashSet<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len() + 16 * counters.len());
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?.split_once(' ')?)));
        match meta {
            Some((p, (name, rest))) if counters.contains(name) => {
                let _ = writeln!(out, "{p}{name}_total {rest}");
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Cow<'static, str>,
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreOpLabels {
    store: &'static str,
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabel {
    store: &'static str,
}

/// At most this many bans are followed for `floodgate_bans_active`.
const MAX_BOOK: usize = 100_000;

/// floodgate's metrics, shared by every clone and worker of one `Floodgate`.
#[derive(Debug)]
pub(crate) struct Metrics {
    requests: Family<RequestLabels, Counter>,
    near_limit: Family<RouteLabel, Counter>,
    bans: Family<ReasonLabel, Counter>,
    store_errors: Family<StoreOpLabels, Counter>,
    store_duration: Family<StoreLabel, Histogram>,
    /// The store and clock of the floodgate, known once its middleware starts.
    live: Arc<Live>,
}

/// What the gauges read at scrape time.
#[derive(Debug, Default)]
struct Live {
    store: OnceLock<(Arc<dyn Store>, Arc<dyn Clock>)>,
    /// Bans this process imposed or saw start, by client, with their end (ms; `u64::MAX`
    /// for a blacklist): `floodgate_bans_active` counts those still in force.
    book: Mutex<HashMap<ClientKey, u64>>,
}

/// One route's counters, held by its plan.
#[derive(Debug)]
pub(crate) struct RouteCounters {
    outcomes: [Counter; 6],
    near_limit: Counter,
}

impl RouteCounters {
    pub(crate) fn count(&self, outcome: Outcome) {
        self.outcomes[outcome as usize].inc();
    }

    pub(crate) fn near_limit(&self) {
        self.near_limit.inc();
    }
}

impl Metrics {
    /// Registers floodgate's metrics into `registry`.
    pub(crate) fn register(registry: &mut Registry) -> Arc<Metrics> {
        let m = Metrics {
            requests: Family::default(),
            near_limit: Family::default(),
            bans: Family::default(),
            store_errors: Family::default(),
            store_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 4.0, 9))
            }),
            live: Arc::default(),
        };
        registry.register(
            "floodgate_requests",
            "Requests floodgate decided on, by route and decision",
            m.requests.clone(),
        );
        registry.register(
            "floodgate_near_limit",
            "Allowed requests that left less than 20% of a limit's quota, by route",
            m.near_limit.clone(),
        );
        registry.register(
            "floodgate_bans",
            "Bans floodgate imposed, by reason",
            m.bans.clone(),
        );
        registry.register(
            "floodgate_store_errors",
            "Store operations that failed, by store and operation",
            m.store_errors.clone(),
        );
        registry.register(
            "floodgate_store_duration_seconds",
            "Time the store took to decide a request, for stores that do I/O",
            m.store_duration.clone(),
        );
        registry.register_collector(Box::new(Gauges(m.live.clone())));
        Arc::new(m)
    }

    /// Tells the gauges which store and clock to read (when the middleware starts).
    pub(crate) fn attach(&self, store: &Arc<dyn Store>, clock: &Arc<dyn Clock>) {
        let _ = self.live.store.set((store.clone(), clock.clone()));
    }

    fn store_kind(&self) -> &'static str {
        self.live.store.get().map_or("unknown", |(s, _)| s.kind())
    }

    /// The counters of the route labelled `route`.
    pub(crate) fn route(&self, route: &str) -> RouteCounters {
        let label: Cow<'static, str> = Cow::Owned(route.to_owned());
        let outcomes = Outcome::ALL.map(|o| {
            self.requests
                .get_or_create(&RequestLabels {
                    route: label.clone(),
                    decision: o.label(),
                })
                .clone()
        });
        let near_limit = self
            .near_limit
            .get_or_create(&RouteLabel { route: label })
            .clone();
        RouteCounters {
            outcomes,
            near_limit,
        }
    }

    /// Counts a request decided before its route's plan was chosen.
    pub(crate) fn request(&self, route: &str, outcome: Outcome) {
        self.requests
            .get_or_create(&RequestLabels {
                route: Cow::Owned(route.to_owned()),
                decision: outcome.label(),
            })
            .inc();
    }

    /// Counts a ban that starts, and follows it for `floodgate_bans_active`.
    pub(crate) fn ban(&self, client: &ClientKey, until: Option<Timestamp>, kind: BanKind) {
        self.bans
            .get_or_create(&ReasonLabel {
                reason: kind.label(),
            })
            .inc();
        let end = until.map_or(u64::MAX, Timestamp::as_millis);
        let Ok(mut book) = self.live.book.lock() else {
            return;
        };
        if book.len() >= MAX_BOOK && !book.contains_key(client) {
            // Forget the bans that ended; past the bound, the gauge undercounts.
            let now = self
                .live
                .store
                .get()
                .map_or(0, |(_, c)| c.now().as_millis());
            book.retain(|_, end| *end > now);
            if book.len() >= MAX_BOOK {
                return;
            }
        }
        let slot = book.entry(client.clone()).or_insert(end);
        *slot = (*slot).max(end);
    }

    /// An operator lifted `client`'s ban.
    pub(crate) fn unban(&self, client: &ClientKey) {
        if let Ok(mut book) = self.live.book.lock() {
            book.remove(client);
        }
    }

    /// Counts a failed store operation.
    pub(crate) fn store_error(&self, operation: &'static str) {
        self.store_errors
            .get_or_create(&StoreOpLabels {
                store: self.store_kind(),
                operation,
            })
            .inc();
    }

    /// `decision`, timed into `floodgate_store_duration_seconds` when the store answers
    /// later (does I/O); an answer ready at once is not timed.
    pub(crate) fn timed<T: Send + 'static>(&self, mut decision: StoreFuture<T>) -> StoreFuture<T> {
        if let Some(r) = decision.take_ready() {
            return StoreFuture::ready(r);
        }
        let histogram = self
            .store_duration
            .get_or_create(&StoreLabel {
                store: self.store_kind(),
            })
            .clone();
        // A measurement of the store, not a decision: the monotonic clock, not the injected one.
        let started = Instant::now();
        StoreFuture::pending(async move {
            let r = decision.await;
            histogram.observe(started.elapsed().as_secs_f64());
            r
        })
    }
}

/// The gauges read at scrape time.
#[derive(Debug)]
struct Gauges(Arc<Live>);

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some((store, clock)) = self.0.store.get() else {
            return Ok(());
        };
        let now = clock.now().as_millis();
        let active = self
            .0
            .book
            .lock()
            .map_or(0, |b| b.values().filter(|&&end| end > now).count());
        let gauge = ConstGauge::new(active as i64);
        let e = encoder.encode_descriptor(
            "floodgate_bans_active",
            "Bans in force that this process imposed or saw start",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(e)?;
        if let Some(n) = store.tracked_clients() {
            let gauge = ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
            let e = encoder.encode_descriptor(
                "floodgate_tracked_clients",
                "Clients the store tracks",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(e)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_are_named_by_their_samples_in_the_prometheus_text_format() {
        let open = "# HELP a_x Xs.\n# TYPE a_x counter\na_x_total{r=\"1\"} 2\n\
                    # HELP a_g G.\n# TYPE a_g gauge\na_g 3\n# EOF\n";
        assert_eq!(
            super::prometheus_text(open),
            "# HELP a_x_total Xs.\n# TYPE a_x_total counter\na_x_total{r=\"1\"} 2\n\
             # HELP a_g G.\n# TYPE a_g gauge\na_g 3\n"
        );
    }
}
