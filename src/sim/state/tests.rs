use super::*;

const APP: &str = "wx00000000000000a1";
const SECRET: &str = "secret-a1";
const OTHER: &str = "wx00000000000000b2";
const HOUR: Duration = Duration::from_secs(3600);

fn settings() -> Settings {
    Settings {
        token_ttl: Duration::from_secs(7200),
        preauth_ttl: Duration::from_secs(600),
        grace: Duration::from_secs(300),
        ticket_ttl: 12 * HOUR,
        token_quota: 10_000,
    }
}

fn state_with(settings: Settings, now: Instant) -> State {
    State::new(
        settings,
        [
            (APP.to_owned(), SECRET.to_owned()),
            (OTHER.to_owned(), "secret-b2".to_owned()),
        ],
        now,
    )
}

fn request(appid: &str, secret: &str, ticket: &str) -> TokenRequest {
    TokenRequest {
        component_appid: Some(appid.to_owned()),
        component_appsecret: Some(secret.to_owned()),
        component_verify_ticket: Some(ticket.to_owned()),
    }
}

/// A state at `t0` with one pushed ticket for APP.
fn fresh(settings: Settings) -> (State, Instant, String) {
    let t0 = Instant::now();
    let mut s = state_with(settings, t0);
    let ticket = s.new_ticket(APP, 1_700_000_000, t0).unwrap();
    (s, t0, ticket)
}

fn issue(s: &mut State, ticket: &str, now: Instant) -> String {
    s.issue_token(&request(APP, SECRET, ticket), now).unwrap().0
}

fn check(s: &mut State, token: &str, now: Instant) -> Result<String, WxError> {
    s.check_token(Some(token), Some(APP), now)
}

fn platform(s: &State, now: Instant) -> PlatformStats {
    s.stats(now).platforms[APP].clone()
}

#[test]
fn a_token_lives_its_ttl_then_is_expired() {
    let (mut s, t0, ticket) = fresh(settings());
    let (token, ttl) = s.issue_token(&request(APP, SECRET, &ticket), t0).unwrap();
    assert_eq!(ttl, Duration::from_secs(7200));
    assert!(token.len() > 100);
    assert!(token.bytes().all(|b| URL_SAFE.contains(&b)));

    let last_moment = t0 + ttl - Duration::from_millis(1);
    assert_eq!(check(&mut s, &token, last_moment), Ok(APP.to_owned()));
    assert!(s.token_is_valid(&token, last_moment));
    assert_eq!(check(&mut s, &token, t0 + ttl), Err(WxError::TokenExpired));
    assert!(!s.token_is_valid(&token, t0 + ttl));
    assert_eq!(s.stats(t0 + ttl).totals.invalid_token_calls, 1);
}

#[test]
fn a_new_token_leaves_the_old_one_valid_for_the_grace_period_only() {
    let (mut s, t0, ticket) = fresh(settings());
    let a = issue(&mut s, &ticket, t0);
    let t1 = t0 + HOUR;
    let b = issue(&mut s, &ticket, t1);
    let grace = Duration::from_secs(300);

    assert!(s.token_is_valid(&a, t1 + grace - Duration::from_millis(1)));
    assert_eq!(platform(&s, t1).valid_tokens, 2);
    assert_eq!(check(&mut s, &a, t1 + grace), Err(WxError::InvalidToken));
    assert!(s.token_is_valid(&b, t1 + grace));
    assert_eq!(platform(&s, t1 + grace).valid_tokens, 1);

    // A third token cuts B, but never lengthens A's already shortened life.
    let t2 = t1 + Duration::from_secs(60);
    let c = issue(&mut s, &ticket, t2);
    assert!(!s.token_is_valid(&a, t1 + grace));
    assert!(s.token_is_valid(&b, t2 + grace - Duration::from_millis(1)));
    assert!(!s.token_is_valid(&b, t2 + grace));
    assert!(s.token_is_valid(&c, t2 + grace));
}

#[test]
fn a_token_replaced_near_its_end_still_ends_at_its_own_expiry() {
    let (mut s, t0, ticket) = fresh(settings());
    let a = issue(&mut s, &ticket, t0);
    let expiry = t0 + Duration::from_secs(7200);
    issue(&mut s, &ticket, expiry - Duration::from_secs(60));
    // min(expiry, now + grace) = expiry, and that is an expiry, not a supersession.
    assert_eq!(check(&mut s, &a, expiry), Err(WxError::TokenExpired));
}

#[test]
fn tokens_belong_to_their_platform() {
    let (mut s, t0, ticket) = fresh(settings());
    let other_ticket = s.new_ticket(OTHER, 1_700_000_000, t0).unwrap();
    let a = issue(&mut s, &ticket, t0);
    let b = s
        .issue_token(&request(OTHER, "secret-b2", &other_ticket), t0)
        .unwrap()
        .0;
    // A token for OTHER neither supersedes nor is superseded by APP's.
    assert!(s.token_is_valid(&a, t0 + HOUR));
    assert!(s.token_is_valid(&b, t0 + HOUR));
    // And it cannot create codes for APP.
    let owner = check(&mut s, &b, t0).unwrap();
    assert_eq!(owner, OTHER);
    assert_eq!(
        s.issue_pre_auth_code(&owner, Some(APP), t0),
        Err(WxError::InvalidAppid)
    );
}

