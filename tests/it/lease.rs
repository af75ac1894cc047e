//! Electors in one process against a real `redis-server` and the embedded store: exactly one
//! leader, fast takeover after a crash, instant handoff after a release, self-fencing when the
//! store stops answering. Bounds are correctness bounds (a follower waits the lease out),
//! with generous slack; speed is measured by the chaos suite and BENCHMARKS.md.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wxkeeper::lease::decide::Timing;
use wxkeeper::lease::elector::{self, ElectorParams};
use wxkeeper::lease::Leadership;
use wxkeeper::metrics::Metrics;
use wxkeeper::notices::NoticeHub;
use wxkeeper::store::{ClaimOutcome, LeaseId, SharedStore, WriteOutcome};

use crate::support::StoreHarness;

const TTL: Duration = Duration::from_millis(1000);

struct Replica {
    rx: watch::Receiver<Leadership>,
    handle: Option<JoinHandle<Option<LeaseId>>>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
}

fn replica(store: &SharedStore, name: &str) -> Replica {
    let shutdown = CancellationToken::new();
    let (hub, _) = NoticeHub::spawn(store.clone(), shutdown.clone());
    let metrics = Arc::new(Metrics::new());
    let (rx, handle) = elector::spawn(
        ElectorParams {
            holder: format!("{name}-{}", uuid::Uuid::new_v4()),
            timing: Timing::new(TTL),
        },
        store.clone(),
        &hub,
        metrics.clone(),
        shutdown.clone(),
    );
    Replica {
        rx,
        handle: Some(handle),
        shutdown,
        metrics,
    }
}

fn leaders(replicas: &[Replica]) -> Vec<usize> {
    let now = Instant::now();
    replicas
        .iter()
        .enumerate()
        .filter(|(_, r)| r.rx.borrow().is_leader(now))
        .map(|(i, _)| i)
        .collect()
}

/// Waits (bounded) until some replica leads; returns its index and when it was seen.
async fn await_leader(replicas: &mut [Replica], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        if let [one] = leaders(replicas)[..] {
            return one;
        }
        assert!(Instant::now() < deadline, "no leader within {within:?}");
        // Wake on any leadership change (or re-check every 10 ms).
        let waits = replicas.iter_mut().map(|r| Box::pin(r.rx.changed()));
        let _ = tokio::time::timeout(
            Duration::from_millis(10),
            futures::future::select_all(waits),
        )
        .await;
    }
}

fn term(r: &Replica) -> LeaseId {
    match &*r.rx.borrow() {
        Leadership::Leader(t) => t.id.clone(),
        Leadership::Follower => panic!("not a leader"),
    }
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $name() { super::$name(crate::support::StoreHarness::memory()).await; })*
        }
        mod redis {
            $(#[tokio::test] async fn $name() { super::$name(crate::support::StoreHarness::redis()).await; })*
        }
    };
}

both!(
    exactly_one_leader_at_every_sampled_instant,
    crash_without_release_hands_over_after_the_ttl,
    release_hands_over_at_once,
);

