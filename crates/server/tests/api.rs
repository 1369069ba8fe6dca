//! The v1 HTTP API through the real router, over a real SQLite store.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{assert_problem, TestServer};
use serde_json::json;

#[tokio::test]
async fn walkthrough_grant_raises_revision_and_invalidates_etag() {
    let s = TestServer::seeded().await;
    let (alice, admin) = (s.token("alice"), s.token("admin"));
    let first = s.get("/v1/me/permissions", &alice).await;
    assert_eq!(first.status, StatusCode::OK);
    let rev = first.body["revision"].as_u64().unwrap();
    assert_eq!(first.header("etag"), Some(format!("\"{rev}\"").as_str()));
    assert_eq!(first.revision_header(), Some(rev));
    assert_eq!(first.header("cache-control"), Some("no-store"));

    let req = |etag: &str| {
        Request::get("/v1/me/permissions")
            .header("authorization", format!("Bearer {alice}"))
            .header("if-none-match", etag)
            .body(Body::empty())
            .unwrap()
    };
    let same = s.send(req(&format!("\"{rev}\""))).await;
    assert_eq!(same.status, StatusCode::NOT_MODIFIED);
    assert_eq!(same.revision_header(), Some(rev));

    let granted = s
        .post(
            "/v1/users/alice/grants",
            &admin,
            json!({"permission": "invoice:approve"}),
        )
        .await;
    assert_eq!(granted.status, StatusCode::CREATED, "{}", granted.text);
    let new_rev = granted.body["revision"].as_u64().unwrap();
    assert!(new_rev > rev);
    assert_eq!(granted.body["seq"].as_u64(), Some(new_rev));

    let check = s
        .post(
            "/v1/check",
            &alice,
            json!({"user": "alice", "permission": "invoice:approve"}),
        )
        .await;
    assert_eq!(check.body, json!({"allowed": true, "revision": new_rev}));
    assert_eq!(check.revision_header(), Some(new_rev));

    let changed = s.send(req(&format!("\"{rev}\""))).await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(changed.body["revision"].as_u64(), Some(new_rev));
    let perms = changed.body["permissions"].as_array().unwrap();
    assert!(perms
        .iter()
        .any(|p| p["permission"] == "invoice:approve" && p["via"] == json!(["direct"])));
}

