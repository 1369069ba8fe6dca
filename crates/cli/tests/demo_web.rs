//! `serve --demo` as a browser and the shop's page see it: the embedded web apps
//! with their content types and single-page fallback, the shop backend's routes
//! outside `/v1`, and none of it without `--demo`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_permsync");

struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(demo: bool) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("p.db").display());
        let mut args = vec!["serve", "--addr", "127.0.0.1:0", "--db", &db];
        if demo {
            args.push("--demo");
        }
        let mut child = Command::new(BIN)
            .args(&args)
            .env_remove("PERMSYNC_ADDR")
            .env_remove("PERMSYNC_CONFIG")
            .env_remove("PERMSYNC_DB")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("server exited before listening")
                .unwrap();
            if let Some(addr) = line.strip_prefix("permsync listening on ") {
                break addr.to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            base,
            _dir: dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get(url: &str) -> (u16, String, String, reqwest::header::HeaderMap) {
    let r = http().get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ct, r.text().await.unwrap(), headers)
}

async fn login(base: &str, user: &str) -> String {
    let r = http()
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"username": user, "password": format!("{user}-password")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn demo_serves_both_apps_their_assets_and_the_api_at_one_address() {
    let s = Server::start(true);
    let (status, ct, shop, headers) = get(&format!("{}/", s.base)).await;
    assert_eq!((status, ct.as_str()), (200, "text/html; charset=utf-8"));
    assert!(shop.contains("Acme Workspace"), "{shop}");
    assert!(headers.get("content-security-policy").is_some());
    assert_eq!(headers.get("cache-control").unwrap(), "no-cache");

    // Routes of the single-page apps get their app's index.html.
    let (status, _, page, _) = get(&format!("{}/projects/7/invoices/new", s.base)).await;
    assert_eq!((status, page == shop), (200, true));
    let (status, ct, admin, _) = get(&format!("{}/admin", s.base)).await;
    assert_eq!((status, ct.as_str()), (200, "text/html; charset=utf-8"));
    assert!(admin.contains("permsync admin console"), "{admin}");
    let (_, _, page, _) = get(&format!("{}/admin/users/alice", s.base)).await;
    assert_eq!(page, admin);

    // Every asset the pages name is served with its type and a long cache life.
    let mut assets = 0;
    for html in [&shop, &admin] {
        for name in html.split('"').filter(|p| p.starts_with("/assets/")) {
            let (status, ct, _, headers) = get(&format!("{}{name}", s.base)).await;
            assert_eq!(status, 200, "{name}");
            let want = if name.ends_with(".css") {
                "text/css; charset=utf-8"
            } else {
                "text/javascript; charset=utf-8"
            };
            assert_eq!(ct, want, "{name}");
            assert!(headers
                .get("cache-control")
                .unwrap()
                .to_str()
                .unwrap()
                .contains("immutable"));
            assets += 1;
        }
    }
    assert!(assets >= 4, "{assets} assets named");

    // A missing file and an unknown endpoint are the API's 404, not an app page.
    for path in ["/assets/missing.js", "/v1/nope", "/demo/api/nope"] {
        let (status, ct, _, _) = get(&format!("{}{path}", s.base)).await;
        assert_eq!(
            (status, ct.as_str()),
            (404, "application/problem+json"),
            "{path}"
        );
    }
    // The API is unchanged underneath.
    let (status, ct, _, _) = get(&format!("{}/openapi.json", s.base)).await;
    assert_eq!((status, ct.as_str()), (200, "application/json"));
    assert_eq!(get(&format!("{}/healthz", s.base)).await.0, 200);
}

#[tokio::test]
async fn buying_a_plan_answers_with_the_revision_that_includes_it() {
    let s = Server::start(true);
    let bob = login(&s.base, "bob").await;
    let before = http()
        .get(format!("{}/v1/me/permissions", s.base))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    let before: Value = before.json().await.unwrap();
    assert!(!before["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["permission"] == "shop:pro"));

    let r = http()
        .post(format!("{}/demo/api/buy", s.base))
        .bearer_auth(&bob)
        .json(&json!({"plan": "pro"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let header: u64 = r.headers()["permissions-revision"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["revision"], header);
    assert!(header > before["revision"].as_u64().unwrap());
    assert_eq!(body["seq"], header, "the binding is bob's latest change");

    // The revision answered is already the one permsync serves (read-your-writes).
    let after = http()
        .get(format!("{}/v1/me/permissions", s.base))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    let after: Value = after.json().await.unwrap();
    assert_eq!(after["revision"], header);
    let held = |p: &str| {
        after["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["permission"] == p && h["scope"] == "org/acme")
    };
    assert!(held("shop:pro") && held("project:create"), "{after}");

    // Buying again changes nothing.
    let again = http()
        .post(format!("{}/demo/api/buy", s.base))
        .bearer_auth(&bob)
        .json(&json!({"plan": "pro"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["seq"], Value::Null);

    // The audit log names the shop as the actor.
    let admin = login(&s.base, "admin").await;
    let changes: Value = http()
        .get(format!("{}/v1/changes?after={}", s.base, header - 1))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(changes["changes"][0]["actor"], "shop");
    assert_eq!(changes["changes"][0]["role"], "pro");

    for (body, token, status) in [
        (json!({"plan": "gold"}), Some(&bob), 404),
        (json!({"plan": "pro", "extra": 1}), Some(&bob), 400),
        (json!({"plan": "pro"}), None, 401),
    ] {
        let mut req = http().post(format!("{}/demo/api/buy", s.base)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
}

#[tokio::test]
async fn the_shop_backend_enforces_what_the_page_shows() {
    let s = Server::start(true);
    let alice = login(&s.base, "alice").await;
    let invoice =
        |project: &str| json!({"project": project, "customer": "Globex", "amount": "1200"});
    let post = |body: Value| {
        http()
            .post(format!("{}/demo/api/invoices", s.base))
            .bearer_auth(&alice)
            .json(&body)
            .send()
    };
    assert_eq!(
        post(invoice("7")).await.unwrap().status(),
        403,
        "alice may not create invoices yet"
    );
    let admin = login(&s.base, "admin").await;
    let granted = http()
        .post(format!("{}/v1/users/alice/grants", s.base))
        .bearer_auth(&admin)
        .json(&json!({"permission": "invoice:create", "scope": "org/acme/project/7"}))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 201);
    let r = post(invoice("7")).await.unwrap();
    assert_eq!(r.status(), 201);
    assert!(r.headers().get("permissions-revision").is_some());
    assert_eq!(
        post(invoice("9")).await.unwrap().status(),
        403,
        "another project"
    );
    assert_eq!(
        post(json!({"project": "7", "customer": "", "amount": "1"}))
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        post(json!({"project": "7", "customer": "x", "amount": "-3"}))
            .await
            .unwrap()
            .status(),
        400
    );
}

#[tokio::test]
async fn without_demo_there_are_no_web_apps_and_no_shop() {
    let s = Server::start(false);
    for path in ["/", "/admin", "/projects/7"] {
        let (status, ct, _, _) = get(&format!("{}{path}", s.base)).await;
        assert_eq!(
            (status, ct.as_str()),
            (404, "application/problem+json"),
            "{path}"
        );
    }
    let r = http()
        .post(format!("{}/demo/api/buy", s.base))
        .json(&json!({"plan": "pro"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
