//! Bad input of every kind gets a 4xx problem+json naming the problem: never a
//! 5xx, a panic, a partial write or a leak of internals.

mod common;

use axum::body::Body;
use axum::http::{Method, Request};
use common::{assert_problem, TestServer};
use proptest::prelude::*;
use serde_json::{json, Value};

enum Auth {
    None,
    Admin,
    Alice,
    Raw(String),
}

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    auth: Auth,
    body: Option<String>,
    status: u16,
    code: &'static str,
}

fn case(
    name: &'static str,
    method: Method,
    path: &str,
    auth: Auth,
    body: Option<Value>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        method,
        path: path.to_string(),
        auth,
        body: body.map(|b| b.to_string()),
        status,
        code,
    }
}

fn raw(
    name: &'static str,
    method: Method,
    path: &str,
    body: &str,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        method,
        path: path.to_string(),
        auth: Auth::Admin,
        body: Some(body.to_string()),
        status,
        code,
    }
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn hostile_tokens(valid: &str) -> Vec<(&'static str, String)> {
    let now = permsync_server::time::now().0 / 1000;
    let claims = json!({"iss": "permsync", "aud": "permsync", "sub": "admin", "iat": now, "exp": now + 300, "sid": "s", "prev": 0});
    let parts: Vec<&str> = valid.split('.').collect();
    let mut flipped = parts[2].to_string();
    let last = if flipped.ends_with('A') { 'B' } else { 'A' };
    flipped.pop();
    flipped.push(last);
    vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&claims)
            ),
        ),
        (
            "alg None",
            format!("{}.{}.", b64(&json!({"alg": "None"})), b64(&claims)),
        ),
        ("truncated", valid[..valid.len() / 2].to_string()),
        ("two segments", format!("{}.{}", parts[0], parts[1])),
        ("garbage", "not-a-token".to_string()),
        ("bad base64", "%%%.%%%.%%%".to_string()),
        (
            "bad signature",
            format!("{}.{}.{}", parts[0], parts[1], flipped),
        ),
        (
            "forged payload",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(
                    &json!({"iss": "permsync", "aud": "permsync", "sub": "admin", "exp": now + 300})
                ),
                parts[2]
            ),
        ),
        (
            "oversized",
            format!("{}.{}.{}", parts[0], "A".repeat(9 * 1024), parts[2]),
        ),
        (
            "unknown kid",
            format!(
                "{}.{}.{}",
                b64(&json!({"alg": "EdDSA", "kid": "nope"})),
                parts[1],
                parts[2]
            ),
        ),
        ("hs256 confusion", {
            let key = jsonwebtoken::EncodingKey::from_secret(b"any-secret");
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            h.kid = jsonwebtoken::decode_header(valid).unwrap().kid;
            jsonwebtoken::encode(&h, &claims, &key).unwrap()
        }),
        (
            "jwk header",
            format!(
                "{}.{}.{}",
                b64(&json!({"alg": "EdDSA", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}})),
                parts[1],
                parts[2]
            ),
        ),
        (
            "jku header",
            format!(
                "{}.{}.{}",
                b64(&json!({"alg": "EdDSA", "jku": "http://127.0.0.1:1/keys"})),
                parts[1],
                parts[2]
            ),
        ),
    ]
}

