//! Refusals per route in a recent window, for the operator's dashboard: how many requests each
//! route refused (and, in shadow mode, would have refused) over the last 10 to 20 minutes of
//! floodgate's clock. Counted on refusals only: an allowed request never touches it.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::clock::Timestamp;
use crate::top::TOP_WINDOW;

/// At most this many routes are counted apart (route names come from the app's code, so this
/// is never reached in practice); refusals of further routes are counted under `other`.
const MAX_ROUTES: usize = 1024;

/// One route's recent refusals.
#[cfg_attr(not(feature = "admin"), allow(dead_code))]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RouteRefusalCount {
    /// The route's name (`other` for requests no annotated route takes).
    pub(crate) route: String,
    /// Requests refused (429, 403, 503).
    pub(crate) refused: u64,
    /// Requests shadow mode would have refused (served).
    pub(crate) shadow: u64,
}

#[derive(Debug, Default)]
struct Windows {
    /// Where the current window began (ms).
    start: u64,
    current: HashMap<String, (u64, u64)>,
    previous: HashMap<String, (u64, u64)>,
}

impl Windows {
    fn rotate(&mut self, now: u64) {
        if now < self.start.saturating_add(TOP_WINDOW) {
            return;
        }
        let elapsed = now - self.start;
        if elapsed >= 2 * TOP_WINDOW {
            self.previous.clear();
            self.current.clear();
        } else {
            self.previous = std::mem::take(&mut self.current);
        }
        self.start = now - elapsed % TOP_WINDOW;
    }

    fn slot(&mut self, route: &str) -> &mut (u64, u64) {
        let route = if self.current.contains_key(route) || self.current.len() < MAX_ROUTES {
            route
        } else {
            "other"
        };
        self.current.entry(route.to_owned()).or_default()
    }
}

/// The recent refusals of every route of one floodgate.
#[derive(Debug, Default)]
pub(crate) struct RouteRefusals {
    windows: Mutex<Windows>,
}

impl RouteRefusals {
    fn with(&self, now: Timestamp, f: impl FnOnce(&mut Windows)) {
        let mut w = self
            .windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        w.rotate(now.as_millis());
        f(&mut w);
    }

    /// `route` refused a request at `now`.
    pub(crate) fn refused(&self, route: &str, now: Timestamp) {
        self.with(now, |w| w.slot(route).0 += 1);
    }

    /// Shadow mode would have refused a request of `route` at `now`.
    pub(crate) fn shadow_refused(&self, route: &str, now: Timestamp) {
        self.with(now, |w| w.slot(route).1 += 1);
    }

    /// Every route with a refusal in the last 10 to 20 minutes, by name.
    #[cfg_attr(not(feature = "admin"), allow(dead_code))]
    pub(crate) fn recent(&self, now: Timestamp) -> Vec<RouteRefusalCount> {
        let mut all: HashMap<String, (u64, u64)> = HashMap::new();
        self.with(now, |w| {
            for (route, (r, s)) in w.previous.iter().chain(w.current.iter()) {
                let e = all.entry(route.clone()).or_default();
                e.0 += r;
                e.1 += s;
            }
        });
        let mut list: Vec<RouteRefusalCount> = all
            .into_iter()
            .map(|(route, (refused, shadow))| RouteRefusalCount {
                route,
                refused,
                shadow,
            })
            .collect();
        list.sort_by(|a, b| a.route.cmp(&b.route));
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(1_700_000_000_000 + ms)
    }

    fn count(route: &str, refused: u64, shadow: u64) -> RouteRefusalCount {
        RouteRefusalCount {
            route: route.to_owned(),
            refused,
            shadow,
        }
    }

    #[test]
    fn refusals_are_counted_per_route_over_two_windows_then_forgotten() {
        let r = RouteRefusals::default();
        r.refused("app::login", at(0));
        r.refused("app::login", at(1));
        r.shadow_refused("app::search", at(2));
        r.refused("app::login", at(TOP_WINDOW + 5));
        assert_eq!(
            r.recent(at(TOP_WINDOW + 6)),
            [count("app::login", 3, 0), count("app::search", 0, 1)]
        );
        // Two windows later only the newer refusal is left, then none.
        assert_eq!(
            r.recent(at(2 * TOP_WINDOW + 10)),
            [count("app::login", 1, 0)]
        );
        assert!(r.recent(at(5 * TOP_WINDOW)).is_empty());
    }

    #[test]
    fn routes_past_the_bound_are_counted_as_other() {
        let r = RouteRefusals::default();
        for i in 0..MAX_ROUTES + 10 {
            r.refused(&format!("route{i}"), at(0));
        }
        let recent = r.recent(at(1));
        assert_eq!(recent.len(), MAX_ROUTES + 1);
        assert_eq!(
            recent.iter().find(|c| c.route == "other"),
            Some(&count("other", 10, 0))
        );
    }
}
