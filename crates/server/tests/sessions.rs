//! Login sessions through the real router over a real SQLite store: a permsync
//! token counts only while its session is live, refreshes racing in tabs, the
//! bounds on password hashing and on login failures, and what is forgotten.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use common::{assert_problem, db_url, Reply, TestServer};
use futures_util::future::join_all;
use permsync_core::{SessionEnd, UserId};
use permsync_server::{AppState, ServerConfig};
use permsync_store::{NewSession, SqliteStore, Store};
use serde_json::{json, Value};

fn alice() -> UserId {
    UserId::parse("alice").unwrap()
}

/// A token for `sub` in session `sid`, signed with the store's own key, as
/// anyone who read the database file could.
async fn sign_with_stored_key(store: &dyn Store, sub: &str, sid: &str) -> String {
    let keys = permsync_server::ensure_signing_key(store).await.unwrap();
    let tokens =
        permsync_auth::Tokens::new(keys, "permsync".into(), "permsync".into(), Vec::new()).unwrap();
    let iat = permsync_server::time::now().0 / 1000;
    tokens.sign(&permsync_auth::AccessClaims {
        iss: "permsync".into(),
        sub: sub.into(),
        aud: "permsync".into(),
        iat,
        exp: iat + 300,
        jti: permsync_auth::random_token(),
        sid: sid.into(),
        prev: 0,
        perms: None,
    })
}

/// A login request from `ip`, as the connection would give it.
fn login_from(ip: IpAddr, username: &str, password: &str) -> Request<Body> {
    let mut req = Request::post("/v1/auth/login")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"username": username, "password": password}).to_string(),
        ))
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(ip, 40_000)));
    req
}

fn address(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, (i / 250) as u8, (i % 250 + 1) as u8))
}

async fn login(s: &TestServer, user: &str) -> Reply {
    let r = s
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"username": user, "password": format!("{user}-password")})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r
}

async fn refresh(s: &TestServer, token: &str) -> Reply {
    s.call(
        Method::POST,
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": token})),
    )
    .await
}

fn field(r: &Reply, name: &str) -> String {
    r.body[name].as_str().unwrap().to_string()
}

async fn sessions_ended_changes(store: &dyn Store) -> usize {
    store
        .changes_after(0, 10_000)
        .await
        .unwrap()
        .iter()
        .filter(|c| c.kind.action() == "sessions_ended")
        .count()
}

