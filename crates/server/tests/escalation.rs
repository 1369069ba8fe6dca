//! The escalation matrix: every administrative endpoint of PROTOCOL §4 against every
//! kind of caller, through the real router, each cell asserting the exact status.
//! The expected statuses follow §4 "Delegation" and docs/protocol-notes.md: an admin
//! does everything; a delegate changes other users' grants and bindings only inside
//! its scope, only with what it holds there and never a `permsync:*` permission, and
//! may read users and roles (to find the ids it handed out); a user reads their own
//! record and tabs and ends their own sessions; anything else is 403; no token or a
//! token of an ended session is 401.
//!
//! Every cell acts on holdings made for it alone (a fresh target user, grant,
//! binding or role), so cells do not depend on one another's outcome.

mod common;

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{Method, Request};
use common::TestServer;
use permsync_core::{Permission, RoleName, Scope, UserId};
use permsync_store::{Added, NewBinding, NewGrant};
use serde_json::{json, Value};
use tower::ServiceExt;

#[derive(Clone, Copy, Debug)]
enum Endpoint {
    CreateUser,
    ListUsers,
    GetUser,
    DeleteUser,
    AddGrant,
    RemoveGrant,
    AddBinding,
    RemoveBinding,
    RevokeSessions,
    ListRoles,
    PutRole,
    DeleteRole,
    Invalidate,
    ListChanges,
    ChangeStream,
    Tabs,
}

/// Who calls, and on whom. `carol` holds `permsync:delegate` and `doc:edit` at
/// `org/acme`; `alice` holds nothing.
#[derive(Clone, Copy, Debug)]
enum Caller {
    /// `admin` (`permsync:admin`), on another user.
    Admin,
    /// carol on another user, with `doc:edit` at `org/acme/project/7`: inside her
    /// scope, a permission she holds there.
    DelegateInScope,
    /// carol on another user, with `doc:edit` at `org/other`, outside her scope.
    DelegateOutOfScope,
    /// carol on another user, with `permsync:delegate` at `org/acme`: she holds it
    /// there, but no delegate hands out a `permsync:*` permission.
    DelegatePermsync,
    /// carol on herself, inside her scope: nobody but an admin changes their own.
    DelegateOnSelf,
    /// alice on herself.
    UserOnSelf,
    /// alice on another user.
    UserOnOther,
    /// No Authorization header, on another user.
    NoToken,
    /// An access token of admin's session after its logout, on another user.
    EndedSession,
}

const CALLERS: [Caller; 9] = [
    Caller::Admin,
    Caller::DelegateInScope,
    Caller::DelegateOutOfScope,
    Caller::DelegatePermsync,
    Caller::DelegateOnSelf,
    Caller::UserOnSelf,
    Caller::UserOnOther,
    Caller::NoToken,
    Caller::EndedSession,
];

/// The expected status of each endpoint for each caller, in the order of [`CALLERS`].
#[rustfmt::skip]
const MATRIX: [(Endpoint, [u16; 9]); 16] = {
    use Endpoint::*;
    [
        //                admin  d-in d-out d-ps d-self self other none ended
        (CreateUser,     [201,  403,  403, 403,  403,  403,  403, 401,  401]),
        (ListUsers,      [200,  200,  200, 200,  200,  403,  403, 401,  401]),
        (GetUser,        [200,  200,  200, 200,  200,  200,  403, 401,  401]),
        (DeleteUser,     [200,  403,  403, 403,  403,  403,  403, 401,  401]),
        (AddGrant,       [201,  201,  403, 403,  403,  403,  403, 401,  401]),
        (RemoveGrant,    [200,  200,  403, 403,  403,  403,  403, 401,  401]),
        (AddBinding,     [201,  201,  403, 403,  403,  403,  403, 401,  401]),
        (RemoveBinding,  [200,  200,  403, 403,  403,  403,  403, 401,  401]),
        (RevokeSessions, [200,  403,  403, 403,  200,  200,  403, 401,  401]),
        (ListRoles,      [200,  200,  200, 200,  200,  403,  403, 401,  401]),
        (PutRole,        [201,  403,  403, 403,  403,  403,  403, 401,  401]),
        (DeleteRole,     [200,  403,  403, 403,  403,  403,  403, 401,  401]),
        (Invalidate,     [200,  403,  403, 403,  403,  403,  403, 401,  401]),
        (ListChanges,    [200,  403,  403, 403,  403,  403,  403, 401,  401]),
        (ChangeStream,   [200,  403,  403, 403,  403,  403,  403, 401,  401]),
        (Tabs,           [200,  403,  403, 403,  200,  200,  403, 401,  401]),
    ]
};