#[tokio::test]
async fn same_active_grant_is_idempotent() {
    let s = TestServer::seeded().await;
    let admin = s.token("admin");
    let body = json!({"permission": "doc:read", "scope": "org/acme"});
    let a = s.post("/v1/users/bob/grants", &admin, body.clone()).await;
    assert_eq!(a.status, StatusCode::CREATED);
    let rev = s.revision("bob");
    let b = s.post("/v1/users/bob/grants", &admin, body).await;
    assert_eq!(b.status, StatusCode::OK);
    assert_eq!(a.body["grant"]["id"], b.body["grant"]["id"]);
    assert_eq!(s.revision("bob"), rev, "no new revision");
    let id = a.body["grant"]["id"].as_u64().unwrap();
    let removed = s
        .delete(&format!("/v1/users/bob/grants/{id}"), &admin)
        .await;
    assert_eq!(removed.status, StatusCode::OK);
    assert!(removed.body["revision"].as_u64().unwrap() > rev);
    assert_problem(
        &s.delete(&format!("/v1/users/bob/grants/{id}"), &admin)
            .await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn role_edit_raises_members_only_and_role_delete_removes_bindings() {
    let s = TestServer::seeded().await;
    let admin = s.token("admin");
    let bound = s
        .post(
            "/v1/users/alice/roles",
            &admin,
            json!({"role": "editor", "scope": "project/7"}),
        )
        .await;
    assert_eq!(bound.status, StatusCode::CREATED, "{}", bound.text);
    assert_eq!(bound.body["binding"]["role"], "editor");
    let (alice, bob) = (s.revision("alice"), s.revision("bob"));

    let put = s
        .put(
            "/v1/roles/editor",
            &admin,
            json!({"permissions": ["doc:edit", "doc:publish"], "description": "Edits"}),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK);
    let seq = put.body["seq"].as_u64().unwrap();
    assert_eq!(s.revision("alice"), seq);
    assert_eq!(s.revision("bob"), bob);
    assert!(seq > alice);
    let created = s
        .put(
            "/v1/roles/auditor",
            &admin,
            json!({"permissions": ["log:read"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);

    let roles = s.get("/v1/roles", &admin).await;
    let editor = roles.body["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["role"] == "editor")
        .unwrap()
        .clone();
    assert_eq!(editor["members"], 1);
    assert_eq!(editor["permissions"], json!(["doc:edit", "doc:publish"]));

    let alice_token = s.token("alice");
    let c = s
        .post(
            "/v1/check",
            &alice_token,
            json!({"user": "alice", "permission": "doc:publish", "scope": "project/7/doc/1"}),
        )
        .await;
    assert_eq!(c.body["allowed"], true);
    let del = s.delete("/v1/roles/editor", &admin).await;
    assert_eq!(del.status, StatusCode::OK);
    assert_eq!(s.revision("alice"), del.body["seq"].as_u64().unwrap());
    let detail = s.get("/v1/users/alice", &admin).await;
    assert_eq!(detail.body["bindings"], json!([]));
    assert_problem(
        &s.delete("/v1/roles/editor", &admin).await,
        404,
        "not_found",
    );
    assert_problem(
        &s.post("/v1/users/alice/roles", &admin, json!({"role": "editor"}))
            .await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn users_are_created_listed_paged_and_deleted() {
    let s = TestServer::seeded().await;
    let admin = s.token("admin");
    let r = s
        .post(
            "/v1/users",
            &admin,
            json!({"user": "dave", "password": "dave-password"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_problem(
        &s.post("/v1/users", &admin, json!({"user": "dave"})).await,
        409,
        "conflict",
    );
    let page1 = s.get("/v1/users?limit=2", &admin).await;
    assert_eq!(page1.body["users"].as_array().unwrap().len(), 2);
    let cursor = page1.body["next_cursor"].as_str().unwrap().to_string();
    let page2 = s
        .get(&format!("/v1/users?limit=1000&cursor={cursor}"), &admin)
        .await;
    let names: Vec<&str> = page2.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["bob", "carol", "dave"]);
    assert_eq!(page2.body["next_cursor"], json!(null));
    let prefixed = s.get("/v1/users?prefix=da", &admin).await;
    assert_eq!(prefixed.body["users"].as_array().unwrap().len(), 1);

    let login = s
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"username": "dave", "password": "dave-password"})),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);
    let dave = login.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        s.get("/v1/me/permissions", &dave).await.status,
        StatusCode::OK
    );

    let before = s.revision("dave");
    let del = s.delete("/v1/users/dave", &admin).await;
    assert_eq!(del.status, StatusCode::OK);
    assert!(s.revision("dave") > before);
    assert_problem(
        &s.get("/v1/me/permissions", &dave).await,
        401,
        "invalid_token",
    );
    assert_problem(&s.get("/v1/users/dave", &admin).await, 404, "not_found");
    assert_problem(&s.delete("/v1/users/dave", &admin).await, 404, "not_found");
    // Recreated, the user starts above the old revision and holds nothing.
    let again = s.post("/v1/users", &admin, json!({"user": "dave"})).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert!(again.body["revision"].as_u64().unwrap() > del.body["seq"].as_u64().unwrap() - 1);
}

#[tokio::test]
async fn a_scoped_delegate_reads_users_and_roles_within_its_scopes() {
    let s = TestServer::seeded().await;
    s.grant("bob", "doc:edit", Some("org/acme/project/1")).await;
    s.grant("bob", "doc:edit", Some("org/other")).await;
    s.grant("bob", "doc:read", None).await;
    s.bind("bob", "editor", Some("org/acme")).await;
    s.bind("bob", "editor", Some("org/other")).await;
    let carol = s.token("carol");
    let users = s.get("/v1/users", &carol).await;
    assert_eq!(users.status, StatusCode::OK, "{}", users.text);
    assert!(users.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["user"] == "bob"));
    let roles = s.get("/v1/roles", &carol).await;
    assert_eq!(roles.status, StatusCode::OK, "{}", roles.text);
    assert_eq!(roles.body["roles"][0]["role"], "editor");
    // Bob's holdings under org/acme are shown, those elsewhere and global ones not.
    let bob = s.get("/v1/users/bob", &carol).await;
    assert_eq!(bob.status, StatusCode::OK, "{}", bob.text);
    let scopes = |key: &str| -> Vec<String> {
        bob.body[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["scope"].as_str().unwrap_or("(global)").to_string())
            .collect()
    };
    assert_eq!(scopes("grants"), ["org/acme/project/1"]);
    assert_eq!(scopes("bindings"), ["org/acme"]);
    assert!(scopes("permissions")
        .iter()
        .all(|s| s.starts_with("org/acme")));
    assert!(!scopes("permissions").is_empty());
    // The admin sees all of it.
    let full = s.get("/v1/users/bob", &s.token("admin")).await;
    assert_eq!(full.body["grants"].as_array().unwrap().len(), 3);
    // A plain user reads only themself.
    let alice = s.token("alice");
    assert_problem(&s.get("/v1/users", &alice).await, 403, "forbidden");
    assert_problem(&s.get("/v1/roles", &alice).await, 403, "forbidden");
    assert_problem(&s.get("/v1/users/bob", &alice).await, 403, "forbidden");
    assert_eq!(
        s.get("/v1/users/alice", &alice).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn delegation_is_bounded_by_what_the_delegate_holds() {
    let s = TestServer::seeded().await;
    let carol = s.token("carol");
    let ok = s
        .post(
            "/v1/users/bob/grants",
            &carol,
            json!({"permission": "doc:edit", "scope": "org/acme/project/1"}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text);
    for (user, body) in [
        (
            "bob",
            json!({"permission": "doc:edit", "scope": "org/other"}),
        ),
        ("bob", json!({"permission": "doc:edit"})),
        ("bob", json!({"permission": "doc:*", "scope": "org/acme"})),
        (
            "bob",
            json!({"permission": "permsync:admin", "scope": "org/acme"}),
        ),
        (
            "carol",
            json!({"permission": "doc:edit", "scope": "org/acme"}),
        ),
    ] {
        let r = s
            .post(&format!("/v1/users/{user}/grants"), &carol, body.clone())
            .await;
        assert_problem(&r, 403, "forbidden");
    }
    let id = ok.body["grant"]["id"].as_u64().unwrap();
    assert_eq!(
        s.delete(&format!("/v1/users/bob/grants/{id}"), &carol)
            .await
            .status,
        StatusCode::OK
    );
    // Role bindings: only roles whose every permission the delegate holds there.
    s.role("commenter", &["doc:edit"]).await;
    let b = s
        .post(
            "/v1/users/bob/roles",
            &carol,
            json!({"role": "commenter", "scope": "org/acme"}),
        )
        .await;
    assert_eq!(b.status, StatusCode::CREATED);
    assert_problem(
        &s.post(
            "/v1/users/bob/roles",
            &carol,
            json!({"role": "editor", "scope": "org/acme"}),
        )
        .await,
        403,
        "forbidden",
    );
    // Users without admin cannot touch roles, users or the audit log.
    let alice = s.token("alice");
    assert_problem(
        &s.put("/v1/roles/x", &alice, json!({"permissions": []}))
            .await,
        403,
        "forbidden",
    );
    assert_problem(
        &s.post("/v1/users", &alice, json!({"user": "eve"})).await,
        403,
        "forbidden",
    );
    assert_problem(&s.get("/v1/changes", &alice).await, 403, "forbidden");
    assert_problem(
        &s.post("/v1/invalidate", &alice, json!({"users": ["bob"]}))
            .await,
        403,
        "forbidden",
    );
}

#[tokio::test]
async fn checks_for_self_others_and_batches() {
    let s = TestServer::seeded().await;
    s.grant("alice", "doc:read", Some("org/acme")).await;
    s.user("backend").await;
    s.grant("backend", "permsync:check", None).await;
    let (alice, backend) = (s.token("alice"), s.token("backend"));
    assert_problem(
        &s.post(
            "/v1/check",
            &alice,
            json!({"user": "bob", "permission": "doc:read"}),
        )
        .await,
        403,
        "forbidden",
    );
    let r = s
        .post(
            "/v1/check/batch",
            &backend,
            json!({"checks": [
                {"user": "alice", "permission": "doc:read", "scope": "org/acme/project/1"},
                {"user": "alice", "permission": "doc:read"},
                {"user": "bob", "permission": "doc:read", "scope": "org/acme"},
                {"user": "nobody", "permission": "doc:read"}
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let allowed: Vec<bool> = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["allowed"].as_bool().unwrap())
        .collect();
    assert_eq!(allowed, vec![true, false, false, false]);
    assert_eq!(
        r.body["results"][0]["revision"].as_u64(),
        Some(s.revision("alice"))
    );
    let too_many: Vec<_> = (0..1001)
        .map(|_| json!({"user": "alice", "permission": "a"}))
        .collect();
    assert_problem(
        &s.post("/v1/check/batch", &backend, json!({"checks": too_many}))
            .await,
        400,
        "invalid_request",
    );
}

#[tokio::test]
async fn invalidate_raises_revisions_without_changing_permissions() {
    let s = TestServer::seeded().await;
    let admin = s.token("admin");
    let before = s.get("/v1/users/alice", &admin).await.body["permissions"].clone();
    let r = s
        .post(
            "/v1/invalidate",
            &admin,
            json!({"users": ["alice", "external-user-7"], "reason": "app roles changed"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let seq = r.body["seq"].as_u64().unwrap();
    assert_eq!(
        r.body["revisions"],
        json!({"alice": seq, "external-user-7": seq})
    );
    assert_eq!(s.revision("alice"), seq);
    assert_eq!(
        s.get("/v1/users/alice", &admin).await.body["permissions"],
        before
    );
}

#[tokio::test]
async fn audit_log_lists_changes_with_actor_in_order() {
    let s = TestServer::seeded().await;
    let admin = s.token("admin");
    s.post(
        "/v1/users/bob/grants",
        &admin,
        json!({"permission": "x:y", "scope": "org/acme"}),
    )
    .await;
    let all = s.get("/v1/changes?limit=1000", &admin).await;
    let changes = all.body["changes"].as_array().unwrap();
    let seqs: Vec<u64> = changes.iter().map(|c| c["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gap-free and ordered"
    );
    let last = changes.last().unwrap();
    assert_eq!(last["action"], "grant_added");
    assert_eq!(last["actor"], "admin");
    assert_eq!(last["user"], "bob");
    assert_eq!(last["permission"], "x:y");
    assert_eq!(last["scope"], "org/acme");
    let page = s.get("/v1/changes?after=2&limit=2", &admin).await;
    assert_eq!(page.body["changes"][0]["seq"], 3);
    assert_eq!(page.body["next_after"], 4);
}

#[tokio::test]
async fn login_refresh_rotation_reuse_and_logout() {
    let s = TestServer::seeded().await;
    let login = |user: &str, pw: &str| json!({"username": user, "password": pw});
    let ok = s
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(login("alice", "alice-password")),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.body["token_type"], "Bearer");
    assert_eq!(ok.body["expires_in"], 300);
    let refresh1 = ok.body["refresh_token"].as_str().unwrap().to_string();
    let access1 = ok.body["access_token"].as_str().unwrap().to_string();

    let wrong = s
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(login("alice", "nope")),
        )
        .await;
    let unknown = s
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(login("nobody", "nope")),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong.text, unknown.text,
        "unknown user and wrong password answer alike"
    );
    assert_eq!(wrong.status, unknown.status);

    let r1 = s
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh1})),
        )
        .await;
    assert_eq!(r1.status, StatusCode::OK);
    let refresh2 = r1.body["refresh_token"].as_str().unwrap().to_string();
    let access2 = r1.body["access_token"].as_str().unwrap().to_string();
    assert_ne!(refresh1, refresh2);
    assert_eq!(
        s.get("/v1/me/permissions", &access2).await.status,
        StatusCode::OK
    );

    // Once its successor was rotated too, the first token is an older one:
    // presenting it, even within the grace window, revokes the whole session.
    let r2 = s
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh2})),
        )
        .await;
    assert_eq!(r2.status, StatusCode::OK);
    let refresh3 = r2.body["refresh_token"].as_str().unwrap().to_string();
    let reuse = s
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh1})),
        )
        .await;
    assert_problem(&reuse, 401, "invalid_token");
    assert_problem(
        &s.get("/v1/me/permissions", &access1).await,
        401,
        "invalid_token",
    );
    assert_problem(
        &s.get("/v1/me/permissions", &access2).await,
        401,
        "invalid_token",
    );
    let after = s
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh3})),
        )
        .await;
    assert_problem(&after, 401, "invalid_token");

    // Logout ends a fresh session.
    let ok = s
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(login("alice", "alice-password")),
        )
        .await;
    let (refresh, access) = (
        ok.body["refresh_token"].clone(),
        ok.body["access_token"].as_str().unwrap().to_string(),
    );
    let out = s
        .call(
            Method::POST,
            "/v1/auth/logout",
            None,
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert_problem(
        &s.get("/v1/me/permissions", &access).await,
        401,
        "invalid_token",
    );
    let r = s
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_problem(&r, 401, "invalid_token");
}

