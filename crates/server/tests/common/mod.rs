//! Shared helpers for the server's integration tests: a server over a temporary
//! SQLite store, tokens for its users, and requests through the real router.

#![allow(dead_code)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use permsync_core::{Permission, RoleName, Scope, UserId};
use permsync_server::{AppState, ServerConfig};
use permsync_store::{NewBinding, NewGrant, SqliteStore, Store};
use serde_json::Value;
use tower::ServiceExt;

pub struct TestServer {
    pub state: AppState,
    pub store: Arc<dyn Store>,
    pub dir: tempfile::TempDir,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn revision_header(&self) -> Option<u64> {
        self.headers
            .get("permissions-revision")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse().ok())
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub fn db_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("permsync.db").display())
}

impl TestServer {
    pub async fn new() -> Self {
        Self::with_config(ServerConfig::default()).await
    }

    pub async fn with_config(config: ServerConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db_url(&dir)).await.unwrap());
        let state = AppState::open(store.clone(), config).await.unwrap();
        TestServer { state, store, dir }
    }

    /// A second store on the same database file, as the command line would open.
    pub async fn other_writer(&self) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(&db_url(&self.dir)).await.unwrap())
    }

    pub async fn user(&self, name: &str) {
        let hash = permsync_auth::hash_password(&format!("{name}-password"));
        self.store
            .create_user(
                "test",
                &UserId::parse(name).unwrap(),
                Some(&hash),
                permsync_server::time::now(),
            )
            .await
            .unwrap();
        self.state.catch_up().await.unwrap();
        self.open_session(name).await;
    }

    /// Opens the session [`TestServer::token`] signs tokens for (`test-session-USER`),
    /// as a login would: permsync's tokens count only while their session is live.
    pub async fn open_session(&self, user: &str) {
        let now = permsync_server::time::now();
        self.store
            .create_session(
                permsync_store::NewSession {
                    id: format!("test-session-{user}"),
                    user: UserId::parse(user).unwrap(),
                    refresh_hash: permsync_auth::sha256_hex(&permsync_auth::random_token()),
                    refresh_expires_at: now.plus_millis(3_600_000),
                },
                now,
            )
            .await
            .unwrap();
    }

    pub async fn grant(&self, user: &str, permission: &str, scope: Option<&str>) {
        let g = NewGrant {
            user: UserId::parse(user).unwrap(),
            permission: Permission::parse(permission).unwrap(),
            scope: scope.map(|s| Scope::parse(s).unwrap()),
            expires_at: None,
        };
        self.store
            .add_grant("test", g, permsync_server::time::now())
            .await
            .unwrap();
        self.state.catch_up().await.unwrap();
    }

    pub async fn role(&self, role: &str, permissions: &[&str]) {
        let ps: Vec<Permission> = permissions
            .iter()
            .map(|p| Permission::parse(p).unwrap())
            .collect();
        self.store
            .set_role(
                "test",
                &RoleName::parse(role).unwrap(),
                &ps,
                "",
                permsync_server::time::now(),
            )
            .await
            .unwrap();
        self.state.catch_up().await.unwrap();
    }

    pub async fn bind(&self, user: &str, role: &str, scope: Option<&str>) {
        let b = NewBinding {
            user: UserId::parse(user).unwrap(),
            role: RoleName::parse(role).unwrap(),
            scope: scope.map(|s| Scope::parse(s).unwrap()),
            expires_at: None,
        };
        self.store
            .add_binding("test", b, permsync_server::time::now())
            .await
            .unwrap();
        self.state.catch_up().await.unwrap();
    }

    /// The standard cast: `admin` (permsync:admin), `alice`, `bob`, and `carol`, a
    /// delegate at org/acme who holds doc:edit there.
    pub async fn seeded() -> Self {
        let s = Self::new().await;
        s.seed().await;
        s
    }

    pub async fn seed(&self) {
        for u in ["admin", "alice", "bob", "carol"] {
            self.user(u).await;
        }
        self.grant("admin", "permsync:admin", None).await;
        self.grant("carol", "permsync:delegate", Some("org/acme"))
            .await;
        self.grant("carol", "doc:edit", Some("org/acme")).await;
        self.role("editor", &["doc:edit", "doc:comment"]).await;
    }

    /// A token of `user`'s test session, opened by [`TestServer::user`] (or
    /// [`TestServer::open_session`]).
    pub fn token(&self, user: &str) -> String {
        self.state.issue_access_token(
            &UserId::parse(user).unwrap(),
            &format!("test-session-{user}"),
        )
    }

    pub fn revision(&self, user: &str) -> u64 {
        self.state.revision(user)
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string()))
                .unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        self.send(req).await
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        let res = permsync_server::app(self.state.clone())
            .oneshot(req)
            .await
            .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 24)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }
    pub async fn put(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }
    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.call(Method::DELETE, path, Some(token), None).await
    }
}

/// Asserts a problem+json answer with this status and code.
#[track_caller]
pub fn assert_problem(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status.as_u16(), status, "status; body: {}", r.text);
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "content type; body: {}",
        r.text
    );
    assert_eq!(r.body["code"], code, "code; body: {}", r.text);
    assert_eq!(r.body["status"], status);
    assert!(
        r.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "detail names the problem: {}",
        r.text
    );
    assert!(r.body["title"].is_string() && r.body["type"].is_string());
}
