//! One contract, two stores: every case runs against the embedded store and a real
//! `redis-server`, so `memory://` behaves exactly like production.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use wxkeeper::store::*;

use crate::support::StoreHarness;

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $name() { super::$name(crate::support::StoreHarness::memory()).await; })*
        }
        mod redis {
            $(#[tokio::test] async fn $name() { super::$name(crate::support::StoreHarness::redis()).await; })*
        }
    };
}

contract!(
    tickets_keep_the_newest,
    one_of_many_concurrent_acquirers_wins,
    lease_renew_release_and_clean_handoff,
    expired_lease_is_never_renewed,
    epochs_grow_across_an_emptied_store,
    claim_only_when_due_and_only_for_the_leader,
    stale_and_foreign_writes_are_fenced,
    invalid_report_forces_one_refresh_a_minute,
    emptied_store_is_reseeded_from_memory,
    pre_auth_codes_go_to_exactly_one_taker,
    pre_auth_pool_discards_codes_near_expiry,
    history_records_intervals,
    notices_reach_subscribers,
    start_push_is_rate_limited,
);

const TTL: u64 = 5_000;
const APP: &str = "wxplatform000001";

async fn leader(h: &StoreHarness, holder: &str) -> LeaseId {
    match h.store.acquire(holder, TTL).await.unwrap() {
        AcquireOutcome::Acquired { epoch, .. } => LeaseId {
            holder: holder.to_owned(),
            epoch,
        },
        other => panic!("expected to acquire, got {other:?}"),
    }
}

async fn write_token(
    h: &StoreHarness,
    lease: &LeaseId,
    value: &str,
    expires_in_s: i64,
) -> CredentialRecord {
    let claim_ms = match h
        .store
        .claim_token(lease, APP, 900_000, None)
        .await
        .unwrap()
    {
        ClaimOutcome::Granted { claim_ms, .. } => claim_ms,
        other => panic!("expected a claim, got {other:?}"),
    };
    match h
        .store
        .write_token(lease, APP, claim_ms, value, expires_in_s)
        .await
        .unwrap()
    {
        WriteOutcome::Written { record, .. } => record,
        WriteOutcome::Fenced => panic!("write fenced"),
    }
}

async fn tickets_keep_the_newest(h: StoreHarness) {
    let s = &h.store;
    assert_eq!(s.get_ticket(APP).await.unwrap(), None);
    assert_eq!(
        s.put_ticket(APP, "ticket@@@a", 100).await.unwrap(),
        TicketWrite::Stored
    );
    assert_eq!(
        s.put_ticket(APP, "ticket@@@a", 100).await.unwrap(),
        TicketWrite::Duplicate
    );
    assert_eq!(
        s.put_ticket(APP, "ticket@@@old", 99).await.unwrap(),
        TicketWrite::Stale
    );
    let stored = s.get_ticket(APP).await.unwrap().unwrap();
    assert_eq!(
        (stored.ticket.as_str(), stored.create_time),
        ("ticket@@@a", 100)
    );
    // Equal CreateTime, different value: the later arrival wins.
    assert_eq!(
        s.put_ticket(APP, "ticket@@@b", 100).await.unwrap(),
        TicketWrite::Stored
    );
    assert_eq!(
        s.put_ticket(APP, "ticket@@@c", 101).await.unwrap(),
        TicketWrite::Stored
    );
    let stored = s.get_ticket(APP).await.unwrap().unwrap();
    assert_eq!(stored.ticket, "ticket@@@c");
    assert_eq!(stored.previous.as_deref(), Some("ticket@@@b"));
    assert!(stored.received_at_ms > 1_600_000_000_000);
    // Other platforms are separate.
    assert_eq!(s.get_ticket("wxother").await.unwrap(), None);
}