#[tokio::test]
async fn repeated_login_failures_are_rate_limited() {
    let s = TestServer::seeded().await;
    let mut last = None;
    for _ in 0..11 {
        last = Some(
            s.call(
                Method::POST,
                "/v1/auth/login",
                None,
                Some(json!({"username": "bob", "password": "x"})),
            )
            .await,
        );
    }
    let r = last.unwrap();
    assert_problem(&r, 429, "rate_limited");
    assert!(r
        .header("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|v| v >= 1));
    // Even the right password waits.
    let right = s
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"username": "bob", "password": "bob-password"})),
        )
        .await;
    assert_problem(&right, 429, "rate_limited");
}

#[tokio::test]
async fn stale_tokens_are_rejected_when_configured() {
    let config = permsync_server::ServerConfig {
        stale_tokens: permsync_server::StaleTokens::Reject,
        ..Default::default()
    };
    let s = TestServer::with_config(config).await;
    s.seed().await;
    let alice = s.token("alice");
    assert_eq!(
        s.get("/v1/me/permissions", &alice).await.status,
        StatusCode::OK
    );
    s.grant("alice", "a:b", None).await;
    let r = s.get("/v1/me/permissions", &alice).await;
    assert_problem(&r, 401, "stale_token");
    let www = r.header("www-authenticate").unwrap();
    assert!(
        www.contains("error=\"invalid_token\"")
            && www.contains("error_description=\"permissions changed\""),
        "{www}"
    );
    assert_eq!(
        s.get("/v1/me/permissions", &s.token("alice")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn every_401_carries_www_authenticate() {
    let s = TestServer::seeded().await;
    let r = s.call(Method::GET, "/v1/me/permissions", None, None).await;
    assert_problem(&r, 401, "invalid_token");
    let www = r.header("www-authenticate").unwrap();
    assert!(
        www.starts_with("Bearer realm=\"permsync\", error=\"invalid_token\", error_description=\""),
        "{www}"
    );
}

#[tokio::test]
async fn jwks_publishes_the_key_that_signs_tokens() {
    let s = TestServer::seeded().await;
    let r = s
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    let key = &r.body["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    let token = s.token("alice");
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), key["kid"].as_str());
    let decoding =
        jsonwebtoken::DecodingKey::from_ed_components(key["x"].as_str().unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&["permsync"]);
    v.set_issuer(&["permsync"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &v)
        .unwrap()
        .claims;
    for claim in ["iss", "sub", "aud", "iat", "exp", "jti", "sid", "prev"] {
        assert!(claims.get(claim).is_some(), "claim {claim}");
    }
    assert_eq!(claims["prev"].as_u64(), Some(s.revision("alice")));
}

#[tokio::test]
async fn openapi_lists_every_v1_endpoint() {
    let s = TestServer::new().await;
    let r = s.call(Method::GET, "/openapi.json", None, None).await;
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = r.body["paths"].as_object().unwrap();
    for p in [
        "/v1/me/permissions",
        "/v1/check",
        "/v1/check/batch",
        "/v1/users",
        "/v1/users/{user}",
        "/v1/users/{user}/grants",
        "/v1/users/{user}/grants/{id}",
        "/v1/users/{user}/roles",
        "/v1/users/{user}/roles/{id}",
        "/v1/users/{user}/sessions/revoke",
        "/v1/roles",
        "/v1/roles/{role}",
        "/v1/invalidate",
        "/v1/changes",
        "/v1/auth/login",
        "/v1/auth/refresh",
        "/v1/auth/logout",
    ] {
        assert!(paths.contains_key(p), "{p} missing from OpenAPI");
    }
}

#[tokio::test]
async fn cors_exposes_the_revision_header_to_allowed_origins() {
    let config = permsync_server::ServerConfig {
        cors_origins: vec!["https://app.example".into()],
        ..Default::default()
    };
    let s = TestServer::with_config(config).await;
    s.seed().await;
    let pre = Request::builder()
        .method(Method::OPTIONS)
        .uri("/v1/me/permissions")
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .body(Body::empty())
        .unwrap();
    let r = s.send(pre).await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let get = Request::get("/v1/me/permissions")
        .header("origin", "https://app.example")
        .header("authorization", format!("Bearer {}", s.token("alice")))
        .body(Body::empty())
        .unwrap();
    let r = s.send(get).await;
    let exposed = r
        .header("access-control-expose-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("permissions-revision"), "{exposed}");
    let other = Request::get("/healthz")
        .header("origin", "https://evil.example")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        s.send(other).await.header("access-control-allow-origin"),
        None
    );
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let s = TestServer::seeded().await;
    assert_eq!(
        s.call(Method::GET, "/healthz", None, None).await.status,
        StatusCode::OK
    );
    let ready = s.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK);
    s.state
        .shutting_down
        .store(true, std::sync::atomic::Ordering::Relaxed);
    assert_problem(
        &s.call(Method::GET, "/readyz", None, None).await,
        503,
        "unavailable",
    );
    s.get("/v1/me/permissions", &s.token("alice")).await;
    let m = s.call(Method::GET, "/metrics", None, None).await;
    for name in [
        "permsync_http_requests_total",
        "permsync_http_request_duration_seconds",
        "permsync_open_streams",
        "permsync_events_sent",
        "permsync_push_latency_seconds",
    ] {
        assert!(m.text.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test]
async fn expiry_raises_the_revision_without_any_request() {
    let s = TestServer::seeded().await;
    let admin = s.token("admin");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let bg = tokio::spawn(s.state.clone().run_background(stop_rx));
    let expires = permsync_server::time::rfc3339(permsync_server::time::now().plus_millis(1200));
    let g = s
        .post(
            "/v1/users/alice/grants",
            &admin,
            json!({"permission": "trial:use", "expires_at": expires}),
        )
        .await;
    assert_eq!(g.status, StatusCode::CREATED, "{}", g.text);
    let granted_rev = s.revision("alice");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while s.revision("alice") == granted_rev {
        assert!(
            std::time::Instant::now() < deadline,
            "expiry never raised the revision"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expired_at = permsync_server::time::now();
    // Within 1 s of expires_at (plus scheduling slack for a loaded test machine).
    let due = permsync_server::time::parse_rfc3339(&expires).unwrap();
    assert!(
        expired_at.0 - due.0 < 1500,
        "expired {} ms late",
        expired_at.0 - due.0
    );
    let r = s
        .post(
            "/v1/check",
            &s.token("alice"),
            json!({"user": "alice", "permission": "trial:use"}),
        )
        .await;
    assert_eq!(r.body["allowed"], false);
    let changes = s.get("/v1/changes?limit=1000", &admin).await;
    assert_eq!(
        changes.body["changes"].as_array().unwrap().last().unwrap()["action"],
        "grant_expired"
    );
    let _ = stop_tx.send(true);
    let _ = bg.await;
}

#[tokio::test]
async fn changes_by_another_writer_are_seen_via_the_tail() {
    let s = TestServer::seeded().await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let bg = tokio::spawn(s.state.clone().run_background(stop_rx));
    let cli = s.other_writer().await;
    let before = s.revision("bob");
    cli.invalidate(
        "cli",
        &[permsync_core::UserId::parse("bob").unwrap()],
        None,
        permsync_server::time::now(),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while s.revision("bob") == before {
        assert!(
            std::time::Instant::now() < deadline,
            "another writer's change not seen within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let _ = bg.await;
}

#[tokio::test]
async fn state_survives_reopening_the_store() {
    let s = TestServer::seeded().await;
    let admin = s.token("admin");
    s.post("/v1/users/bob/grants", &admin, json!({"permission": "x:y"}))
        .await;
    let (rev, seq) = (s.revision("bob"), s.state.index().applied_seq());
    let reopened = permsync_server::AppState::open(s.other_writer().await, Default::default())
        .await
        .unwrap();
    assert_eq!(reopened.revision("bob"), rev);
    assert_eq!(reopened.index().applied_seq(), seq);
    assert!(reopened
        .index()
        .can("bob", "x:y", None, permsync_server::time::now()));
}

#[tokio::test]
async fn one_catch_up_applies_more_changes_than_one_changelog_read_returns() {
    let s = TestServer::new().await;
    s.user("alice").await;
    let users = [permsync_core::UserId::parse("alice").unwrap()];
    // Written straight to the store, as another process would; 2,500 is more
    // than the tail reads at once.
    for _ in 0..2500 {
        s.store
            .invalidate("test", &users, None, permsync_server::time::now())
            .await
            .unwrap();
    }
    let applied = s.state.catch_up().await.unwrap();
    assert_eq!(applied, s.store.last_seq().await.unwrap());
    assert_eq!(s.revision("alice"), applied);
}
