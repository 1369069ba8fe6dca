//! Delivery acknowledgements: `POST /v1/me/ack` and `GET /v1/users/{user}/tabs`,
//! through the real router over a real SQLite store.

mod common;

use axum::http::{Method, StatusCode};
use common::{assert_problem, TestServer};
use serde_json::{json, Value};

fn tab<'a>(listing: &'a Value, id: &str) -> &'a Value {
    listing["tabs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tab"] == id)
        .unwrap_or_else(|| panic!("tab {id} in {listing}"))
}

#[tokio::test]
async fn an_acknowledged_revision_is_listed_with_its_delay() {
    let s = TestServer::seeded().await;
    let (alice, admin) = (s.token("alice"), s.token("admin"));
    let rev = s.revision("alice");

    let r = s
        .post(
            "/v1/me/ack",
            &alice,
            json!({"revision": rev, "tab": "tab-1", "leader": true, "label": "shop /"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(r.revision_header(), Some(rev));

    let listing = s.get("/v1/users/alice/tabs", &admin).await;
    assert_eq!(listing.status, StatusCode::OK, "{}", listing.text);
    assert_eq!(listing.body["user"], "alice");
    assert_eq!(listing.body["revision"], rev);
    assert_eq!(listing.body["ttl_seconds"], 60);
    let t = tab(&listing.body, "tab-1");
    assert_eq!(t["revision"], rev);
    assert_eq!(t["leader"], true);
    assert_eq!(t["label"], "shop /");
    let applied = t["applied"].as_array().unwrap();
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0]["revision"], rev);
    assert!(
        applied[0]["committed_at"].is_string(),
        "the commit time is looked up: {listing:?}",
        listing = listing.text
    );
    // That revision was committed before the tab first reported: it did not travel to it.
    assert!(applied[0]["after_ms"].is_null(), "{}", listing.text);
}

#[tokio::test]
async fn a_change_is_reported_applied_in_every_tab_that_acknowledged_it() {
    let s = TestServer::seeded().await;
    let (alice, admin) = (s.token("alice"), s.token("admin"));
    for t in ["leader-tab", "follower-tab"] {
        let r = s
            .post(
                "/v1/me/ack",
                &alice,
                json!({"revision": s.revision("alice"), "tab": t}),
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    }
    let granted = s
        .post(
            "/v1/users/alice/grants",
            &admin,
            json!({"permission": "invoice:create", "scope": "org/acme"}),
        )
        .await;
    assert_eq!(granted.status, StatusCode::CREATED, "{}", granted.text);
    let seq = granted.body["seq"].as_u64().unwrap();
    let change = s
        .get(&format!("/v1/changes?after={}&limit=1", seq - 1), &admin)
        .await;
    let committed_at = change.body["changes"][0]["at"]
        .as_str()
        .unwrap()
        .to_string();

    for t in ["leader-tab", "follower-tab"] {
        let r = s
            .post(
                "/v1/me/ack",
                &alice,
                json!({"revision": seq, "tab": t, "leader": t == "leader-tab"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    }
    let listing = s.get("/v1/users/alice/tabs", &admin).await;
    assert_eq!(listing.body["tabs"].as_array().unwrap().len(), 2);
    for t in ["leader-tab", "follower-tab"] {
        let t = tab(&listing.body, t);
        assert_eq!(t["revision"], seq);
        let last = t["applied"].as_array().unwrap().last().unwrap();
        assert_eq!(last["revision"], seq);
        assert_eq!(
            last["committed_at"],
            committed_at.as_str(),
            "the grant's commit time"
        );
        assert!(
            last["after_ms"]
                .as_i64()
                .is_some_and(|ms| (0..5_000).contains(&ms)),
            "{last}"
        );
    }
    assert_eq!(tab(&listing.body, "leader-tab")["leader"], true);
    assert_eq!(tab(&listing.body, "follower-tab")["leader"], false);
}

#[tokio::test]
async fn a_tab_only_moves_forward_and_closing_forgets_it() {
    let s = TestServer::seeded().await;
    let (alice, admin) = (s.token("alice"), s.token("admin"));
    let old = s.revision("alice");
    s.grant("alice", "doc:read", None).await;
    let new = s.revision("alice");
    assert!(new > old);
    s.post("/v1/me/ack", &alice, json!({"revision": new, "tab": "t"}))
        .await;
    // A late acknowledgement of an older revision changes nothing.
    let r = s
        .post("/v1/me/ack", &alice, json!({"revision": old, "tab": "t"}))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let listing = s.get("/v1/users/alice/tabs", &admin).await;
    assert_eq!(tab(&listing.body, "t")["revision"], new);
    assert_eq!(
        tab(&listing.body, "t")["applied"].as_array().unwrap().len(),
        1
    );

    let r = s
        .post(
            "/v1/me/ack",
            &alice,
            json!({"revision": new, "tab": "t", "closed": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let listing = s.get("/v1/users/alice/tabs", &admin).await;
    assert_eq!(listing.body["tabs"], json!([]));
}

#[tokio::test]
async fn tabs_are_per_user() {
    let s = TestServer::seeded().await;
    let (alice, bob, admin) = (s.token("alice"), s.token("bob"), s.token("admin"));
    s.post(
        "/v1/me/ack",
        &alice,
        json!({"revision": s.revision("alice"), "tab": "same-id"}),
    )
    .await;
    s.post(
        "/v1/me/ack",
        &bob,
        json!({"revision": s.revision("bob"), "tab": "same-id"}),
    )
    .await;
    let a = s.get("/v1/users/alice/tabs", &admin).await;
    let b = s.get("/v1/users/bob/tabs", &admin).await;
    assert_eq!(tab(&a.body, "same-id")["revision"], s.revision("alice"));
    assert_eq!(tab(&b.body, "same-id")["revision"], s.revision("bob"));
    assert_eq!(
        s.get("/v1/users/carol/tabs", &admin).await.body["tabs"],
        json!([])
    );
}

#[tokio::test]
async fn who_may_list_tabs() {
    let s = TestServer::seeded().await;
    let (alice, bob, admin) = (s.token("alice"), s.token("bob"), s.token("admin"));
    s.post(
        "/v1/me/ack",
        &alice,
        json!({"revision": s.revision("alice"), "tab": "t"}),
    )
    .await;
    // The user sees their own tabs; another user needs permsync:admin or permsync:audit.
    assert_eq!(
        s.get("/v1/users/alice/tabs", &alice).await.status,
        StatusCode::OK
    );
    assert_problem(&s.get("/v1/users/alice/tabs", &bob).await, 403, "forbidden");
    s.grant("bob", "permsync:audit", None).await;
    let listing = s.get("/v1/users/alice/tabs", &bob).await;
    assert_eq!(listing.status, StatusCode::OK);
    assert_eq!(tab(&listing.body, "t")["tab"], "t");
    assert_problem(
        &s.get("/v1/users/nobody/tabs", &admin).await,
        404,
        "not_found",
    );
    assert_problem(
        &s.get("/v1/users/no%20body/tabs", &admin).await,
        400,
        "invalid_request",
    );
    assert_problem(
        &s.call(Method::GET, "/v1/users/alice/tabs", None, None)
            .await,
        401,
        "invalid_token",
    );
}

#[tokio::test]
async fn bad_acknowledgements_are_refused() {
    let s = TestServer::seeded().await;
    let alice = s.token("alice");
    let rev = s.revision("alice");
    let long_id = "x".repeat(65);
    let long_label = "x".repeat(129);
    for body in [
        json!({"revision": rev, "tab": ""}),
        json!({"revision": rev, "tab": long_id}),
        json!({"revision": rev, "tab": "a b"}),
        json!({"revision": rev, "tab": "t", "label": long_label}),
        json!({"revision": rev, "tab": "t", "label": "line\nbreak"}),
        json!({"revision": rev + 1000, "tab": "t"}),
        json!({"revision": -1, "tab": "t"}),
        json!({"revision": rev, "tab": "t", "unknown": 1}),
        json!({"tab": "t"}),
    ] {
        let r = s.post("/v1/me/ack", &alice, body.clone()).await;
        assert_problem(&r, 400, "invalid_request");
        assert!(
            r.revision_header().is_some(),
            "{body}: an authenticated answer carries the revision"
        );
    }
    assert_problem(
        &s.call(
            Method::POST,
            "/v1/me/ack",
            None,
            Some(json!({"revision": rev, "tab": "t"})),
        )
        .await,
        401,
        "invalid_token",
    );
    let admin = s.token("admin");
    assert_eq!(
        s.get("/v1/users/alice/tabs", &admin).await.body["tabs"],
        json!([]),
        "nothing was recorded"
    );
}

#[tokio::test]
async fn the_extension_is_in_the_openapi_document() {
    let doc = serde_json::to_value(permsync_server::openapi()).unwrap();
    assert!(doc["paths"]["/v1/me/ack"]["post"].is_object());
    assert!(doc["paths"]["/v1/users/{user}/tabs"]["get"].is_object());
    assert!(doc["components"]["schemas"]["AckRequest"].is_object());
    assert!(doc["components"]["schemas"]["UserTabs"].is_object());
}