#[test]
fn revoke_ends_every_token_of_the_platform_now() {
    let (mut s, t0, ticket) = fresh(settings());
    let a = issue(&mut s, &ticket, t0);
    let b = issue(&mut s, &ticket, t0 + Duration::from_secs(10));
    let other_ticket = s.new_ticket(OTHER, 1_700_000_000, t0).unwrap();
    let other = s
        .issue_token(&request(OTHER, "secret-b2", &other_ticket), t0)
        .unwrap()
        .0;

    let t1 = t0 + Duration::from_secs(20);
    assert_eq!(s.revoke(APP, t1), Some(2));
    assert_eq!(check(&mut s, &a, t1), Err(WxError::InvalidToken));
    assert_eq!(check(&mut s, &b, t1), Err(WxError::InvalidToken));
    assert!(s.token_is_valid(&other, t1));
    assert_eq!(s.revoke("wxunknown", t1), None);
    // A fresh token after the revoke works.
    let c = issue(&mut s, &ticket, t1);
    assert!(s.token_is_valid(&c, t1));
}

#[test]
fn api_component_token_checks_appid_secret_then_ticket() {
    let (mut s, t0, ticket) = fresh(settings());
    let cases = [
        (request("wxunknown", SECRET, &ticket), WxError::InvalidAppid),
        (request("", SECRET, &ticket), WxError::InvalidAppid),
        (request(APP, "", "nope"), WxError::AppsecretMissing),
        (request(APP, "wrong", "nope"), WxError::InvalidAppsecret),
        (request(APP, SECRET, ""), WxError::InvalidTicket),
        (
            request(APP, SECRET, "ticket@@@never-pushed"),
            WxError::InvalidTicket,
        ),
    ];
    for (req, expected) in cases {
        assert_eq!(s.issue_token(&req, t0), Err(expected.clone()), "{req:?}");
    }
    let missing = TokenRequest {
        component_appid: Some(APP.to_owned()),
        component_appsecret: Some(SECRET.to_owned()),
        component_verify_ticket: None,
    };
    assert_eq!(s.issue_token(&missing, t0), Err(WxError::InvalidTicket));
    let stats = s.stats(t0);
    assert_eq!(stats.totals.invalid_ticket_calls, 3);
    assert_eq!(stats.totals.tokens_issued, 0);
}

#[test]
fn older_tickets_work_until_the_ticket_ttl() {
    let (mut s, t0, first) = fresh(settings());
    let t1 = t0 + Duration::from_secs(600);
    let second = s.new_ticket(APP, 1_700_000_600, t1).unwrap();
    assert_ne!(first, second);
    assert!(first.starts_with("ticket@@@") && first.len() > 90);

    let before = t0 + 12 * HOUR - Duration::from_millis(1);
    assert!(s.issue_token(&request(APP, SECRET, &first), before).is_ok());
    let after = t0 + 12 * HOUR;
    assert_eq!(
        s.issue_token(&request(APP, SECRET, &first), after),
        Err(WxError::InvalidTicket)
    );
    assert!(s.issue_token(&request(APP, SECRET, &second), after).is_ok());
    let latest = platform(&s, after).latest_ticket.unwrap();
    assert_eq!((latest.ticket, latest.create_time), (second, 1_700_000_600));
}

#[test]
fn the_daily_quota_ends_in_45009_until_the_next_day() {
    let (mut s, t0, ticket) = fresh(Settings {
        token_quota: 2,
        ..settings()
    });
    issue(&mut s, &ticket, t0);
    issue(&mut s, &ticket, t0 + Duration::from_secs(1));
    let t2 = t0 + Duration::from_secs(2);
    assert_eq!(
        s.issue_token(&request(APP, SECRET, &ticket), t2),
        Err(WxError::QuotaReached)
    );
    // Quota is per platform.
    let other_ticket = s.new_ticket(OTHER, 1_700_000_000, t2).unwrap();
    assert!(s
        .issue_token(&request(OTHER, "secret-b2", &other_ticket), t2)
        .is_ok());
    // A new day: the (still unexpired, 12 h) ticket works again.
    let next_day = t0 + 24 * HOUR;
    let fresh_ticket = s.new_ticket(APP, 1_700_086_400, next_day).unwrap();
    assert!(s
        .issue_token(&request(APP, SECRET, &fresh_ticket), next_day)
        .is_ok());
}