#[tokio::test]
async fn table_of_bad_requests() {
    let s = TestServer::seeded().await;
    let long = "a".repeat(200);
    let mut cases = vec![
        case(
            "no token",
            Method::GET,
            "/v1/me/permissions",
            Auth::None,
            None,
            401,
            "invalid_token",
        ),
        case(
            "basic auth",
            Method::GET,
            "/v1/me/permissions",
            Auth::Raw("Basic YTpi".into()),
            None,
            401,
            "invalid_token",
        ),
        case(
            "empty bearer",
            Method::GET,
            "/v1/me/permissions",
            Auth::Raw("Bearer ".into()),
            None,
            401,
            "invalid_token",
        ),
        case(
            "unknown path",
            Method::GET,
            "/v1/nope",
            Auth::Admin,
            None,
            404,
            "not_found",
        ),
        case(
            "wrong method",
            Method::PATCH,
            "/v1/check",
            Auth::Admin,
            None,
            405,
            "invalid_request",
        ),
        case(
            "wrong method on users",
            Method::PUT,
            "/v1/users",
            Auth::Admin,
            None,
            405,
            "invalid_request",
        ),
        raw(
            "malformed json",
            Method::POST,
            "/v1/check",
            "{",
            400,
            "invalid_request",
        ),
        raw(
            "json array",
            Method::POST,
            "/v1/check",
            "[]",
            400,
            "invalid_request",
        ),
        raw(
            "wrong type",
            Method::POST,
            "/v1/check",
            r#"{"user": 5, "permission": "a"}"#,
            400,
            "invalid_request",
        ),
        raw(
            "missing field",
            Method::POST,
            "/v1/check",
            r#"{"user": "alice"}"#,
            400,
            "invalid_request",
        ),
        raw(
            "unknown field",
            Method::POST,
            "/v1/check",
            r#"{"user": "alice", "permission": "a", "x": 1}"#,
            400,
            "invalid_request",
        ),
        raw(
            "bad user",
            Method::POST,
            "/v1/check",
            r#"{"user": "al ice", "permission": "a"}"#,
            400,
            "invalid_request",
        ),
        raw(
            "bad permission",
            Method::POST,
            "/v1/check",
            r#"{"user": "alice", "permission": "A:B"}"#,
            400,
            "invalid_request",
        ),
        raw(
            "bad wildcard",
            Method::POST,
            "/v1/check",
            r#"{"user": "alice", "permission": "a:*:b"}"#,
            400,
            "invalid_request",
        ),
        raw(
            "bad scope",
            Method::POST,
            "/v1/check",
            r#"{"user": "alice", "permission": "a", "scope": "org"}"#,
            400,
            "invalid_request",
        ),
        raw(
            "deep scope",
            Method::POST,
            "/v1/check",
            &json!({"user": "alice", "permission": "a", "scope": "a/1/".repeat(9) + "a/1"})
                .to_string(),
            400,
            "invalid_request",
        ),
        raw(
            "long user",
            Method::POST,
            "/v1/users",
            &json!({"user": long}).to_string(),
            400,
            "invalid_request",
        ),
        raw(
            "nul in user",
            Method::POST,
            "/v1/users",
            r#"{"user": "a\u0000b"}"#,
            400,
            "invalid_request",
        ),
        raw(
            "empty password",
            Method::POST,
            "/v1/users",
            r#"{"user": "zed", "password": ""}"#,
            400,
            "invalid_request",
        ),
        raw(
            "grant unknown user",
            Method::POST,
            "/v1/users/ghost/grants",
            r#"{"permission": "a"}"#,
            404,
            "not_found",
        ),
        raw(
            "grant bad expiry",
            Method::POST,
            "/v1/users/bob/grants",
            r#"{"permission": "a", "expires_at": "tomorrow"}"#,
            400,
            "invalid_request",
        ),
        raw(
            "grant past expiry",
            Method::POST,
            "/v1/users/bob/grants",
            r#"{"permission": "a", "expires_at": "2001-01-01T00:00:00Z"}"#,
            400,
            "invalid_request",
        ),
        raw(
            "grant bad scope",
            Method::POST,
            "/v1/users/bob/grants",
            r#"{"permission": "a", "scope": "x/"}"#,
            400,
            "invalid_request",
        ),
        raw(
            "bind unknown role",
            Method::POST,
            "/v1/users/bob/roles",
            r#"{"role": "ghost"}"#,
            404,
            "not_found",
        ),
        raw(
            "bind bad role",
            Method::POST,
            "/v1/users/bob/roles",
            r#"{"role": "Ghost"}"#,
            400,
            "invalid_request",
        ),
        case(
            "delete unknown grant",
            Method::DELETE,
            "/v1/users/bob/grants/999999",
            Auth::Admin,
            None,
            404,
            "not_found",
        ),
        case(
            "grant id not a number",
            Method::DELETE,
            "/v1/users/bob/grants/abc",
            Auth::Admin,
            None,
            400,
            "invalid_request",
        ),
        case(
            "grant id negative",
            Method::DELETE,
            "/v1/users/bob/grants/-1",
            Auth::Admin,
            None,
            400,
            "invalid_request",
        ),
        case(
            "delete unknown binding",
            Method::DELETE,
            "/v1/users/bob/roles/5",
            Auth::Admin,
            None,
            404,
            "not_found",
        ),
        case(
            "unknown user detail",
            Method::GET,
            "/v1/users/ghost",
            Auth::Admin,
            None,
            404,
            "not_found",
        ),
        case(
            "bad user in path",
            Method::GET,
            "/v1/users/a%20b",
            Auth::Admin,
            None,
            400,
            "invalid_request",
        ),
        case(
            "limit zero",
            Method::GET,
            "/v1/users?limit=0",
            Auth::Admin,
            None,
            400,
            "invalid_request",
        ),
        case(
            "limit too big",
            Method::GET,
            "/v1/users?limit=1001",
            Auth::Admin,
            None,
            400,
            "invalid_request",
        ),
        case(
            "limit not a number",
            Method::GET,
            "/v1/changes?limit=many",
            Auth::Admin,
            None,
            400,
            "invalid_request",
        ),
        case(
            "unknown query key",
            Method::GET,
            "/v1/changes?fter=1",
            Auth::Admin,
            None,
            400,
            "invalid_request",
        ),
        raw(
            "role bad name",
            Method::PUT,
            "/v1/roles/Bad",
            r#"{"permissions": []}"#,
            400,
            "invalid_request",
        ),
        raw(
            "role bad permission",
            Method::PUT,
            "/v1/roles/r",
            r#"{"permissions": ["ok", "NOT OK"]}"#,
            400,
            "invalid_request",
        ),
        raw(
            "role too many",
            Method::PUT,
            "/v1/roles/r",
            &json!({"permissions": (0..1001).map(|i| format!("p{i}")).collect::<Vec<_>>()})
                .to_string(),
            400,
            "invalid_request",
        ),
        raw(
            "role long description",
            Method::PUT,
            "/v1/roles/r",
            &json!({"permissions": [], "description": "d".repeat(1025)}).to_string(),
            400,
            "invalid_request",
        ),
        case(
            "delete unknown role",
            Method::DELETE,
            "/v1/roles/ghost",
            Auth::Admin,
            None,
            404,
            "not_found",
        ),
        raw(
            "invalidate nobody",
            Method::POST,
            "/v1/invalidate",
            r#"{"users": []}"#,
            400,
            "invalid_request",
        ),
        raw(
            "invalidate bad user",
            Method::POST,
            "/v1/invalidate",
            r#"{"users": ["ok", "n o"]}"#,
            400,
            "invalid_request",
        ),
        raw(
            "invalidate too many",
            Method::POST,
            "/v1/invalidate",
            &json!({"users": (0..10_001).map(|i| format!("u{i}")).collect::<Vec<_>>()}).to_string(),
            413,
            "payload_too_large",
        ),
        raw(
            "oversized body",
            Method::POST,
            "/v1/check",
            &format!(r#"{{"user": "{}", "permission": "a"}}"#, "a".repeat(70_000)),
            413,
            "payload_too_large",
        ),
        case(
            "admin endpoint as user",
            Method::GET,
            "/v1/users",
            Auth::Alice,
            None,
            403,
            "forbidden",
        ),
        raw(
            "login missing password",
            Method::POST,
            "/v1/auth/login",
            r#"{"username": "alice"}"#,
            400,
            "invalid_request",
        ),
        raw(
            "refresh garbage",
            Method::POST,
            "/v1/auth/refresh",
            r#"{"refresh_token": "nope"}"#,
            401,
            "invalid_token",
        ),
    ];
    let admin = s.token("admin");
    for (name, token) in hostile_tokens(&admin) {
        cases.push(case(
            name,
            Method::GET,
            "/v1/me/permissions",
            Auth::Raw(format!("Bearer {token}")),
            None,
            401,
            "invalid_token",
        ));
    }
    let alice = s.token("alice");
    let before = s.state.index().applied_seq();
    for c in cases {
        let mut req = Request::builder().method(c.method.clone()).uri(&c.path);
        let auth = match &c.auth {
            Auth::None => None,
            Auth::Admin => Some(format!("Bearer {admin}")),
            Auth::Alice => Some(format!("Bearer {alice}")),
            Auth::Raw(v) => Some(v.clone()),
        };
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let req = match c.body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b))
                .unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let r = s.send(req).await;
        println!(
            "{}: {} {}",
            c.name,
            r.status,
            r.text.chars().take(160).collect::<String>()
        );
        assert_problem(&r, c.status, c.code);
        for leak in [
            "sqlx", "SQLITE", "sqlite", "/src/", "panicked", "SELECT", "INSERT",
        ] {
            assert!(
                !r.text.contains(leak),
                "{}: leaks {leak}: {}",
                c.name,
                r.text
            );
        }
    }
    assert_eq!(
        s.state.index().applied_seq(),
        before,
        "no bad request wrote anything"
    );
}