async fn one_of_many_concurrent_acquirers_wins(h: StoreHarness) {
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let s = h.store.clone();
            tokio::spawn(async move { s.acquire(&format!("holder-{i}"), TTL).await.unwrap() })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        match t.await.unwrap() {
            AcquireOutcome::Acquired { .. } => winners += 1,
            AcquireOutcome::Held { remaining_ms } => {
                assert!(remaining_ms > 0 && remaining_ms <= TTL as i64)
            }
        }
    }
    assert_eq!(winners, 1);
}

async fn lease_renew_release_and_clean_handoff(h: StoreHarness) {
    let s = &h.store;
    let (epoch_a, clean) = match s.acquire("a", TTL).await.unwrap() {
        AcquireOutcome::Acquired {
            epoch,
            clean_handoff,
        } => (epoch, clean_handoff),
        other => panic!("{other:?}"),
    };
    assert!(!clean, "a fresh store is not a clean handoff");
    // Idempotent: a lost reply retried gets the same epoch.
    assert_eq!(
        s.acquire("a", TTL).await.unwrap(),
        AcquireOutcome::Acquired {
            epoch: epoch_a,
            clean_handoff: false
        }
    );
    let a = LeaseId {
        holder: "a".into(),
        epoch: epoch_a,
    };
    assert!(s.renew(&a, TTL).await.unwrap());
    let foreign = LeaseId {
        holder: "b".into(),
        epoch: epoch_a,
    };
    assert!(!s.renew(&foreign, TTL).await.unwrap());
    assert!(!s.release(&foreign).await.unwrap());
    let stale_epoch = LeaseId {
        holder: "a".into(),
        epoch: epoch_a - 1,
    };
    assert!(!s.release(&stale_epoch).await.unwrap());
    let view = s.read_lease().await.unwrap().unwrap();
    assert_eq!(view.id, a);
    assert!(view.remaining_ms > 0 && view.remaining_ms <= TTL as i64);

    assert!(s.release(&a).await.unwrap());
    assert_eq!(s.read_lease().await.unwrap(), None);
    match s.acquire("b", TTL).await.unwrap() {
        AcquireOutcome::Acquired {
            epoch,
            clean_handoff,
        } => {
            assert!(epoch > epoch_a);
            assert!(clean_handoff, "the previous term was released");
        }
        other => panic!("{other:?}"),
    }
}

async fn expired_lease_is_never_renewed(h: StoreHarness) {
    let s = &h.store;
    let AcquireOutcome::Acquired { epoch, .. } = s.acquire("a", 150).await.unwrap() else {
        panic!("acquire")
    };
    let a = LeaseId {
        holder: "a".into(),
        epoch,
    };
    let remaining = match s.acquire("b", TTL).await.unwrap() {
        AcquireOutcome::Held { remaining_ms } => remaining_ms,
        other => panic!("{other:?}"),
    };
    // Wait out exactly what the store said remains (the TTL is the thing under test here).
    tokio::time::sleep(Duration::from_millis(remaining as u64 + 20)).await;
    assert!(
        !s.renew(&a, TTL).await.unwrap(),
        "renew must not re-create an expired lease"
    );
    assert_eq!(s.read_lease().await.unwrap(), None);
    match s.acquire("b", TTL).await.unwrap() {
        AcquireOutcome::Acquired {
            epoch: eb,
            clean_handoff,
        } => {
            assert!(eb > epoch);
            assert!(!clean_handoff, "an expired lease is not a clean handoff");
        }
        other => panic!("{other:?}"),
    }
}

async fn epochs_grow_across_an_emptied_store(h: StoreHarness) {
    let first = leader(&h, "a").await;
    h.store.release(&first).await.unwrap();
    let second = leader(&h, "b").await;
    assert!(second.epoch > first.epoch);
    h.flush_all().await;
    let third = leader(&h, "c").await;
    assert!(
        third.epoch > second.epoch,
        "{} after {}",
        third.epoch,
        second.epoch
    );
    h.flush_all().await;
    let AcquireOutcome::Acquired { clean_handoff, .. } = h.store.acquire("d", TTL).await.unwrap()
    else {
        panic!("acquire")
    };
    assert!(!clean_handoff, "an emptied store counts as not clean");
}

