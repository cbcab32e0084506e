//! The real client against a real simulator over 127.0.0.1, a fresh simulator per test.

use crate::support::simulator as sim;

use futures_util::TryStreamExt;
use lastpass_connector::lastpass::{
    self, Client, ClientConfig, DelUserOutcome, DeleteAction, LastPass, LastPassError, NewUser,
    Provhash,
};
use serde_json::json;
use sim::{DateStyle, FaultsPatch, QuirksPatch, SimUserPatch, SimUserSpec, client, email, start};
use std::collections::HashSet;
use std::time::Duration;

const AUTH_ERROR_XML: &str =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<lastpass rc=\"Authorization Error\"/>\n";

fn new_user(e: &str, first: &str, last: &str) -> NewUser {
    NewUser {
        email: email(e),
        first_name: first.into(),
        last_name: last.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Operations.

#[tokio::test]
async fn find_user_present_matches_the_simulator() {
    let sim = start(50).await;
    let c = client(&sim);
    for expected in sim.users().iter().step_by(7) {
        let u = c
            .find_user(&email(&expected.username))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(u.uid, expected.uid);
        assert_eq!(u.email, expected.username);
        assert_eq!(u.full_name, expected.fullname);
        assert_eq!(u.disabled, expected.disabled);
        assert_eq!(u.admin, expected.admin);
        assert_eq!(u.never_logged_in, expected.neverloggedin);
        assert_eq!(u.last_login.is_none(), expected.last_login.is_empty());
        if let Some(t) = u.last_login {
            assert_eq!(
                t.format("%Y-%m-%d %H:%M:%S").to_string(),
                expected.last_login
            );
        }
        assert_eq!(u.groups, expected.groups);
        assert!(u.created.is_some());
    }
}

#[tokio::test]
async fn find_user_absent_both_variants() {
    let sim = start(5).await;
    let c = client(&sim);
    let nobody = email("nobody@example.com");
    assert_eq!(c.find_user(&nobody).await.unwrap(), None);
    let raw = sim::raw_call(
        &sim,
        "getuserdata",
        json!({"username": "nobody@example.com"}),
    )
    .await;
    assert!(raw.body.contains(r#""Users":[]"#), "{}", raw.body);

    sim.set_quirks(QuirksPatch {
        unknown_user_error: Some(true),
        ..Default::default()
    });
    let raw = sim::raw_call(
        &sim,
        "getuserdata",
        json!({"username": "nobody@example.com"}),
    )
    .await;
    assert_eq!(
        raw.body,
        r#"{"error":["nobody@example.com is not a valid user."]}"#
    );
    assert_eq!(c.find_user(&nobody).await.unwrap(), None);
}

#[tokio::test]
async fn find_user_is_case_insensitive() {
    let sim = start(0).await;
    let uid = sim
        .add_user(SimUserSpec::active(
            "Jane.Doe@Example.COM",
            "2024-03-01 10:00:00",
        ))
        .unwrap();
    let c = client(&sim);
    let u = c
        .find_user(&email("jane.doe@example.com"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.uid, uid);
    assert_eq!(u.email, "Jane.Doe@Example.COM");
    assert!(!u.never_logged_in);
}

#[tokio::test]
async fn paging_over_ten_thousand_users() {
    let sim = start(10_000).await;
    sim.add_invitation("pending.person@example.com");
    let c = client(&sim);
    let pages: Vec<_> = lastpass::pages(&c, 2000).try_collect().await.unwrap();
    assert_eq!(pages.len(), 5);
    let mut seen = HashSet::new();
    for page in &pages {
        assert_eq!(page.total, 10_000);
        assert_eq!(page.invited, vec!["pending.person@example.com"]);
        for u in &page.users {
            assert!(seen.insert(u.uid.clone()), "uid {} seen twice", u.uid);
        }
    }
    let expected: HashSet<_> = sim.users().into_iter().map(|u| u.uid).collect();
    assert_eq!(seen, expected);
    assert_eq!(sim.call_counts().getuserdata, 5);
}

#[tokio::test]
async fn paging_ends_with_a_short_page() {
    let sim = start(25).await;
    let c = client(&sim);
    let pages: Vec<_> = lastpass::pages(&c, 10).try_collect().await.unwrap();
    let sizes: Vec<_> = pages.iter().map(|p| p.users.len()).collect();
    assert_eq!(sizes, [10, 10, 5]);
    // Exactly divisible: no extra empty page is fetched.
    let sim = start(20).await;
    let c = client(&sim);
    let pages: Vec<_> = lastpass::pages(&c, 10).try_collect().await.unwrap();
    assert_eq!(pages.len(), 2);
    assert_eq!(sim.call_counts().getuserdata, 2);
    // Filters on the wire: disabled / admin.
    let raw = sim::raw_call(&sim, "getuserdata", json!({"disabled": 1, "admin": 0})).await;
    let v: serde_json::Value = serde_json::from_str(&raw.body).unwrap();
    let disabled = sim
        .users()
        .iter()
        .filter(|u| u.disabled && !u.admin)
        .count();
    assert_eq!(v["total"], json!(disabled));
}

/// Issue 10: a server that caps its pages below `pagesize` is read to the end (while fewer
/// accounts than `total` have been seen), not stopped by the first short page.
#[tokio::test]
async fn paging_continues_past_a_server_page_cap() {
    let sim = start(1000).await;
    sim.set_quirks(QuirksPatch {
        page_size_cap: Some(300),
        ..Default::default()
    });
    let c = client(&sim);
    let pages: Vec<_> = lastpass::pages(&c, 2000).try_collect().await.unwrap();
    let sizes: Vec<_> = pages.iter().map(|p| p.users.len()).collect();
    assert_eq!(sizes, [300, 300, 300, 100]);
    let seen: HashSet<_> = pages
        .iter()
        .flat_map(|p| p.users.iter().map(|u| u.uid.clone()))
        .collect();
    assert_eq!(seen.len(), 1000);
}

/// Issue 10: a page shaped like the recorded real one: `count` present, no `invited` key when
/// there is no invitation, no `Groups` key when nobody on the page is in a group.
#[tokio::test]
async fn a_small_page_has_the_recorded_shape() {
    let sim = start(0).await;
    sim.add_user(SimUserSpec::active("a@example.com", "2022-06-02 13:20:59"))
        .unwrap();
    let raw = sim::raw_call(&sim, "getuserdata", json!({"pagesize": 1, "pageindex": 0})).await;
    let v: serde_json::Value = serde_json::from_str(&raw.body).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["Users", "count", "total"], "{}", raw.body);
    assert!(
        raw.body.starts_with(r#"{"total":1,"count":1,"Users":{"#),
        "{}",
        raw.body
    );
    assert!(raw.body.contains(r#""last_login":"2022-06-02 09:20:59""#));
}

/// Issue 10, the answer-variant row: an unknown user answered with `error` as an array
/// (`["user not found: x"]`) is absent, for every `deleteaction` and for `enableuser`.
#[tokio::test]
async fn the_array_error_is_read_as_absent() {
    let sim = start(3).await;
    sim.set_quirks(QuirksPatch {
        user_not_found_array: Some(true),
        ..Default::default()
    });
    let c = client(&sim);
    let ghost = email("ghost@example.com");
    let raw = sim::raw_call(
        &sim,
        "deluser",
        json!({"username": "ghost@example.com", "deleteaction": 2}),
    )
    .await;
    assert_eq!(
        raw.body,
        r#"{"status":"FAIL","error":["user not found: ghost@example.com"]}"#
    );
    for action in [
        DeleteAction::Deactivate,
        DeleteAction::Delete,
        DeleteAction::CancelInvitation,
    ] {
        assert_eq!(
            c.delete_user(&ghost, action).await,
            Err(LastPassError::NoSuchUser("ghost@example.com".into())),
            "{action:?}"
        );
    }
    assert_eq!(
        c.enable_users(std::slice::from_ref(&ghost)).await,
        Err(LastPassError::NoSuchUser("ghost@example.com".into()))
    );
}

/// Issue 10: `batchadd` of someone flagged as having a LastPass account answers OK, and the
/// look-up then finds a pending invitation (not a user), which `deleteaction` 3 cancels.
#[tokio::test]
async fn batchadd_of_an_existing_lastpass_account_makes_an_invitation() {
    let sim = start(0).await;
    sim.flag_existing_account("has.account@example.com");
    let c = client(&sim);
    let out = c
        .create_users(&[new_user("has.account@example.com", "Has", "Account")])
        .await
        .unwrap();
    assert!(out.messages.is_empty());
    let found = c
        .find_user(&email("has.account@example.com"))
        .await
        .unwrap()
        .expect("the invitation is found");
    assert!(found.invitation_pending);
    assert_eq!(found.uid, "invitation:has.account@example.com");
    assert!(sim.user("has.account@example.com").is_none());
    assert_eq!(
        c.delete_user(
            &email("has.account@example.com"),
            DeleteAction::CancelInvitation
        )
        .await,
        Ok(DelUserOutcome::Done)
    );
    assert_eq!(
        c.find_user(&email("has.account@example.com")).await,
        Ok(None)
    );
    // The OK-with-message variant: reported, nobody created.
    sim.set_quirks(QuirksPatch {
        batchadd_ok_message: Some("1 user(s) skipped".into()),
        ..Default::default()
    });
    let out = c
        .create_users(&[new_user("late@example.com", "La", "Te")])
        .await
        .unwrap();
    assert_eq!(out.messages, ["1 user(s) skipped"]);
    assert_eq!(c.find_user(&email("late@example.com")).await, Ok(None));
}

#[tokio::test]
async fn suspend_then_already_disabled() {
    let sim = start(0).await;
    sim.add_user(SimUserSpec::active(
        "jane@example.com",
        "2024-01-01 00:00:00",
    ))
    .unwrap();
    let c = client(&sim);
    let jane = email("jane@example.com");
    assert_eq!(
        c.delete_user(&jane, DeleteAction::Deactivate).await,
        Ok(DelUserOutcome::Done)
    );
    assert!(sim.user("jane@example.com").unwrap().disabled);
    let (status, state) = sim::control(&sim, "GET", "/state", None).await;
    assert_eq!(status, 200);
    assert_eq!(state["users"][0]["disabled"], json!(true));
    assert_eq!(
        c.delete_user(&jane, DeleteAction::Deactivate).await,
        Ok(DelUserOutcome::AlreadyDisabled)
    );
    assert!(c.find_user(&jane).await.unwrap().unwrap().disabled);
    let calls = sim.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].cmd, "deluser");
    assert_eq!(
        calls[0].data,
        json!({"username": "jane@example.com", "deleteaction": 0})
    );
}

#[tokio::test]
async fn delete_no_such_user() {
    let sim = start(3).await;
    let c = client(&sim);
    let ghost = email("ghost@example.com");
    for action in [DeleteAction::Deactivate, DeleteAction::Delete] {
        assert_eq!(
            c.delete_user(&ghost, action).await,
            Err(LastPassError::NoSuchUser("ghost@example.com".into()))
        );
    }
}

#[tokio::test]
async fn delete_and_remove_make_users_disappear() {
    let sim = start(0).await;
    for u in ["a@example.com", "b@example.com"] {
        sim.add_user(SimUserSpec::staged(u)).unwrap();
    }
    let c = client(&sim);
    let a = email("a@example.com");
    let b = email("b@example.com");
    assert_eq!(
        c.delete_user(&a, DeleteAction::Delete).await,
        Ok(DelUserOutcome::Done)
    );
    assert_eq!(
        c.delete_user(&b, DeleteAction::RemoveFromCompany).await,
        Ok(DelUserOutcome::Done)
    );
    assert!(sim.users().is_empty());
    assert_eq!(c.find_user(&a).await.unwrap(), None);
    assert_eq!(c.list_page(0, 100).await.unwrap().total, 0);
}

#[tokio::test]
async fn batchadd_one_and_many() {
    let sim = start(0).await;
    let c = client(&sim);
    c.create_users(&[new_user("new.one@example.com", "New", "One")])
        .await
        .unwrap();
    let one = sim.user("new.one@example.com").unwrap();
    assert_eq!(one.fullname, "New One");
    assert!(one.neverloggedin && one.password_reset_required && !one.admin && !one.disabled);

    let many: Vec<_> = (0..25)
        .map(|i| new_user(&format!("bulk{i}@example.com"), "Bulk", &i.to_string()))
        .collect();
    c.create_users(&many).await.unwrap();
    assert_eq!(sim.users().len(), 26);
    assert_eq!(sim.call_counts().batchadd, 2);
    // uids are monotonic.
    let uids: Vec<u64> = sim.users().iter().map(|u| u.uid.parse().unwrap()).collect();
    assert!(uids.windows(2).all(|w| w[0] < w[1]));

    let u = c
        .find_user(&email("bulk7@example.com"))
        .await
        .unwrap()
        .unwrap();
    assert!(u.never_logged_in);
    assert_eq!(u.last_login, None);
    assert!(u.password_reset_required);

    // An existing username: OK, no duplicate.
    c.create_users(&[new_user("NEW.ONE@example.com", "Other", "Name")])
        .await
        .unwrap();
    assert_eq!(sim.users().len(), 26);
    assert_eq!(sim.user("new.one@example.com").unwrap().fullname, "New One");
}

#[tokio::test]
async fn enableuser_reenables() {
    let sim = start(0).await;
    sim.add_user(SimUserSpec {
        disabled: true,
        ..SimUserSpec::active("off@example.com", "2024-01-01 00:00:00")
    })
    .unwrap();
    sim.add_user(SimUserSpec::active("on@example.com", "2024-01-01 00:00:00"))
        .unwrap();
    let c = client(&sim);
    let out = c
        .enable_users(&[email("off@example.com"), email("on@example.com")])
        .await
        .unwrap();
    assert_eq!(out.enabled, vec!["off@example.com"]);
    assert_eq!(out.unchanged, vec!["on@example.com"]);
    assert!(!sim.user("off@example.com").unwrap().disabled);
}

// ---------------------------------------------------------------------------------------------
// Quirks of the wire.

#[tokio::test]
async fn json_is_served_as_text_xml_and_parsed() {
    let sim = start(3).await;
    let raw = sim::raw_call(&sim, "getuserdata", json!({"pagesize": 10, "pageindex": 0})).await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.content_type, "text/xml;charset=UTF-8");
    assert!(raw.body.starts_with(r#"{"total":3,"count":3,"Users":{"#));
    assert_eq!(client(&sim).list_page(0, 10).await.unwrap().users.len(), 3);
}

#[tokio::test]
async fn empty_users_array() {
    let sim = start(0).await;
    let raw = sim::raw_call(&sim, "getuserdata", json!({"pagesize": 10, "pageindex": 0})).await;
    assert_eq!(raw.body, r#"{"total":0,"count":0,"Users":[]}"#);
    let page = client(&sim).list_page(0, 10).await.unwrap();
    assert!(page.users.is_empty());
    assert_eq!(page.total, 0);
}

#[tokio::test]
async fn auth_error_after_rotation_then_restored() {
    let sim = start(2).await;
    let c = client(&sim);
    let someone = email(&sim.users()[0].username);
    assert!(c.find_user(&someone).await.unwrap().is_some());

    let (status, creds) = sim::control(
        &sim,
        "PUT",
        "/credentials",
        Some(json!({"provhash": "rotated-secret"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(creds["provhash"], "rotated-secret");

    let raw = sim::raw_post(
        &sim,
        json!({"cid": sim::CID, "provhash": sim::PROVHASH, "cmd": "getuserdata", "data": {}})
            .to_string(),
    )
    .await;
    assert_eq!(
        (raw.status, raw.content_type.as_str()),
        (200, "text/xml;charset=UTF-8")
    );
    assert_eq!(raw.body, AUTH_ERROR_XML);

    for err in [
        c.find_user(&someone).await.unwrap_err(),
        c.list_page(0, 10).await.unwrap_err(),
        c.delete_user(&someone, DeleteAction::Deactivate)
            .await
            .unwrap_err(),
        c.create_users(&[new_user("x@example.com", "X", "Y")])
            .await
            .unwrap_err(),
        c.enable_users(std::slice::from_ref(&someone))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err, LastPassError::Unauthorized);
    }
    // Only the first, authenticated call was applied.
    assert_eq!(sim.call_counts().getuserdata, 1);

    c.set_provhash(Provhash::new("rotated-secret".into()));
    assert!(c.find_user(&someone).await.unwrap().is_some());

    // A wrong cid is the same error.
    sim.rotate_credentials(Some("rotated-secret".into()), Some("999".into()));
    assert_eq!(
        c.find_user(&someone).await,
        Err(LastPassError::Unauthorized)
    );
}

#[tokio::test]
async fn never_logged_in_last_login_is_none() {
    let sim = start(0).await;
    sim.add_user(SimUserSpec::staged("staged@example.com"))
        .unwrap();
    let raw = sim::raw_call(
        &sim,
        "getuserdata",
        json!({"username": "staged@example.com"}),
    )
    .await;
    assert!(
        raw.body.contains(r#""last_login":"","neverloggedin":true"#),
        "{}",
        raw.body
    );
    assert!(raw.body.contains(r#""totalscore":null"#));
    assert!(raw.body.contains(r#""sites":null"#));
    let u = client(&sim)
        .find_user(&email("staged@example.com"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.last_login, None);
    assert!(u.never_logged_in);
}

#[tokio::test]
async fn unparseable_last_login_is_none() {
    let sim = start(0).await;
    sim.add_user(SimUserSpec::active(
        "odd@example.com",
        "2024-01-01 00:00:00",
    ))
    .unwrap();
    sim.update_user(
        "odd@example.com",
        SimUserPatch {
            last_login: Some("0000-00-00 00:00:00".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let u = client(&sim)
        .find_user(&email("odd@example.com"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.last_login, None);
    assert!(!u.never_logged_in);
}

#[tokio::test]
async fn every_quirk_variant_parses_the_same() {
    let sim = start(40).await;
    sim.add_invitation("p@example.com");
    let c = client(&sim);
    let baseline = c.list_page(0, 100).await.unwrap();
    for style in [DateStyle::Rfc3339, DateStyle::Offset] {
        sim.set_quirks(QuirksPatch {
            numeric_bools: Some(true),
            string_numbers: Some(true),
            invited_capitalized: Some(true),
            date_style: Some(style),
            ..Default::default()
        });
        let raw = sim::raw_call(&sim, "getuserdata", json!({"pagesize": 100})).await;
        assert!(raw.body.contains(r#""Invited":["p@example.com"]"#));
        assert!(raw.body.contains(r#""total":"40""#));
        assert!(raw.body.contains(r#""disabled":0"#));
        assert_eq!(c.list_page(0, 100).await.unwrap(), baseline, "{style:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Faults.

fn assert_transient(r: Result<impl std::fmt::Debug, LastPassError>) -> LastPassError {
    match r {
        Err(e @ LastPassError::Transient { .. }) => e,
        other => panic!("expected Transient, got {other:?}"),
    }
}

#[tokio::test]
async fn http_503_is_transient_then_recovers() {
    let sim = start(1).await;
    let c = client(&sim);
    sim.set_faults(FaultsPatch {
        fail_next: Some(2),
        ..Default::default()
    });
    let raw = sim::raw_call(&sim, "getuserdata", json!({})).await;
    assert_eq!(raw.status, 503);
    let e = assert_transient(c.list_page(0, 10).await);
    assert_eq!(e.retry_after(), None);
    assert!(c.list_page(0, 10).await.is_ok());
    assert_eq!(sim.call_counts().getuserdata, 1);
}

#[tokio::test]
async fn http_429_html_with_retry_after() {
    let sim = start(1).await;
    let c = client(&sim);
    let (status, faults) =
        sim::control(&sim, "PUT", "/faults", Some(json!({"rate_limit_next": 2}))).await;
    assert_eq!(status, 200);
    assert_eq!(faults["rate_limit_next"], 2);
    assert_eq!(faults["retry_after_secs"], 1);
    let raw = sim::raw_call(&sim, "getuserdata", json!({})).await;
    assert_eq!(raw.status, 429);
    assert_eq!(raw.retry_after.as_deref(), Some("1"));
    assert!(raw.body.starts_with("<html>"));
    let e = assert_transient(c.find_user(&email("a@example.com")).await);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
    // The control endpoint is never faulted.
    sim.set_faults(FaultsPatch {
        rate_limit_rate: Some(1.0),
        retry_after_secs: Some(7),
        ..Default::default()
    });
    assert_eq!(sim::control(&sim, "GET", "/state", None).await.0, 200);
    let e = assert_transient(c.list_page(0, 1).await);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn outage_and_error_rate_are_transient() {
    let sim = start(1).await;
    let c = client(&sim);
    sim.set_faults(FaultsPatch {
        outage: Some(true),
        ..Default::default()
    });
    for _ in 0..3 {
        assert_transient(c.list_page(0, 10).await);
    }
    sim.set_faults(FaultsPatch {
        outage: Some(false),
        error_rate: Some(1.0),
        ..Default::default()
    });
    assert_transient(c.enable_users(&[email("a@example.com")]).await);
    sim.set_faults(FaultsPatch {
        error_rate: Some(0.0),
        ..Default::default()
    });
    assert!(c.list_page(0, 10).await.is_ok());
    assert!(sim.calls().is_empty());
}

#[tokio::test]
async fn latency_beyond_the_timeout_is_transient() {
    let sim = start(1).await;
    sim.set_faults(FaultsPatch {
        latency_ms: Some(1000),
        ..Default::default()
    });
    let c = sim::client_with_timeout(&sim, Duration::from_millis(150));
    let started = std::time::Instant::now();
    let e = assert_transient(c.list_page(0, 10).await);
    assert!(started.elapsed() < Duration::from_millis(900), "{e}");
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let c = Client::new(ClientConfig {
        api_url: sim::refused_url(),
        cid: sim::CID.into(),
        provhash: Provhash::new(sim::PROVHASH.into()),
        timeout: Duration::from_secs(2),
        max_response_bytes: ClientConfig::DEFAULT_MAX_RESPONSE_BYTES,
        time_zone: lastpass_connector::lastpass::DEFAULT_TIME_ZONE,
        max_rps: None,
    })
    .unwrap();
    assert_transient(c.list_page(0, 10).await);
}

#[tokio::test]
async fn shut_down_simulator_refuses() {
    let sim = start(1).await;
    let c = client(&sim);
    assert!(c.list_page(0, 10).await.is_ok());
    sim.shutdown().await;
    assert_transient(c.list_page(0, 10).await);
}

// ---------------------------------------------------------------------------------------------
// The provhash never leaks.

#[tokio::test]
async fn provhash_never_leaks() {
    let secret = sim::PROVHASH;
    let sim = start(1).await;
    let config = sim::client_config(&sim, Duration::from_millis(150));
    let c = Client::new(config.clone()).unwrap();
    let mut printed = vec![
        format!("{config:?}"),
        format!("{c:?}"),
        format!("{:?}", config.provhash),
        format!("{}", config.provhash),
    ];

    let mut errors = Vec::new();
    sim.set_faults(FaultsPatch {
        fail_next: Some(1),
        ..Default::default()
    });
    errors.push(c.list_page(0, 10).await.unwrap_err()); // 503
    sim.set_faults(FaultsPatch {
        rate_limit_next: Some(1),
        ..Default::default()
    });
    errors.push(c.list_page(0, 10).await.unwrap_err()); // 429
    sim.set_faults(FaultsPatch {
        latency_ms: Some(600),
        ..Default::default()
    });
    errors.push(c.list_page(0, 10).await.unwrap_err()); // timeout
    sim.set_faults(FaultsPatch {
        latency_ms: Some(0),
        ..Default::default()
    });
    errors.push(
        c.delete_user(&email("ghost@example.com"), DeleteAction::Delete)
            .await
            .unwrap_err(),
    );
    sim.rotate_credentials(Some("other-secret".into()), None);
    errors.push(c.list_page(0, 10).await.unwrap_err()); // auth error
    let refused = Client::new(ClientConfig {
        api_url: sim::refused_url(),
        ..config.clone()
    })
    .unwrap();
    errors.push(refused.list_page(0, 10).await.unwrap_err());
    // The secret inside the URL itself (a misconfiguration) is scrubbed too.
    let in_url = Client::new(ClientConfig {
        api_url: format!("{}?{secret}", sim::refused_url()),
        ..config.clone()
    })
    .unwrap();
    errors.push(in_url.list_page(0, 10).await.unwrap_err());

    assert_eq!(errors.len(), 7);
    for e in &errors {
        printed.push(format!("{e}"));
        printed.push(format!("{e:?}"));
    }
    for text in &printed {
        assert!(!text.contains(secret), "leaked in {text:?}");
    }
    // The simulator's own views never hold the envelope's provhash.
    let (_, calls) = sim::control(&sim, "GET", "/calls", None).await;
    assert!(!calls.to_string().contains(secret));
    let (_, state) = sim::control(&sim, "GET", "/state", None).await;
    assert!(!state.to_string().contains(secret));
}

// ---------------------------------------------------------------------------------------------
// The simulator's control endpoint and hostile input.

#[tokio::test]
async fn control_endpoint_users() {
    let sim = start(0).await;
    let (status, added) = sim::control(
        &sim,
        "POST",
        "/users",
        Some(
            json!({"username": "Ctl@example.com", "fullname": "C T", "admin": true,
                    "last_login": "2024-05-05 05:05:05", "groups": ["Sales"]}),
        ),
    )
    .await;
    assert_eq!(status, 200);
    let uid = added["uid"].as_str().unwrap().to_string();
    let c = client(&sim);
    let u = c
        .find_user(&email("ctl@example.com"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (u.uid.as_str(), u.admin, u.groups.clone()),
        (uid.as_str(), true, vec!["Sales".to_string()])
    );

    let (status, patched) = sim::control(
        &sim,
        "PATCH",
        "/users/ctl@example.com",
        Some(json!({"username": "renamed@example.com", "disabled": true})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(patched["uid"], json!(uid));
    let u = c
        .find_user(&email("renamed@example.com"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.uid, uid);
    assert!(u.disabled);
    assert_eq!(c.find_user(&email("ctl@example.com")).await.unwrap(), None);

    assert_eq!(
        sim::control(&sim, "DELETE", "/users/renamed@example.com", None)
            .await
            .0,
        204
    );
    assert_eq!(
        sim::control(&sim, "DELETE", "/users/renamed@example.com", None)
            .await
            .0,
        404
    );
    assert_eq!(
        sim::control(&sim, "PATCH", "/users/nobody@example.com", Some(json!({})))
            .await
            .0,
        404
    );
    assert_eq!(
        sim::control(&sim, "POST", "/users", Some(json!({"fullname": "x"})))
            .await
            .0,
        400
    );
    assert_eq!(
        sim::control(&sim, "PUT", "/faults", Some(json!({"latency_ms": "slow"})))
            .await
            .0,
        400
    );
    assert_eq!(
        c.find_user(&email("renamed@example.com")).await.unwrap(),
        None
    );

    c.delete_user(&email("nobody@example.com"), DeleteAction::Deactivate)
        .await
        .unwrap_err();
    let (_, state) = sim::control(&sim, "GET", "/state", None).await;
    assert_eq!(state["cid"], sim::CID);
    assert_eq!(
        state["calls"],
        json!({"getuserdata": 4, "deluser": 1, "batchadd": 0, "enableuser": 0, "rate_limited": 0})
    );
    let (_, calls) = sim::control(&sim, "GET", "/calls", None).await;
    assert_eq!(
        calls,
        json!([{"cmd": "deluser", "data": {"username": "nobody@example.com", "deleteaction": 0}}])
    );
}

#[tokio::test]
async fn hostile_api_input_never_breaks_the_simulator() {
    let sim = start(2).await;
    for body in [
        "",
        "{",
        "not json",
        "[1,2]",
        "null",
        r#"{"cid":[],"provhash":{}}"#,
    ] {
        let raw = sim::raw_post(&sim, body).await;
        assert_eq!(
            (raw.status, raw.body.as_str()),
            (200, AUTH_ERROR_XML),
            "{body:?}"
        );
    }
    let raw = sim::raw_call(&sim, "dropdatabase", json!({})).await;
    assert_eq!(raw.body, r#"{"status":"FAIL","error":"Unknown command"}"#);
    let raw = sim::raw_call(
        &sim,
        "deluser",
        json!({"username": "x@example.com", "deleteaction": 42}),
    )
    .await;
    assert_eq!(
        raw.body,
        r#"{"status":"FAIL","error":"Invalid deleteaction"}"#
    );
    let raw = sim::raw_call(&sim, "batchadd", json!("nope")).await;
    assert_eq!(raw.body, r#"{"status":"FAIL","error":"Invalid data"}"#);
    // Still serving.
    assert_eq!(client(&sim).list_page(0, 10).await.unwrap().total, 2);
}