/// Where the permission or role of a cell's grant or binding sits.
#[derive(Clone, Copy)]
enum Reach {
    Inside,
    Outside,
    Permsync,
}

impl Caller {
    /// The user whose token this caller presents, if any.
    fn user(self) -> Option<&'static str> {
        match self {
            Caller::Admin | Caller::EndedSession => Some("admin"),
            Caller::DelegateInScope
            | Caller::DelegateOutOfScope
            | Caller::DelegatePermsync
            | Caller::DelegateOnSelf => Some("carol"),
            Caller::UserOnSelf | Caller::UserOnOther => Some("alice"),
            Caller::NoToken => None,
        }
    }

    fn on_self(self) -> bool {
        matches!(self, Caller::DelegateOnSelf | Caller::UserOnSelf)
    }

    fn reach(self) -> Reach {
        match self {
            Caller::DelegateOutOfScope => Reach::Outside,
            Caller::DelegatePermsync => Reach::Permsync,
            _ => Reach::Inside,
        }
    }
}

impl Reach {
    fn grant(self) -> (&'static str, &'static str) {
        match self {
            Reach::Inside => ("doc:edit", "org/acme/project/7"),
            Reach::Outside => ("doc:edit", "org/other"),
            Reach::Permsync => ("permsync:delegate", "org/acme"),
        }
    }

    fn binding(self) -> (&'static str, &'static str) {
        match self {
            // `docs` holds doc:edit only; `delegates` holds permsync:delegate only.
            Reach::Inside => ("docs", "org/acme/project/7"),
            Reach::Outside => ("docs", "org/other"),
            Reach::Permsync => ("delegates", "org/acme"),
        }
    }
}

async fn create_user(s: &TestServer, name: &str) {
    s.store
        .create_user(
            "test",
            &UserId::parse(name).unwrap(),
            None,
            permsync_server::time::now(),
        )
        .await
        .unwrap();
    s.state.catch_up().await.unwrap();
}

/// The id of a grant of `target`, made for this cell.
async fn grant_id(s: &TestServer, target: &str, (permission, scope): (&str, &str)) -> u64 {
    let added = s
        .store
        .add_grant(
            "test",
            NewGrant {
                user: UserId::parse(target).unwrap(),
                permission: Permission::parse(permission).unwrap(),
                scope: Some(Scope::parse(scope).unwrap()),
                expires_at: None,
            },
            permsync_server::time::now(),
        )
        .await
        .unwrap();
    s.state.catch_up().await.unwrap();
    match added {
        Added::Created(g, _) | Added::Existing(g) => g.id,
    }
}

/// The id of a binding of `target`, made for this cell.
async fn binding_id(s: &TestServer, target: &str, (role, scope): (&str, &str)) -> u64 {
    let added = s
        .store
        .add_binding(
            "test",
            NewBinding {
                user: UserId::parse(target).unwrap(),
                role: RoleName::parse(role).unwrap(),
                scope: Some(Scope::parse(scope).unwrap()),
                expires_at: None,
            },
            permsync_server::time::now(),
        )
        .await
        .unwrap();
    s.state.catch_up().await.unwrap();
    match added {
        Added::Created(b, _) | Added::Existing(b) => b.id,
    }
}