#[test]
fn a_pre_auth_code_is_single_use() {
    let (mut s, t0, ticket) = fresh(settings());
    let token = issue(&mut s, &ticket, t0);
    let owner = check(&mut s, &token, t0).unwrap();
    let (code, ttl) = s.issue_pre_auth_code(&owner, Some(APP), t0).unwrap();
    assert_eq!(ttl, Duration::from_secs(600));
    assert!(code.starts_with("preauthcode@@@"));

    assert!(s.use_pre_auth_code(&code, t0));
    assert!(!s.use_pre_auth_code(&code, t0));
    assert!(!s.use_pre_auth_code(&code, t0));
    assert!(!s.use_pre_auth_code("preauthcode@@@unknown", t0));
    let stats = platform(&s, t0);
    assert_eq!(stats.counters.codes_used_twice, 2);
    assert_eq!(stats.counters.pre_auth_codes_issued, 1);

    let (late, _) = s.issue_pre_auth_code(&owner, Some(APP), t0).unwrap();
    assert!(!s.use_pre_auth_code(&late, t0 + ttl));
}

#[test]
fn a_pre_auth_code_needs_a_valid_token_and_the_right_appid() {
    let (mut s, t0, ticket) = fresh(settings());
    assert_eq!(
        s.check_token(None, Some(APP), t0),
        Err(WxError::TokenMissing)
    );
    assert_eq!(
        s.check_token(Some("89_unknown"), Some(APP), t0),
        Err(WxError::InvalidToken)
    );
    let token = issue(&mut s, &ticket, t0);
    let owner = check(&mut s, &token, t0).unwrap();
    assert_eq!(
        s.issue_pre_auth_code(&owner, None, t0),
        Err(WxError::InvalidAppid)
    );
    assert_eq!(platform(&s, t0).counters.invalid_token_calls, 2);
}

#[test]
fn overlapping_and_early_token_calls_are_counted() {
    let (mut s, t0, ticket) = fresh(settings());
    assert!(!s.begin_token_call("wxunknown", t0));

    // First call: nothing in flight, no token yet.
    assert!(s.begin_token_call(APP, t0));
    // A second call while the first is being answered overlaps.
    assert!(s.begin_token_call(APP, t0));
    assert_eq!(platform(&s, t0).token_calls_in_flight, 2);
    issue(&mut s, &ticket, t0);
    s.end_token_call(APP);
    s.end_token_call(APP);
    let counters = platform(&s, t0).counters;
    assert_eq!(counters.overlapping_token_calls, 1);
    assert_eq!(counters.early_token_calls, 0, "neither saw a token");

    // More than half of 7200 s left: early. Exactly half: a correct margin, not early.
    let t1 = t0 + Duration::from_secs(3599);
    assert!(s.begin_token_call(APP, t1));
    s.end_token_call(APP);
    let t2 = t0 + Duration::from_secs(3600);
    assert!(s.begin_token_call(APP, t2));
    s.end_token_call(APP);
    let stats = platform(&s, t2);
    assert_eq!(stats.counters.early_token_calls, 1);
    assert_eq!(stats.counters.overlapping_token_calls, 1);
    assert_eq!(stats.token_calls_in_flight, 0);

    // After a revoke nothing is valid, so a call is not early.
    s.revoke(APP, t2);
    assert!(s.begin_token_call(APP, t2));
    s.end_token_call(APP);
    assert_eq!(platform(&s, t2).counters.early_token_calls, 1);
}

#[test]
fn issue_intervals_are_recorded_in_milliseconds() {
    let (mut s, t0, ticket) = fresh(settings());
    issue(&mut s, &ticket, t0);
    issue(&mut s, &ticket, t0 + Duration::from_secs(100));
    issue(&mut s, &ticket, t0 + Duration::from_millis(250_500));
    let stats = platform(&s, t0);
    assert_eq!(stats.token_issue_intervals_ms, [100_000, 150_500]);
    assert_eq!(stats.counters.tokens_issued, 3);
}

#[test]
fn calls_for_unknown_appids_count_in_the_totals_only() {
    let (mut s, t0, _) = fresh(settings());
    s.count_call(Endpoint::ComponentToken, Some("wxunknown"));
    s.count_call(Endpoint::ComponentToken, Some(APP));
    s.count_call(Endpoint::CreatePreauthcode, None);
    s.count_call(Endpoint::StartPushTicket, Some(OTHER));
    let stats = s.stats(t0);
    assert_eq!(
        stats.totals.calls,
        CallCounts {
            api_component_token: 2,
            api_create_preauthcode: 1,
            api_start_push_ticket: 1,
        }
    );
    assert_eq!(stats.platforms[APP].counters.calls.api_component_token, 1);
    assert_eq!(
        stats.platforms[OTHER].counters.calls.api_start_push_ticket,
        1
    );
    assert_eq!(stats.platforms.len(), 2);
}

#[test]
fn long_dead_records_are_dropped() {
    let (mut s, t0, ticket) = fresh(settings());
    let a = issue(&mut s, &ticket, t0);
    let expiry = t0 + Duration::from_secs(7200);
    // Pruning runs on the next issue; a day after its death the token is simply unknown.
    let later = expiry + RETENTION;
    let fresh_ticket = s.new_ticket(APP, 1_700_100_000, later).unwrap();
    issue(&mut s, &fresh_ticket, later);
    assert_eq!(check(&mut s, &a, later), Err(WxError::InvalidToken));
    assert_eq!(
        platform(&s, later).latest_ticket.unwrap().ticket,
        fresh_ticket
    );
}