#[tokio::test]
async fn missing_content_type_is_a_clear_4xx() {
    let s = TestServer::seeded().await;
    let req = Request::post("/v1/check")
        .header("authorization", format!("Bearer {}", s.token("alice")))
        .body(Body::from(r#"{"user":"alice","permission":"a"}"#))
        .unwrap();
    let r = s.send(req).await;
    assert_problem(&r, 415, "invalid_request");
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "\\PC{0,40}".prop_map(Value::String),
        prop_oneof![
            Just("alice"),
            Just("doc:edit"),
            Just("org/acme"),
            Just("*"),
            Just("a:*")
        ]
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("user".to_string()),
                    Just("permission".to_string()),
                    Just("scope".to_string()),
                    Just("expires_at".to_string()),
                    Just("role".to_string()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Whatever the body, the answer is never a 5xx, and errors are problem+json.
    #[test]
    fn random_bodies_never_yield_5xx(body in any_json(), endpoint in 0usize..6) {
        let (rt, s) = shared();
        rt.block_on(async {
            let (method, path) = [
                (Method::POST, "/v1/check"),
                (Method::POST, "/v1/check/batch"),
                (Method::POST, "/v1/users/bob/grants"),
                (Method::POST, "/v1/users/bob/roles"),
                (Method::PUT, "/v1/roles/fuzz"),
                (Method::POST, "/v1/invalidate"),
            ][endpoint].clone();
            let r = s.call(method, path, Some(&s.token("admin")), Some(body)).await;
            prop_assert!(r.status.as_u16() < 500, "{} {}", r.status, r.text);
            if !r.status.is_success() {
                prop_assert_eq!(r.header("content-type"), Some("application/problem+json"));
            }
            Ok(())
        })?;
    }

    /// Random path segments never yield a 5xx.
    #[test]
    fn random_paths_never_yield_5xx(user in "[ -~]{0,140}", id in "[ -~]{0,24}") {
        let (rt, s) = shared();
        rt.block_on(async {
            let enc = |x: &str| x.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
            for path in [format!("/v1/users/{}", enc(&user)), format!("/v1/users/{}/grants/{}", enc(&user), enc(&id))] {
                for m in [Method::GET, Method::DELETE] {
                    let r = s.call(m, &path, Some(&s.token("admin")), None).await;
                    prop_assert!(r.status.as_u16() < 500, "{} {}", r.status, r.text);
                }
            }
            Ok(())
        })?;
    }
}

/// One seeded server and the runtime it lives on, shared by all proptest cases.
fn shared() -> &'static (tokio::runtime::Runtime, TestServer) {
    static SHARED: std::sync::OnceLock<(tokio::runtime::Runtime, TestServer)> =
        std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(TestServer::seeded());
        (rt, server)
    })
}
