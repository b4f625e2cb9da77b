//! Unit tests of the SQLite store.

use super::*;
use crate::rules::BanRule;
use crate::state::{Decision, Plan, ReportOutcome};

/// Waits for a store answer on this thread.
pub(super) fn wait<T>(mut f: StoreFuture<T>) -> Result<T, StoreError> {
    use std::future::Future;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(r) = std::pin::Pin::new(&mut f).poll(&mut cx) {
            return r;
        }
        std::thread::park();
    }
}

#[test]
fn a_busy_timeout_of_duration_max_opens() {
    let dir = std::env::temp_dir().join(format!("floodgate-busy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::builder(dir.join("busy.db"))
        .busy_timeout(Duration::MAX)
        .open();
    assert!(store.is_ok(), "{store:?}");
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_batch_fails_on_durations_of_duration_max_or_times_at_the_end_of_time() {
    use crate::policy::{Adaptive, Policy, Punishment};
    use crate::rules::Rule;
    use crate::state::ScopeId;
    let dir = std::env::temp_dir().join(format!("floodgate-extreme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = Policy::new(1, Duration::MAX)
        .cooldown(Duration::MAX)
        .block_duration(Duration::MAX)
        .block_limit(1)
        .max_window_duration(Some(Duration::MAX))
        .punishment(Punishment::Ban(Duration::MAX))
        .adaptive(Adaptive {
            factor: f64::MAX,
            max: Duration::MAX,
            jitter: Duration::MAX,
        });
    let plan = Arc::new(Plan::new(
        [(ScopeId::GLOBAL, vec![Rule::new(u32::MAX, Duration::MAX)])],
        Some((ScopeId::named("p"), policy)),
    ));
    let ban_rule = BanRule::new(2, Duration::MAX, Duration::MAX);
    for (i, durability) in [Durability::Normal, Durability::Full, Durability::Batched]
        .into_iter()
        .enumerate()
    {
        let store = SqliteStore::builder(dir.join(format!("extreme-{i}.db")))
            .durability(durability)
            .sweep_interval(Duration::MAX)
            .busy_timeout(Duration::MAX)
            .open()
            .unwrap();
        for (n, now) in [1, 1_700_000_000_000, u64::MAX - 1, u64::MAX]
            .into_iter()
            .enumerate()
        {
            let now = Timestamp::from_millis(now);
            let c = ClientKey::custom(format!("c{n}"));
            let first = wait(store.check(&c, &plan, now)).expect("first");
            assert!(first.is_allowed(), "{durability:?} {now}: {first:?}");
            // The cooldown of Duration::MAX refuses the next one (at the end of time,
            // the cooldown is over: it ends at the end of time).
            let second = wait(store.check(&c, &plan, now)).expect("second");
            assert_eq!(
                second.is_allowed(),
                now == Timestamp::NEVER,
                "{durability:?} {now}: {second:?}"
            );
            wait(store.report(&c, &ban_rule, now)).expect("report");
            let out = wait(store.report(&c, &ban_rule, now)).expect("report");
            wait(store.ban(&c, Some(now + Duration::MAX), now)).expect("ban");
            let state = wait(store.state(&c, now)).expect("state");
            // At the end of time itself, every state has expired at once.
            if now < Timestamp::NEVER {
                assert_eq!(
                    out,
                    ReportOutcome::Banned {
                        until: Timestamp::NEVER
                    }
                );
                let state = state.expect("kept forever");
                assert_eq!(state.expires_at(), Timestamp::NEVER);
                assert!(matches!(
                    wait(store.check(&c, &plan, now)).expect("third"),
                    Decision::Banned { until: None, .. }
                ));
            }
            wait(store.unban(&c, now)).expect("unban");
            wait(store.sweep(now)).expect("sweep");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