async fn exactly_one_leader_at_every_sampled_instant(h: StoreHarness) {
    let mut replicas: Vec<Replica> = (0..4)
        .map(|i| replica(&h.store, &format!("r{i}")))
        .collect();
    await_leader(&mut replicas, TTL * 3).await;
    let mut epochs = std::collections::BTreeSet::new();
    for _ in 0..150 {
        let l = leaders(&replicas);
        assert!(l.len() <= 1, "two leaders at once: {l:?}");
        if let [i] = l[..] {
            epochs.insert(term(&replicas[i]).epoch);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Renewals kept the same leader throughout: one epoch.
    assert_eq!(
        epochs.len(),
        1,
        "leadership changed without a failure: {epochs:?}"
    );
    for r in &replicas {
        r.shutdown.cancel();
    }
}

async fn crash_without_release_hands_over_after_the_ttl(h: StoreHarness) {
    let mut replicas: Vec<Replica> = (0..3)
        .map(|i| replica(&h.store, &format!("r{i}")))
        .collect();
    let first = await_leader(&mut replicas, TTL * 3).await;
    let old = term(&replicas[first]);
    // A crash: the task vanishes without releasing.
    replicas[first].handle.take().unwrap().abort();
    let mut crashed = replicas.remove(first);
    crashed.rx.borrow_and_update();
    let crashed_at = Instant::now();
    let next = await_leader(&mut replicas, TTL * 3).await;
    let took = crashed_at.elapsed();
    let new = term(&replicas[next]);
    assert!(new.epoch > old.epoch);
    assert_ne!(new.holder, old.holder);
    // Never before the old lease could have expired (it was renewed at most TTL ago)...
    assert!(took <= TTL * 2, "takeover took {took:?}");
    // ...and the dead leader's write is fenced.
    let claim = h.store.claim_token(&old, "wxp", 1000, None).await.unwrap();
    assert_eq!(claim, ClaimOutcome::NotLeader);
    let now = h.store.now_ms().await.unwrap();
    assert_eq!(
        h.store
            .write_token(&old, "wxp", now, "t", 7200)
            .await
            .unwrap(),
        WriteOutcome::Fenced
    );
    for r in &replicas {
        r.shutdown.cancel();
    }
}

async fn release_hands_over_at_once(h: StoreHarness) {
    let mut replicas: Vec<Replica> = (0..3)
        .map(|i| replica(&h.store, &format!("r{i}")))
        .collect();
    let first = await_leader(&mut replicas, TTL * 3).await;
    let mut leaving = replicas.remove(first);
    leaving.shutdown.cancel();
    let held = leaving
        .handle
        .take()
        .unwrap()
        .await
        .unwrap()
        .expect("still held at shutdown");
    assert!(
        !leaving.rx.borrow().is_leader(Instant::now()),
        "term ended before release"
    );
    let released_at = Instant::now();
    assert!(elector::release(&h.store, &held, &leaving.metrics).await);
    let next = await_leader(&mut replicas, TTL * 3).await;
    let took = released_at.elapsed();
    // Far below the TTL: the release notice woke a follower.
    assert!(took < TTL / 2, "handoff took {took:?}");
    assert!(term(&replicas[next]).epoch > held.epoch);
    let text = leaving.metrics.encode();
    assert!(text.contains("wxkeeper_lease_transitions_total{event=\"released\"} 1"));
    for r in &replicas {
        r.shutdown.cancel();
    }
}

/// Redis stops answering (SIGSTOP): the leader self-fences before its lease can have expired,
/// nobody else leads meanwhile, and one leader is back soon after Redis resumes.
#[tokio::test]
async fn paused_redis_makes_the_leader_self_fence_in_time() {
    let h = StoreHarness::redis();
    let mut replicas: Vec<Replica> = (0..2)
        .map(|i| replica(&h.store, &format!("r{i}")))
        .collect();
    let first = await_leader(&mut replicas, TTL * 3).await;
    let term_at_fence = term(&replicas[first]);
    let server = h.redis.as_ref().unwrap();
    server.pause();
    let paused_at = Instant::now();
    let mut rx = replicas[first].rx.clone();
    let deadline = paused_at + TTL * 2;
    while rx.borrow_and_update().is_leader(Instant::now()) {
        assert!(
            Instant::now() < deadline,
            "leader kept acting past its TTL with Redis paused"
        );
        let _ = tokio::time::timeout(Duration::from_millis(20), rx.changed()).await;
    }
    let fenced_after = paused_at.elapsed();
    assert!(
        fenced_after < TTL,
        "self-fenced after {fenced_after:?}, TTL is {TTL:?}"
    );
    assert!(
        leaders(&replicas).is_empty(),
        "nobody may lead while Redis is paused"
    );
    // The elector notices within one store timeout (TTL/10) of validity running out.
    let counted_by = Instant::now() + TTL / 2;
    while !replicas[first]
        .metrics
        .encode()
        .contains("wxkeeper_lease_self_fence_total 1")
    {
        assert!(Instant::now() < counted_by, "self-fence not counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let old = term_at_fence.clone();
    tokio::time::sleep(TTL).await;
    server.resume();
    let next = await_leader(&mut replicas, TTL * 3).await;
    assert!(
        term(&replicas[next]).epoch > old.epoch,
        "a new term after the pause"
    );
    // The self-fenced term's write is refused by the store too.
    let now = h.store.now_ms().await.unwrap();
    assert_eq!(
        h.store
            .write_token(&old, "wxp", now, "late", 7200)
            .await
            .unwrap(),
        WriteOutcome::Fenced
    );
    for r in &replicas {
        r.shutdown.cancel();
    }
}