async fn claim_only_when_due_and_only_for_the_leader(h: StoreHarness) {
    let s = &h.store;
    let nobody = LeaseId {
        holder: "x".into(),
        epoch: 1,
    };
    assert_eq!(
        s.claim_token(&nobody, APP, 1000, None).await.unwrap(),
        ClaimOutcome::NotLeader
    );
    let a = leader(&h, "a").await;
    let record = write_token(&h, &a, "token-1", 7200).await;
    assert_eq!(record.expires_at_ms - record.obtained_at_ms, 7_200_000);
    assert_eq!(record.epoch, a.epoch);
    // Margin 15 min: due at expiry - 15 min.
    match s.claim_token(&a, APP, 900_000, None).await.unwrap() {
        ClaimOutcome::NotDue { due_at_ms } => assert_eq!(due_at_ms, record.expires_at_ms - 900_000),
        other => panic!("{other:?}"),
    }
    // The effective margin is at most half the lifetime.
    match s.claim_token(&a, APP, 10 * 3_600_000, None).await.unwrap() {
        ClaimOutcome::NotDue { due_at_ms } => {
            assert_eq!(due_at_ms, record.expires_at_ms - 3_600_000)
        }
        other => panic!("{other:?}"),
    }
    // A token that expires within the margin is due.
    let short = {
        let claim = match s.claim_token(&a, APP, 10 * 3_600_000, None).await.unwrap() {
            ClaimOutcome::NotDue { .. } => None,
            other => Some(other),
        };
        assert!(claim.is_none());
        write_short_token(&h, &a).await
    };
    assert!(short.is_none(), "claim refused before due, so no write");
    let stored = s.get_token(APP).await.unwrap().unwrap();
    assert_eq!(stored.value, "token-1");
}

/// Tries to write without a claim: must be fenced.
async fn write_short_token(h: &StoreHarness, lease: &LeaseId) -> Option<CredentialRecord> {
    let now = h.store.now_ms().await.unwrap();
    match h
        .store
        .write_token(lease, APP, now, "token-x", 1)
        .await
        .unwrap()
    {
        WriteOutcome::Written { record, .. } => Some(record),
        WriteOutcome::Fenced => None,
    }
}

async fn stale_and_foreign_writes_are_fenced(h: StoreHarness) {
    let s = &h.store;
    let a = leader(&h, "a").await;
    let ClaimOutcome::Granted { claim_ms, .. } = s.claim_token(&a, APP, 1000, None).await.unwrap()
    else {
        panic!("claim")
    };
    // A wrong claim time is refused.
    assert_eq!(
        s.write_token(&a, APP, claim_ms + 1, "t", 7200)
            .await
            .unwrap(),
        WriteOutcome::Fenced
    );
    // The lease passes to b (a released while its WeChat call was in flight).
    s.release(&a).await.unwrap();
    let b = leader(&h, "b").await;
    assert_eq!(
        s.write_token(&a, APP, claim_ms, "t", 7200).await.unwrap(),
        WriteOutcome::Fenced
    );
    assert_eq!(s.get_token(APP).await.unwrap(), None);
    // b's own claim works; a's old claim does not hold b back.
    let rec = write_token(&h, &b, "token-b", 7200).await;
    assert_eq!(rec.holder, "b");
    // A pre-auth push from the old term is fenced too.
    let now = s.now_ms().await.unwrap();
    assert_eq!(
        s.push_pre_auth(&a, APP, now, "code", 600).await.unwrap(),
        WriteOutcome::Fenced
    );
    assert_eq!(s.pre_auth_ready(APP, 0).await.unwrap().ready, 0);
}