/// The request of `endpoint` for cell number `n`, acting on `target`, after making
/// what it acts on.
async fn request_for(
    s: &TestServer,
    endpoint: Endpoint,
    caller: Caller,
    target: &str,
    n: usize,
) -> (Method, String, Option<Value>) {
    use Endpoint::*;
    let reach = caller.reach();
    match endpoint {
        CreateUser => (
            Method::POST,
            "/v1/users".into(),
            Some(json!({"user": format!("new{n}")})),
        ),
        ListUsers => (Method::GET, "/v1/users".into(), None),
        GetUser => (Method::GET, format!("/v1/users/{target}"), None),
        DeleteUser => (Method::DELETE, format!("/v1/users/{target}"), None),
        AddGrant => {
            let (permission, scope) = reach.grant();
            (
                Method::POST,
                format!("/v1/users/{target}/grants"),
                Some(json!({"permission": permission, "scope": scope})),
            )
        }
        RemoveGrant => {
            let id = grant_id(s, target, reach.grant()).await;
            (
                Method::DELETE,
                format!("/v1/users/{target}/grants/{id}"),
                None,
            )
        }
        AddBinding => {
            let (role, scope) = reach.binding();
            (
                Method::POST,
                format!("/v1/users/{target}/roles"),
                Some(json!({"role": role, "scope": scope})),
            )
        }
        RemoveBinding => {
            let id = binding_id(s, target, reach.binding()).await;
            (
                Method::DELETE,
                format!("/v1/users/{target}/roles/{id}"),
                None,
            )
        }
        RevokeSessions => (
            Method::POST,
            format!("/v1/users/{target}/sessions/revoke"),
            None,
        ),
        ListRoles => (Method::GET, "/v1/roles".into(), None),
        PutRole => (
            Method::PUT,
            format!("/v1/roles/new{n}"),
            Some(json!({"permissions": ["doc:edit"]})),
        ),
        DeleteRole => {
            s.role(&format!("old{n}"), &["doc:edit"]).await;
            (Method::DELETE, format!("/v1/roles/old{n}"), None)
        }
        Invalidate => (
            Method::POST,
            "/v1/invalidate".into(),
            Some(json!({"users": [target]})),
        ),
        ListChanges => (Method::GET, "/v1/changes".into(), None),
        ChangeStream => (Method::GET, "/v1/changes/stream".into(), None),
        Tabs => (Method::GET, format!("/v1/users/{target}/tabs"), None),
    }
}

/// The status and (unless it is an event stream, which never ends) the body.
async fn send(
    s: &TestServer,
    (method, path, body): (Method, String, Option<Value>),
    token: Option<&str>,
) -> (u16, String) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let res = permsync_server::app(s.state.clone())
        .oneshot(req)
        .await
        .unwrap();
    let status = res.status().as_u16();
    let streaming = res
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streaming {
        return (status, "(an event stream)".into());
    }
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Logs in with the seeded password: a live session, as a client has one.
async fn login(s: &TestServer, user: &str) -> Value {
    let (method, path) = (Method::POST, "/v1/auth/login".to_string());
    let body = json!({"username": user, "password": format!("{user}-password")});
    let (status, text) = send(s, (method, path, Some(body)), None).await;
    assert_eq!(status, 200, "login of {user}: {text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn every_admin_endpoint_answers_every_kind_of_caller_exactly() {
    let s = TestServer::seeded().await;
    s.role("docs", &["doc:edit"]).await;
    s.role("delegates", &["permsync:delegate"]).await;

    let ended = {
        let pair = login(&s, "admin").await;
        let logout = (
            Method::POST,
            "/v1/auth/logout".to_string(),
            Some(json!({"refresh_token": pair["refresh_token"]})),
        );
        assert_eq!(send(&s, logout, None).await.0, 204);
        pair["access_token"].as_str().unwrap().to_string()
    };
    // Live tokens by user; a cell that ends a user's sessions drops theirs.
    let mut tokens: HashMap<&str, String> = HashMap::new();

    let mut failures = Vec::new();
    let mut n = 0;
    for (endpoint, expected) in MATRIX {
        for (caller, expected) in CALLERS.into_iter().zip(expected) {
            n += 1;
            let target = match caller {
                Caller::DelegateOnSelf | Caller::UserOnSelf => caller.user().unwrap().to_string(),
                _ => {
                    let fresh = format!("target{n}");
                    create_user(&s, &fresh).await;
                    fresh
                }
            };
            let token = match caller {
                Caller::NoToken => None,
                Caller::EndedSession => Some(ended.clone()),
                _ => {
                    let user = caller.user().unwrap();
                    if !tokens.contains_key(user) {
                        let pair = login(&s, user).await;
                        tokens.insert(user, pair["access_token"].as_str().unwrap().into());
                    }
                    Some(tokens[user].clone())
                }
            };
            let request = request_for(&s, endpoint, caller, &target, n).await;
            let what = format!("{} {}", request.0, request.1);
            let (status, body) = send(&s, request, token.as_deref()).await;
            if status != expected {
                failures.push(format!(
                    "{endpoint:?} ({what}) × {caller:?}: expected {expected}, got {status}: {body}"
                ));
            }
            if matches!(endpoint, Endpoint::RevokeSessions) && status == 200 && caller.on_self() {
                tokens.remove(target.as_str());
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} cells differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
