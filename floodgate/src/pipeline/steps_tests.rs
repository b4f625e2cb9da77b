//! `decide` on a store that checks together: the answers of the one-by-one steps, every
//! check sent in the first poll.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::*;
use crate::rules::{BanRule, Rule};
use crate::state::{ClientState, ReportOutcome, ScopeId};
use crate::store::bans::{BanCursor, BanPage};
use crate::store::memory::MemoryStore;

const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);

/// A memory store whose checks answer later, as a network store's do, and that says it
/// checks together; a client in `failing` makes its checks fail.
#[derive(Debug, Default)]
struct Pipelining {
    inner: MemoryStore,
    failing: Mutex<Option<ClientKey>>,
    polled: Arc<AtomicUsize>,
}

impl Store for Pipelining {
    fn check(&self, client: &ClientKey, plan: &Arc<Plan>, now: Timestamp) -> StoreFuture<Decision> {
        let fails = self.failing.lock().unwrap().as_ref() == Some(client);
        let mut answer = self.inner.check(client, plan, now);
        let polled = self.polled.clone();
        StoreFuture::pending(async move {
            polled.fetch_add(1, Ordering::SeqCst);
            if fails {
                return Err(StoreError::new("down"));
            }
            answer.take_ready().unwrap()
        })
    }
    fn report(&self, c: &ClientKey, r: &BanRule, now: Timestamp) -> StoreFuture<ReportOutcome> {
        self.inner.report(c, r, now)
    }
    fn ban(&self, c: &ClientKey, until: Option<Timestamp>, now: Timestamp) -> StoreFuture<()> {
        self.inner.ban(c, until, now)
    }
    fn extend_ban(
        &self,
        c: &ClientKey,
        until: Option<Timestamp>,
        reason: BanReason,
        now: Timestamp,
    ) -> StoreFuture<()> {
        self.inner.extend_ban(c, until, reason, now)
    }
    fn release(
        &self,
        c: &ClientKey,
        plan: &Arc<Plan>,
        at: Timestamp,
        now: Timestamp,
    ) -> StoreFuture<()> {
        self.inner.release(c, plan, at, now)
    }
    fn unban(&self, c: &ClientKey, now: Timestamp) -> StoreFuture<bool> {
        self.inner.unban(c, now)
    }
    fn state(&self, c: &ClientKey, now: Timestamp) -> StoreFuture<Option<ClientState>> {
        self.inner.state(c, now)
    }
    fn sweep(&self, now: Timestamp) -> StoreFuture<usize> {
        self.inner.sweep(now)
    }
    fn bans(&self, a: Option<&BanCursor>, l: usize, now: Timestamp) -> StoreFuture<BanPage> {
        self.inner.bans(a, l, now)
    }
    fn checks_together(&self) -> bool {
        true
    }
}

/// Polls once: every check must have been sent (polled) by then.
fn first_poll(mut f: StoreFuture<Decision>) -> Result<Decision, StoreError> {
    let mut cx = Context::from_waker(Waker::noop());
    match std::pin::Pin::new(&mut f).poll(&mut cx) {
        Poll::Ready(r) => r,
        Poll::Pending => panic!("a check waited for another"),
    }
}

#[test]
fn checks_sent_together_give_the_answers_of_the_steps_one_by_one() {
    let store = Arc::new(Pipelining::default());
    let dyn_store: Arc<dyn Store> = store.clone();
    let ip = ClientKey::from_ip([198, 51, 100, 1].into(), 128);
    let net = ClientKey::from_ip([198, 51, 100, 0].into(), 120);
    let key = ClientKey::custom("alice");
    let plan = Arc::new(Plan::new(
        [(ScopeId::GLOBAL, vec![Rule::new(1, Duration::from_secs(60))])],
        None,
    ));
    let decide_now = |at: u64| {
        decide(
            &dyn_store,
            vec![ip.clone(), net.clone()],
            &key,
            &plan,
            Timestamp::from_millis(T0.as_millis() + at),
            None,
        )
    };

    assert!(first_poll(decide_now(0)).unwrap().is_allowed());
    assert_eq!(
        store.polled.load(Ordering::SeqCst),
        3,
        "three checks, one poll"
    );
    assert!(
        !first_poll(decide_now(1)).unwrap().is_allowed(),
        "the key's limit"
    );

    // A ban of the address's network refuses, whatever the key says.
    let _ = store.inner.ban(&net, None, T0).take_ready();
    let banned = first_poll(decide_now(2)).unwrap();
    assert!(matches!(banned, Decision::Banned { until: None, .. }));

    // A failed ban check is the answer when the key allows; a refusal of the key stands.
    let _ = store.inner.unban(&net, T0).take_ready();
    *store.failing.lock().unwrap() = Some(ip.clone());
    let fresh = Timestamp::from_millis(T0.as_millis() + 120_000);
    let r = first_poll(decide(
        &dyn_store,
        vec![ip.clone()],
        &key,
        &plan,
        fresh,
        None,
    ));
    assert!(r.is_err(), "{r:?}");
    let r = first_poll(decide(
        &dyn_store,
        vec![ip.clone()],
        &key,
        &plan,
        fresh,
        None,
    ));
    assert!(matches!(r, Ok(Decision::Limited { .. })), "{r:?}");
}

#[test]
fn a_banned_address_spends_nothing_of_the_key_checked_beside_its_ban() {
    let store = Arc::new(Pipelining::default());
    let dyn_store: Arc<dyn Store> = store.clone();
    let banned_ip = ClientKey::from_ip([203, 0, 113, 9].into(), 128);
    let other_ip = ClientKey::from_ip([203, 0, 113, 10].into(), 128);
    let victim = ClientKey::custom("victim");
    let plan = Arc::new(Plan::new(
        [(ScopeId::GLOBAL, vec![Rule::new(1, Duration::from_secs(60))])],
        None,
    ));
    let _ = store.inner.ban(&banned_ip, None, T0).take_ready();
    for n in 0..3 {
        let at = Timestamp::from_millis(T0.as_millis() + n);
        let r = first_poll(decide(
            &dyn_store,
            vec![banned_ip.clone()],
            &victim,
            &plan,
            at,
            None,
        ));
        assert!(matches!(r, Ok(Decision::Banned { .. })), "{r:?}");
    }
    // The victim's one request a minute is still there for its owner.
    let at = Timestamp::from_millis(T0.as_millis() + 10);
    let r = first_poll(decide(&dyn_store, vec![other_ip], &victim, &plan, at, None));
    assert!(matches!(r, Ok(Decision::Allowed { .. })), "{r:?}");
}