async fn invalid_report_forces_one_refresh_a_minute(h: StoreHarness) {
    let s = &h.store;
    let a = leader(&h, "a").await;
    assert!(!s.report_invalid(APP, "no-such-token").await.unwrap());
    write_token(&h, &a, "token-1", 7200).await;
    assert!(
        !s.report_invalid(APP, "token-0").await.unwrap(),
        "only the current token"
    );
    assert!(s.report_invalid(APP, "token-1").await.unwrap());
    let ClaimOutcome::Granted { claim_ms, forced } =
        s.claim_token(&a, APP, 900_000, None).await.unwrap()
    else {
        panic!("forced claim")
    };
    assert!(forced);
    let WriteOutcome::Written {
        previous_obtained_ms,
        ..
    } = s
        .write_token(&a, APP, claim_ms, "token-2", 7200)
        .await
        .unwrap()
    else {
        panic!("write")
    };
    assert!(previous_obtained_ms.is_some());
    // Within a minute of the forced refresh, another report changes nothing.
    assert!(!s.report_invalid(APP, "token-2").await.unwrap());
    assert!(matches!(
        s.claim_token(&a, APP, 900_000, None).await.unwrap(),
        ClaimOutcome::NotDue { .. }
    ));
}

async fn emptied_store_is_reseeded_from_memory(h: StoreHarness) {
    let s = &h.store;
    let a = leader(&h, "a").await;
    let remembered = write_token(&h, &a, "token-1", 7200).await;
    h.flush_all().await;
    assert_eq!(s.get_token(APP).await.unwrap(), None);
    let b = leader(&h, "b").await;
    // The remembered token is written back before due-ness is judged: not due, no WeChat call.
    assert!(matches!(
        s.claim_token(&b, APP, 900_000, Some(&remembered))
            .await
            .unwrap(),
        ClaimOutcome::NotDue { .. }
    ));
    assert_eq!(s.get_token(APP).await.unwrap(), Some(remembered.clone()));
    // Any replica restores a ticket or token the store lost, never replacing one.
    let ticket = TicketRecord {
        ticket: "ticket@@@x".into(),
        create_time: 5,
        received_at_ms: 6,
        previous: Some("ticket@@@w".into()),
    };
    assert!(s.restore_ticket(APP, &ticket).await.unwrap());
    let newer = TicketRecord {
        create_time: 7,
        ..ticket.clone()
    };
    assert!(
        !s.restore_ticket(APP, &newer).await.unwrap(),
        "already present"
    );
    assert_eq!(s.get_ticket(APP).await.unwrap(), Some(ticket));
    h.flush_all().await;
    assert!(s.restore_token(APP, &remembered).await.unwrap());
    assert!(
        !s.restore_token(APP, &remembered).await.unwrap(),
        "already present"
    );
    assert_eq!(s.get_token(APP).await.unwrap(), Some(remembered.clone()));
    h.flush_all().await;
    let expired = CredentialRecord {
        expires_at_ms: 1,
        ..remembered
    };
    assert!(
        !s.restore_token(APP, &expired).await.unwrap(),
        "never an expired token"
    );
    assert_eq!(s.get_token(APP).await.unwrap(), None);
}

async fn pre_auth_codes_go_to_exactly_one_taker(h: StoreHarness) {
    let s = &h.store;
    let a = leader(&h, "a").await;
    let now = s.now_ms().await.unwrap();
    for i in 0..20 {
        let out = s
            .push_pre_auth(&a, APP, now, &format!("code-{i}"), 600)
            .await
            .unwrap();
        assert!(matches!(out, WriteOutcome::Written { .. }));
    }
    assert_eq!(s.pre_auth_ready(APP, 0).await.unwrap().ready, 20);
    let takers: Vec<_> = (0..50)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.pop_pre_auth(APP, 0).await.unwrap() })
        })
        .collect();
    let mut got = Vec::new();
    for t in takers {
        if let Some(code) = t.await.unwrap() {
            got.push(code.code);
        }
    }
    assert_eq!(got.len(), 20);
    assert_eq!(
        got.iter().collect::<HashSet<_>>().len(),
        20,
        "no code handed out twice"
    );
    assert_eq!(s.pop_pre_auth(APP, 0).await.unwrap(), None);
    let meta = s.get_pre_auth_meta(APP).await.unwrap().unwrap();
    assert_eq!(meta.expires_at_ms, now + 600_000);
}