#[tokio::test]
async fn a_token_signed_with_the_stored_key_for_no_session_is_refused() {
    let s = TestServer::seeded().await;
    let forged = sign_with_stored_key(s.store.as_ref(), "admin", "anything").await;
    let grant = s
        .post(
            "/v1/users/bob/grants",
            &forged,
            json!({"permission": "permsync:admin"}),
        )
        .await;
    assert_problem(&grant, 401, "invalid_token");
    assert!(grant
        .header("www-authenticate")
        .is_some_and(|v| v.contains("invalid_token")));
    assert_problem(
        &s.get("/v1/me/permissions", &forged).await,
        401,
        "invalid_token",
    );
    assert!(!s
        .state
        .index()
        .can("bob", "permsync:admin", None, permsync_server::time::now()));
    // A real session's token of another user does not lend its session either.
    let alice_sid = sign_with_stored_key(s.store.as_ref(), "admin", "test-session-alice").await;
    assert_problem(
        &s.get("/v1/me/permissions", &alice_sid).await,
        401,
        "invalid_token",
    );
    // The admin's own session still works.
    let ok = s
        .post(
            "/v1/users/bob/grants",
            &s.token("admin"),
            json!({"permission": "doc:read"}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text);
}

#[tokio::test]
async fn a_session_opened_by_another_process_counts_until_it_is_revoked() {
    let s = TestServer::seeded().await;
    // As `permsync token` does, from its own process.
    let cli = s.other_writer().await;
    let now = permsync_server::time::now();
    cli.create_session(
        NewSession {
            id: "from-the-cli".into(),
            user: alice(),
            refresh_hash: permsync_auth::sha256_hex("never shown"),
            refresh_expires_at: now.plus_millis(300_000),
        },
        now,
    )
    .await
    .unwrap();
    let token = sign_with_stored_key(cli.as_ref(), "alice", "from-the-cli").await;
    for _ in 0..3 {
        let r = s.get("/v1/me/permissions", &token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    cli.revoke_sessions("cli", &alice(), permsync_server::time::now())
        .await
        .unwrap();
    s.state.catch_up().await.unwrap();
    assert_problem(
        &s.get("/v1/me/permissions", &token).await,
        401,
        "invalid_token",
    );
    assert_problem(
        &s.get("/v1/me/permissions", &s.token("alice")).await,
        401,
        "invalid_token",
    );
    assert_eq!(
        s.get("/v1/me/permissions", &s.token("bob")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn checks_of_a_known_session_read_nothing_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(SqliteStore::open(&db_url(&dir)).await.unwrap());
    let store: Arc<dyn Store> = sqlite.clone();
    let state = AppState::open(store.clone(), ServerConfig::default())
        .await
        .unwrap();
    let s = TestServer { state, store, dir };
    s.seed().await;
    let logged_in = login(&s, "alice").await;
    let (from_login, from_helper) = (field(&logged_in, "access_token"), s.token("bob"));
    let unknown = sign_with_stored_key(s.store.as_ref(), "alice", "never-opened").await;
    let check = json!({"user": "alice", "permission": "doc:edit"});
    // The helper's session was opened in the store only: its first use looks it up.
    assert_eq!(
        s.post(
            "/v1/check",
            &from_helper,
            json!({"user": "bob", "permission": "x"})
        )
        .await
        .status,
        StatusCode::OK
    );

    // From now on the store answers nothing.
    sqlite.close().await;
    for _ in 0..50 {
        let r = s.post("/v1/check", &from_login, check.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let r = s
            .post(
                "/v1/check",
                &from_helper,
                json!({"user": "bob", "permission": "x"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    // A session memory does not know is asked of the store, which is gone.
    let r = s.post("/v1/check", &unknown, check.clone()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
}

#[tokio::test]
async fn refreshes_racing_in_tabs_all_get_the_same_new_pair() {
    const TABS: usize = 5;
    let s = TestServer::seeded().await;
    let first = login(&s, "alice").await;
    let shared = field(&first, "refresh_token");
    let answers = join_all((0..TABS).map(|_| refresh(&s, &shared))).await;
    for r in &answers {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let successor = field(&answers[0], "refresh_token");
    assert_ne!(successor, shared);
    for r in &answers {
        assert_eq!(
            field(r, "refresh_token"),
            successor,
            "one successor for all"
        );
        let access = field(r, "access_token");
        assert_eq!(
            s.get("/v1/me/permissions", &access).await.status,
            StatusCode::OK,
            "every tab's access token works"
        );
    }
    assert_eq!(
        s.get("/v1/me/permissions", &field(&first, "access_token"))
            .await
            .status,
        StatusCode::OK,
        "the session was not revoked"
    );
    assert_eq!(sessions_ended_changes(s.store.as_ref()).await, 0);
    // Another tab, a moment later, still within the window: the same answer.
    assert_eq!(
        field(&refresh(&s, &shared).await, "refresh_token"),
        successor
    );
    // And the successor rotates as usual.
    let next = refresh(&s, &successor).await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.text);
    // Now the first token is an older one: presenting it is reuse.
    assert_problem(&refresh(&s, &shared).await, 401, "invalid_token");
    assert_problem(
        &s.get("/v1/me/permissions", &field(&next, "access_token"))
            .await,
        401,
        "invalid_token",
    );
    assert_eq!(sessions_ended_changes(s.store.as_ref()).await, 1);
}

#[tokio::test]
async fn a_rotated_token_after_the_grace_window_revokes_the_session() {
    let s = TestServer::with_config(ServerConfig {
        refresh_reuse_grace: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    s.seed().await;
    let first = login(&s, "alice").await;
    let rotated = refresh(&s, &field(&first, "refresh_token")).await;
    assert_eq!(rotated.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_problem(
        &refresh(&s, &field(&first, "refresh_token")).await,
        401,
        "invalid_token",
    );
    assert_problem(
        &s.get("/v1/me/permissions", &field(&rotated, "access_token"))
            .await,
        401,
        "invalid_token",
    );
    assert_problem(
        &refresh(&s, &field(&rotated, "refresh_token")).await,
        401,
        "invalid_token",
    );
}

#[tokio::test]
async fn login_and_refresh_answers_are_not_cached() {
    let s = TestServer::seeded().await;
    let logged_in = login(&s, "alice").await;
    let refreshed = refresh(&s, &field(&logged_in, "refresh_token")).await;
    assert_eq!(refreshed.status, StatusCode::OK);
    for r in [&logged_in, &refreshed] {
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.header("pragma"), Some("no-cache"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_passwords_cannot_exceed_the_failure_limit() {
    const GUESSES: usize = 100;
    let s = TestServer::seeded().await;
    let answers = join_all((0..GUESSES).map(|i| {
        let s = &s;
        async move { s.send(login_from(address(i % 5), "bob", "guess")).await }
    }))
    .await;
    let checked = answers.iter().filter(|r| r.status == 401).count();
    let limited = answers.iter().filter(|r| r.status == 429).count();
    assert_eq!(checked + limited, GUESSES, "only 401s and 429s");
    assert!(
        (1..=10).contains(&checked),
        "{checked} passwords were checked; the limit is 10"
    );
    for r in answers.iter().filter(|r| r.status == 429) {
        assert_problem(r, 429, "rate_limited");
        assert!(r.header("retry-after").is_some());
    }
}

const LOGINS: usize = 12;

/// `LOGINS` logins of unknown users at once, each from an address of its own.
async fn login_storm(s: &TestServer) -> Vec<Reply> {
    join_all((0..LOGINS).map(|i| {
        let req = login_from(address(i), &format!("nobody{i}"), "x");
        async move { s.send(req).await }
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_hashing_is_bounded_and_the_rest_wait_then_give_up() {
    // Two slots and no waiting: the logins beyond what two slots hold are refused.
    let s = TestServer::with_config(ServerConfig {
        max_concurrent_hashes: 2,
        hash_queue_timeout: Duration::ZERO,
        ..ServerConfig::default()
    })
    .await;
    let answers = login_storm(&s).await;
    let checked = answers.iter().filter(|r| r.status == 401).count();
    let busy: Vec<&Reply> = answers.iter().filter(|r| r.status == 503).collect();
    assert_eq!(checked + busy.len(), LOGINS);
    assert!(checked >= 2 && !busy.is_empty(), "{checked} checked");
    for r in busy {
        assert_problem(r, 503, "unavailable");
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    // A refused login was never checked, so it counts as no failure.
    let right = s.send(login_from(address(0), "nobody0", "x")).await;
    assert_eq!(right.status, StatusCode::UNAUTHORIZED);

    // With time to wait, every one is checked in turn.
    let s = TestServer::with_config(ServerConfig {
        max_concurrent_hashes: 2,
        hash_queue_timeout: Duration::from_secs(60),
        ..ServerConfig::default()
    })
    .await;
    let answers = login_storm(&s).await;
    assert!(answers.iter().all(|r| r.status == 401));
}

#[tokio::test]
async fn user_creation_hashes_in_the_same_bounded_slots() {
    let s = TestServer::with_config(ServerConfig {
        max_concurrent_hashes: 1,
        hash_queue_timeout: Duration::ZERO,
        ..ServerConfig::default()
    })
    .await;
    s.seed().await;
    let admin = s.token("admin");
    let create = |i: usize| {
        let admin = admin.clone();
        let s = &s;
        async move {
            s.post(
                "/v1/users",
                &admin,
                json!({"user": format!("new{i}"), "password": "pw"}),
            )
            .await
        }
    };
    let answers = join_all((0..6).map(create)).await;
    let created = answers.iter().filter(|r| r.status == 201).count();
    let busy = answers.iter().filter(|r| r.status == 503).count();
    assert_eq!(created + busy, 6);
    assert!(
        created >= 1 && busy >= 1,
        "{created} created, {busy} refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_sessions_are_pruned_by_the_background_loop() {
    let s = TestServer::seeded().await;
    let long_ago = permsync_server::time::now().plus_millis(-3_600_000);
    s.store
        .create_session(
            NewSession {
                id: "old".into(),
                user: alice(),
                refresh_hash: permsync_auth::sha256_hex("old-refresh"),
                refresh_expires_at: long_ago.plus_millis(600_000),
            },
            long_ago,
        )
        .await
        .unwrap();
    s.store
        .end_session_by_refresh(
            &permsync_auth::sha256_hex("old-refresh"),
            SessionEnd::LoggedOut,
            long_ago.plus_millis(1),
        )
        .await
        .unwrap();
    let live = login(&s, "alice").await;
    assert_eq!(s.store.ended_sessions(long_ago).await.unwrap(), vec!["old"]);

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let background = tokio::spawn(s.state.clone().run_background(stopped));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !s.store.ended_sessions(long_ago).await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never pruned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send_replace(true);
    background.await.unwrap();
    // The live session is untouched.
    let r = s
        .get("/v1/me/permissions", &field(&live, "access_token"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let _: Value = r.body;
}