async fn pre_auth_pool_discards_codes_near_expiry(h: StoreHarness) {
    let s = &h.store;
    let a = leader(&h, "a").await;
    let now = s.now_ms().await.unwrap();
    // Two codes issued 9 minutes ago (1 min left), one fresh.
    s.push_pre_auth(&a, APP, now - 540_000, "old-1", 600)
        .await
        .unwrap();
    s.push_pre_auth(&a, APP, now - 540_000, "old-2", 600)
        .await
        .unwrap();
    s.push_pre_auth(&a, APP, now, "fresh", 600).await.unwrap();
    assert_eq!(s.pre_auth_ready(APP, 0).await.unwrap().ready, 3);
    let code = s.pop_pre_auth(APP, 120_000).await.unwrap().unwrap();
    assert_eq!(code.code, "fresh");
    assert_eq!(code.discarded, 2);
    assert_eq!(s.pre_auth_ready(APP, 0).await.unwrap().ready, 0);
}

async fn history_records_intervals(h: StoreHarness) {
    let s = &h.store;
    let a = leader(&h, "a").await;
    write_token(&h, &a, "token-1", 7200).await;
    s.report_invalid(APP, "token-1").await.unwrap();
    write_token(&h, &a, "token-2", 7200).await;
    let now = s.now_ms().await.unwrap();
    s.push_pre_auth(&a, APP, now, "code", 600).await.unwrap();
    let events = s.history(10).await.unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].credential, CredentialKind::ComponentAccessToken);
    assert_eq!(events[0].interval_ms, None);
    assert!(events[1].interval_ms.unwrap() >= 0);
    assert_eq!(events[2].credential, CredentialKind::PreAuthCode);
    assert!(events
        .iter()
        .all(|e| e.holder == "a" && e.epoch == a.epoch && e.platform == APP));
    assert_eq!(s.history(1).await.unwrap(), events[2..].to_vec());
}

async fn notices_reach_subscribers(h: StoreHarness) {
    let s = &h.store;
    let mut notices = s.subscribe().await.unwrap();
    s.put_ticket(APP, "ticket@@@n", 1).await.unwrap();
    let a = leader(&h, "a").await;
    write_token(&h, &a, "token-1", 7200).await;
    s.release(&a).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let n = tokio::time::timeout(Duration::from_secs(5), notices.next())
            .await
            .expect("notice within 5 s")
            .expect("stream open");
        seen.push(n);
    }
    assert_eq!(
        seen,
        vec![
            Notice::Ticket(APP.into()),
            Notice::Credential(APP.into(), CredentialKind::ComponentAccessToken),
            Notice::LeaseReleased,
        ]
    );
}

async fn start_push_is_rate_limited(h: StoreHarness) {
    let a = leader(&h, "a").await;
    let due = |platform: &'static str, lease: LeaseId, gap: i64| {
        let store = h.store.clone();
        async move { store.start_push_due(&lease, platform, gap).await.unwrap() }
    };
    assert_eq!(due(APP, a.clone(), 600_000).await, StartPush::Recorded);
    match due(APP, a.clone(), 600_000).await {
        StartPush::WaitMs(ms) => assert!(
            (1..=600_000).contains(&ms) && ms > 590_000,
            "the next ask is allowed a whole gap after the last, not {ms} ms from now"
        ),
        other => panic!("a second ask within the gap: {other:?}"),
    }
    assert_eq!(
        due("wxother", a.clone(), 600_000).await,
        StartPush::Recorded
    );
    let stranger = LeaseId {
        holder: "z".into(),
        epoch: 1,
    };
    assert_eq!(due("wxthird", stranger, 0).await, StartPush::NotLeader);
}
