//! The live event streams over a real socket: SSE read with reqwest, WebSockets
//! with tokio-tungstenite, raw TCP for a client that never reads. Intervals are
//! configured short so keepalives and expiries show within a second or two.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use common::TestServer;
use futures_util::{SinkExt, Stream, StreamExt};
use permsync_core::{Permission, UserId};
use permsync_server::ServerConfig;
use permsync_store::NewGrant;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// How long a test waits for something that should happen at once.
const SOON: Duration = Duration::from_secs(5);
/// How long a test listens to be sure something does not happen.
const QUIET: Duration = Duration::from_millis(400);

fn fast_config() -> ServerConfig {
    ServerConfig {
        stream_keepalive: Duration::from_millis(150),
        ws_ping_interval: Duration::from_millis(150),
        tail_interval: Duration::from_millis(50),
        public_rate_per_sec: 1000,
        ..Default::default()
    }
}

/// A seeded server serving on a loopback port until dropped or shut down.
struct Live {
    s: TestServer,
    addr: SocketAddr,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Live {
    async fn start(config: ServerConfig) -> Live {
        let s = TestServer::with_config(config).await;
        s.seed().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(permsync_server::run(
            listener,
            s.state.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Live {
            s,
            addr,
            http: reqwest::Client::new(),
            stop: Some(stop),
            served: Some(served),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    /// Grants over the API; returns the user's new revision.
    async fn grant(&self, user: &str, permission: &str) -> u64 {
        let admin = self.s.token("admin");
        let (status, body) = self
            .post(
                &format!("/v1/users/{user}/grants"),
                &admin,
                json!({"permission": permission}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["revision"].as_u64().unwrap()
    }

    async fn invalidate(&self, users: &[&str]) -> HashMap<String, u64> {
        let admin = self.s.token("admin");
        let (status, body) = self
            .post("/v1/invalidate", &admin, json!({"users": users}))
            .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body["revisions"].clone()).unwrap()
    }

    async fn sse(&self, token: &str) -> Sse {
        self.sse_with("/v1/me/events", Some(token), &[]).await
    }

    async fn sse_with(&self, path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> Sse {
        self.sse_on(&self.http, path, token, headers).await
    }

    async fn sse_on(
        &self,
        http: &reqwest::Client,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Sse {
        let mut req = http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        Sse {
            status,
            headers,
            body: Box::pin(res.bytes_stream()),
            buf: Vec::new(),
        }
    }

    async fn ws(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let mut req = format!("ws://{}{}", self.addr, path)
            .into_client_request()
            .unwrap();
        if let Some(t) = token {
            req.headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(Ws(ws))
    }

    async fn ticket(&self, token: &str) -> String {
        let (status, body) = self.post("/v1/me/events/ticket", token, json!({})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["expires_in"], 30);
        body["ticket"].as_str().unwrap().to_string()
    }

    /// Starts shutdown and returns the serving task.
    fn shut_down(&mut self) -> tokio::task::JoinHandle<std::io::Result<()>> {
        let _ = self.stop.take().unwrap().send(());
        self.served.take().unwrap()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(served) = &self.served {
            served.abort();
        }
    }
}

/// One SSE block: an event, a comment, or a `retry` line.
#[derive(Debug, Default, Clone)]
struct Block {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    comment: Option<String>,
    retry: Option<u64>,
}

/// A tiny incremental SSE reader over a reqwest body.
struct Sse {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buf: Vec<u8>,
}

impl Sse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The next block; `Ok(None)` when the stream ended, `Err` when none came in time.
    async fn try_block(&mut self, within: Duration) -> Result<Option<Block>, ()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let text = String::from_utf8(self.buf.drain(..end + 2).collect()).unwrap();
                let mut b = Block::default();
                for line in text.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        b.comment = Some(c.trim().to_string());
                    } else if let Some((k, v)) = line.split_once(": ") {
                        match k {
                            "id" => b.id = Some(v.to_string()),
                            "event" => b.event = Some(v.to_string()),
                            "data" => b.data = Some(v.to_string()),
                            "retry" => b.retry = v.parse().ok(),
                            other => panic!("unexpected field {other}"),
                        }
                    }
                }
                return Ok(Some(b));
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return Err(()),
                Ok(None) | Ok(Some(Err(_))) => return Ok(None),
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
            }
        }
    }

    /// The next event (comments and `retry` skipped); `None` when the stream ended.
    async fn event(&mut self, within: Duration) -> Option<Block> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_block(left).await.expect("an event in time") {
                None => return None,
                Some(b) if b.event.is_some() => return Some(b),
                Some(_) => {}
            }
        }
    }

    /// The next event, which must announce a revision.
    async fn revision(&mut self) -> u64 {
        let b = self.event(SOON).await.expect("stream open");
        assert_eq!(b.event.as_deref(), Some("permissions"), "{b:?}");
        let data: Value = serde_json::from_str(b.data.as_deref().unwrap()).unwrap();
        let revision = data["revision"].as_u64().unwrap();
        assert_eq!(b.id, Some(revision.to_string()), "id is the revision");
        assert_eq!(data, json!({"revision": revision}));
        revision
    }

    /// Reads past `retry` and returns the first event's revision.
    async fn opening(&mut self) -> u64 {
        assert_eq!(self.status, 200);
        let first = self.try_block(SOON).await.unwrap().unwrap();
        assert_eq!(first.retry, Some(2000), "the stream opens with retry: 2000");
        self.revision().await
    }

    /// Asserts that no event arrives for a while (keepalives are fine).
    async fn quiet(&mut self) {
        let deadline = tokio::time::Instant::now() + QUIET;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_block(left).await {
                Err(()) => return,
                Ok(Some(b)) if b.event.is_none() => {}
                other => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Reads permissions events until `revision`, asserting they strictly increase.
    async fn until(&mut self, revision: u64) -> Vec<u64> {
        let mut seen = Vec::new();
        while seen.last() != Some(&revision) {
            let r = self.revision().await;
            assert!(
                seen.last().is_none_or(|last| r > *last),
                "revisions strictly increase: {seen:?} then {r}"
            );
            assert!(r <= revision, "never beyond the last one: {r} > {revision}");
            seen.push(r);
        }
        seen
    }

    /// Asserts a `session` event with this reason, then the end of the stream.
    async fn ends_with(&mut self, reason: &str) {
        let b = self.event(SOON).await.expect("a session event");
        assert_eq!(b.event.as_deref(), Some("session"), "{b:?}");
        assert_eq!(b.id, None);
        assert_eq!(
            serde_json::from_str::<Value>(b.data.as_deref().unwrap()).unwrap(),
            json!({"reason": reason})
        );
        assert!(
            matches!(self.try_block(SOON).await, Ok(None)),
            "the stream closes after the session event"
        );
    }
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Ws(WsStream);

#[derive(Debug, PartialEq)]
enum WsSaw {
    Json(Value),
    Ping,
    Closed(Option<u16>),
}

impl Ws {
    async fn next(&mut self) -> WsSaw {
        loop {
            let msg = tokio::time::timeout(SOON, self.0.next())
                .await
                .expect("a message in time");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return WsSaw::Json(serde_json::from_str(&t).unwrap())
                }
                Some(Ok(Message::Ping(_))) => return WsSaw::Ping,
                Some(Ok(Message::Close(frame))) => {
                    return WsSaw::Closed(frame.map(|f| u16::from(f.code)))
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return WsSaw::Closed(None),
            }
        }
    }

    /// The next `permissions` message (pings skipped).
    async fn revision(&mut self) -> u64 {
        loop {
            match self.next().await {
                WsSaw::Json(v) if v["type"] == "ping" => {}
                WsSaw::Ping => {}
                WsSaw::Json(v) => {
                    assert_eq!(v["type"], "permissions", "{v}");
                    return v["revision"].as_u64().unwrap();
                }
                other => panic!("expected a revision, got {other:?}"),
            }
        }
    }

    /// Asserts a `session` message with this reason, then a close with `code`.
    async fn ends_with(&mut self, reason: &str, code: u16) {
        loop {
            match self.next().await {
                WsSaw::Ping => {}
                WsSaw::Json(v) if v["type"] == "ping" => {}
                WsSaw::Json(v) => {
                    assert_eq!(v, json!({"type": "session", "reason": reason}));
                    break;
                }
                other => panic!("expected a session message, got {other:?}"),
            }
        }
        loop {
            match self.next().await {
                WsSaw::Ping => {}
                WsSaw::Json(v) if v["type"] == "ping" => {}
                other => {
                    assert_eq!(other, WsSaw::Closed(Some(code)));
                    return;
                }
            }
        }
    }
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_opens_with_retry_and_current_revision_and_proper_headers() {
    let live = Live::start(fast_config()).await;
    let alice = live.s.token("alice");
    let mut sse = live.sse(&alice).await;
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    assert_eq!(sse.header("cache-control"), Some("no-store"));
    assert_eq!(sse.header("x-accel-buffering"), Some("no"));
    let current = live.s.revision("alice");
    assert_eq!(
        sse.header("permissions-revision"),
        Some(current.to_string().as_str())
    );
    assert_eq!(sse.opening().await, current);

    let refused = live.sse_with("/v1/me/events", None, &[]).await;
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    assert!(refused
        .header("www-authenticate")
        .is_some_and(|v| v.contains("invalid_token")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_reaches_every_tab_of_its_user_and_no_other_user() {
    let live = Live::start(fast_config()).await;
    let (alice, bob) = (live.s.token("alice"), live.s.token("bob"));
    let mut tabs = Vec::new();
    for _ in 0..3 {
        let mut tab = live.sse(&alice).await;
        tab.opening().await;
        tabs.push(tab);
    }
    let mut ws_tab = live.ws("/v1/me/ws", Some(&alice)).await.unwrap();
    assert_eq!(ws_tab.revision().await, live.s.revision("alice"));
    let mut bob_tab = live.sse(&bob).await;
    bob_tab.opening().await;
    let mut bob_ws = live.ws("/v1/me/ws", Some(&bob)).await.unwrap();
    bob_ws.revision().await;

    let revision = live.grant("alice", "invoice:approve").await;
    for tab in &mut tabs {
        assert_eq!(tab.revision().await, revision);
    }
    assert_eq!(ws_tab.revision().await, revision);
    bob_tab.quiet().await;
    let heard = tokio::time::timeout(QUIET, async {
        loop {
            match bob_ws.next().await {
                WsSaw::Ping => {}
                WsSaw::Json(v) if v["type"] == "ping" => {}
                other => return other,
            }
        }
    })
    .await;
    assert!(
        heard.is_err(),
        "bob hears nothing of alice's grant: {heard:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_edit_reaches_every_online_member_and_nobody_else() {
    let live = Live::start(fast_config()).await;
    live.s.bind("alice", "editor", None).await;
    live.s.bind("bob", "editor", Some("project/7")).await;
    let mut streams = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let mut sse = live.sse(&live.s.token(user)).await;
        sse.opening().await;
        streams.push(sse);
    }
    let admin = live.s.token("admin");
    let (status, body) = live
        .send(
            reqwest::Method::PUT,
            "/v1/roles/editor",
            &admin,
            Some(json!({"permissions": ["doc:edit"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let seq = body["seq"].as_u64().unwrap();
    assert_eq!(streams[0].revision().await, seq);
    assert_eq!(streams[1].revision().await, seq);
    streams[2].quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_edits_in_a_row_reach_hundreds_of_members_in_order() {
    // More members than one publishing task writes to, so the frames of each
    // edit are written by several tasks at once, and those of consecutive edits
    // overlap.
    const MEMBERS: usize = 600;
    let live = Live::start(fast_config()).await;
    live.s.role("crowd", &["doc:read"]).await;
    let now = permsync_server::time::now();
    let role = permsync_core::RoleName::parse("crowd").unwrap();
    let mut streams = Vec::new();
    for i in 0..MEMBERS {
        let user = UserId::parse(&format!("member{i}")).unwrap();
        live.s
            .store
            .create_user("test", &user, None, now)
            .await
            .unwrap();
        live.s.open_session(user.as_str()).await;
        let binding = permsync_store::NewBinding {
            user: user.clone(),
            role: role.clone(),
            scope: None,
            expires_at: None,
        };
        live.s
            .store
            .add_binding("test", binding, now)
            .await
            .unwrap();
    }
    live.s.state.catch_up().await.unwrap();
    for i in 0..MEMBERS {
        // A client of its own each, so every stream is a connection's first
        // request, as a browser's stream usually is.
        let token = live.s.token(&format!("member{i}"));
        let mut sse = live
            .sse_on(&reqwest::Client::new(), "/v1/me/events", Some(&token), &[])
            .await;
        sse.opening().await;
        streams.push(sse);
    }
    let admin = live.s.token("admin");
    let mut last = 0;
    for k in 0..10 {
        let (status, body) = live
            .send(
                reqwest::Method::PUT,
                "/v1/roles/crowd",
                &admin,
                Some(json!({"permissions": ["doc:read", format!("doc:r{k}")]})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        last = body["seq"].as_u64().unwrap();
    }
    for sse in &mut streams {
        sse.until(last).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_ends_at_the_last_revision_and_never_goes_back() {
    let live = Live::start(fast_config()).await;
    let alice = live.s.token("alice");
    let mut sse = live.sse(&alice).await;
    let mut ws = live.ws("/v1/me/ws", Some(&alice)).await.unwrap();
    let start = sse.opening().await;
    assert_eq!(ws.revision().await, start);
    let mut last = 0;
    for _ in 0..100 {
        last = live.invalidate(&["alice"]).await["alice"];
    }
    let seen = sse.until(last).await;
    assert!(seen.len() <= 100 && seen[0] > start, "{seen:?}");
    let mut ws_seen = vec![];
    while ws_seen.last() != Some(&last) {
        let r = ws.revision().await;
        assert!(ws_seen.last().is_none_or(|l| r > *l) && r <= last);
        ws_seen.push(r);
    }
    sse.quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_last_event_id_resynchronises_at_once() {
    let live = Live::start(fast_config()).await;
    let alice = live.s.token("alice");
    let mut sse = live.sse(&alice).await;
    let had = sse.opening().await;
    drop(sse);
    let missed = live.grant("alice", "doc:read").await;
    let mut again = live
        .sse_with(
            "/v1/me/events",
            Some(&alice),
            &[("last-event-id", &had.to_string())],
        )
        .await;
    assert_eq!(
        again.opening().await,
        missed,
        "the first event is the current revision"
    );

    // Saying it has the current revision: the first event is left out, later ones come.
    let mut same = live
        .sse_with(
            "/v1/me/events",
            Some(&alice),
            &[("last-event-id", &missed.to_string())],
        )
        .await;
    assert_eq!(same.status, 200);
    assert_eq!(
        same.try_block(SOON).await.unwrap().unwrap().retry,
        Some(2000)
    );
    same.quiet().await;
    let next = live.grant("alice", "doc:write").await;
    assert_eq!(same.revision().await, next);
    assert_eq!(again.revision().await, next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_opens_one_stream_only() {
    let live = Live::start(fast_config()).await;
    let alice = live.s.token("alice");
    let ticket = live.ticket(&alice).await;
    let mut sse = live
        .sse_with(&format!("/v1/me/events?ticket={ticket}"), None, &[])
        .await;
    assert_eq!(sse.opening().await, live.s.revision("alice"));
    let reused = live
        .http
        .get(live.url(&format!("/v1/me/events?ticket={ticket}")))
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), 401);
    assert_eq!(
        reused.headers().get("content-type").unwrap(),
        "application/problem+json"
    );
    assert!(reused.headers().get("www-authenticate").is_some());
    let problem: Value = reused.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_token");

    let ws_ticket = live.ticket(&alice).await;
    let mut ws = live
        .ws(&format!("/v1/me/ws?ticket={ws_ticket}"), None)
        .await
        .unwrap();
    assert_eq!(ws.revision().await, live.s.revision("alice"));
    let again = live
        .ws(&format!("/v1/me/ws?ticket={ws_ticket}"), None)
        .await;
    match again {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 401),
        other => panic!("a reused ticket must be refused: {:?}", other.map(|_| ())),
    }
    // The stream opened with the ticket is alice's: her changes reach it.
    let revision = live.grant("alice", "doc:read").await;
    assert_eq!(sse.revision().await, revision);
    assert_eq!(ws.revision().await, revision);
    // Tickets are only for users with a token.
    let (status, _) = live
        .post("/v1/me/events/ticket", "not-a-token", json!({}))
        .await;
    assert_eq!(status, 401);
}

/// A token for `user` in session `sid` that expires in about `secs` seconds.
fn short_token(live: &Live, user: &str, sid: &str, secs: i64) -> String {
    let iat = permsync_server::time::now().0 / 1000;
    live.s.state.tokens.sign(&permsync_auth::AccessClaims {
        iss: "permsync".into(),
        sub: user.into(),
        aud: "permsync".into(),
        iat,
        exp: iat + secs,
        jti: permsync_auth::random_token(),
        sid: sid.into(),
        prev: 0,
        perms: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_flow_and_an_expired_token_closes_the_stream() {
    let live = Live::start(fast_config()).await;
    let token = short_token(&live, "alice", "test-session-alice", 2);
    let mut sse = live.sse(&token).await;
    sse.opening().await;
    let mut ws = live.ws("/v1/me/ws", Some(&token)).await.unwrap();
    ws.revision().await;
    let keepalive = sse
        .try_block(Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(keepalive.comment.as_deref(), Some("keepalive"));
    assert!(keepalive.event.is_none());
    let (mut pings, mut text_pings) = (0, 0);
    while pings == 0 || text_pings == 0 {
        match ws.next().await {
            WsSaw::Ping => pings += 1,
            WsSaw::Json(v) if v == json!({"type": "ping"}) => text_pings += 1,
            other => panic!("{other:?}"),
        }
    }
    // Both read at once: a WebSocket client that stops reading stops answering
    // pings, and the server drops it as gone.
    tokio::join!(
        sse.ends_with("token_expired"),
        ws.ends_with("token_expired", 4401)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_changes_and_expiries_produce_events() {
    let live = Live::start(fast_config()).await;
    let mut sse = live.sse(&live.s.token("alice")).await;
    sse.opening().await;
    let cli = live.s.other_writer().await;
    let now = permsync_server::time::now();
    let grant = |permission: &str, expires_at| NewGrant {
        user: UserId::parse("alice").unwrap(),
        permission: Permission::parse(permission).unwrap(),
        scope: None,
        expires_at,
    };
    let added = cli
        .add_grant("cli", grant("report:read", None), now)
        .await
        .unwrap();
    let permsync_store::Added::Created(g, _) = added else {
        panic!("a new grant")
    };
    assert_eq!(
        sse.revision().await,
        g.id,
        "the tail picks up another process's commit"
    );

    let expiring = cli
        .add_grant(
            "cli",
            grant("report:write", Some(now.plus_millis(1000))),
            now,
        )
        .await
        .unwrap();
    let permsync_store::Added::Created(g, _) = expiring else {
        panic!("a new grant")
    };
    assert_eq!(sse.revision().await, g.id);
    let expired = sse.revision().await;
    assert!(expired > g.id, "the expiry raised the revision");
    assert!(permsync_server::time::now().0 >= now.0 + 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_processs_commit_is_pushed_without_waiting_for_the_poll() {
    // A poll that never comes while the test runs: only the store's commit
    // signal can wake the tail.
    let config = ServerConfig {
        tail_interval: Duration::from_secs(3600),
        ..fast_config()
    };
    let live = Live::start(config).await;
    let mut sse = live.sse(&live.s.token("alice")).await;
    sse.opening().await;
    let grant = NewGrant {
        user: UserId::parse("alice").unwrap(),
        permission: Permission::parse("report:read").unwrap(),
        scope: None,
        expires_at: None,
    };
    let cli = live.s.other_writer().await;
    let added = cli
        .add_grant("cli", grant, permsync_server::time::now())
        .await
        .unwrap();
    let permsync_store::Added::Created(g, _) = added else {
        panic!("a new grant")
    };
    assert_eq!(sse.revision().await, g.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_of_one_user_is_ever_readable_by_another() {
    let live = Live::start(fast_config()).await;
    let users = ["alice", "bob", "carol"];
    let mut streams = Vec::new();
    for u in users {
        let mut sse = live.sse(&live.s.token(u)).await;
        sse.opening().await;
        streams.push(sse);
    }
    let mut own: HashMap<&str, BTreeSet<u64>> = HashMap::new();
    for i in 0..30 {
        let u = users[i % 3];
        let r = live.invalidate(&[u]).await[u];
        own.entry(u).or_default().insert(r);
    }
    for (u, sse) in users.iter().zip(&mut streams) {
        let last = *own[u].last().unwrap();
        for r in sse.until(last).await {
            assert!(
                own[u].contains(&r),
                "{u} saw revision {r}, which is not one of theirs"
            );
        }
        sse.quiet().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seventeenth_stream_of_a_user_is_refused() {
    let live = Live::start(fast_config()).await;
    let alice = live.s.token("alice");
    let mut sses = Vec::new();
    for _ in 0..12 {
        let mut sse = live.sse(&alice).await;
        sse.opening().await;
        sses.push(sse);
    }
    let mut wss = Vec::new();
    for _ in 0..4 {
        wss.push(live.ws("/v1/me/ws", Some(&alice)).await.unwrap());
    }
    let res = live
        .http
        .get(live.url("/v1/me/events"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().get("retry-after").is_some());
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/problem+json"
    );
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "rate_limited");
    match live.ws("/v1/me/ws", Some(&alice)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 429),
        other => panic!("the 17th stream must be refused: {:?}", other.map(|_| ())),
    }
    // Another user is not affected.
    live.sse(&live.s.token("bob")).await.opening().await;
    // Closing one gives its place back.
    drop(sses.pop());
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let mut sse = live.sse(&alice).await;
        if sse.status == 200 {
            sse.opening().await;
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed stream's place was not given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(live.s.state.open_streams.of_user("alice"), 16);
}

async fn login(live: &Live, user: &str) -> (String, String) {
    let res = live
        .http
        .post(live.url("/v1/auth/login"))
        .json(&json!({"username": user, "password": format!("{user}-password")}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    (
        body["access_token"].as_str().unwrap().into(),
        body["refresh_token"].as_str().unwrap().into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_and_session_revoke_end_the_sessions_streams() {
    let live = Live::start(fast_config()).await;
    let (access, refresh) = login(&live, "alice").await;
    let (other_access, _) = login(&live, "alice").await;
    let mut sse = live.sse(&access).await;
    sse.opening().await;
    let mut ws = live.ws("/v1/me/ws", Some(&access)).await.unwrap();
    ws.revision().await;
    let mut other = live.sse(&other_access).await;
    other.opening().await;
    let ticket = live.ticket(&access).await;

    let res = live
        .http
        .post(live.url("/v1/auth/logout"))
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    sse.ends_with("logged_out").await;
    ws.ends_with("logged_out", 4403).await;
    other.quiet().await;
    // The session's ticket died with it.
    assert_eq!(
        live.sse_with(&format!("/v1/me/events?ticket={ticket}"), None, &[])
            .await
            .status,
        401
    );

    let admin = live.s.token("admin");
    let (status, body) = live
        .post("/v1/users/alice/sessions/revoke", &admin, json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    other.ends_with("revoked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_stream_resumes_without_gaps_or_duplicates() {
    let live = Live::start(fast_config()).await;
    let admin = live.s.token("admin");
    let mut stream = live.sse_with("/v1/changes/stream", Some(&admin), &[]).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    let mut seen = Vec::new();
    let committed = live.s.store.last_seq().await.unwrap();
    while seen.last() != Some(&committed) {
        let b = stream.event(SOON).await.unwrap();
        assert_eq!(b.event.as_deref(), Some("change"));
        let record: Value = serde_json::from_str(b.data.as_deref().unwrap()).unwrap();
        assert_eq!(b.id, Some(record["seq"].to_string()));
        seen.push(record["seq"].as_u64().unwrap());
    }
    // New changes follow, in the same shape as GET /v1/changes.
    live.grant("bob", "doc:read").await;
    let b = stream.event(SOON).await.unwrap();
    let record: Value = serde_json::from_str(b.data.as_deref().unwrap()).unwrap();
    assert_eq!(
        (record["action"].as_str(), record["user"].as_str()),
        (Some("grant_added"), Some("bob"))
    );
    seen.push(record["seq"].as_u64().unwrap());
    drop(stream);

    for _ in 0..20 {
        live.invalidate(&["alice"]).await;
    }
    let last_id = seen.last().unwrap().to_string();
    let mut resumed = live
        .sse_with(
            "/v1/changes/stream",
            Some(&admin),
            &[("last-event-id", &last_id)],
        )
        .await;
    let committed = live.s.store.last_seq().await.unwrap();
    while seen.last() != Some(&committed) {
        let b = resumed.event(SOON).await.unwrap();
        seen.push(b.id.unwrap().parse().unwrap());
    }
    let expected: Vec<u64> = (1..=committed).collect();
    assert_eq!(seen, expected, "every change once, in order");
    resumed.quiet().await;

    let after = live
        .sse_with(
            &format!("/v1/changes/stream?after={}", committed - 3),
            Some(&admin),
            &[],
        )
        .await;
    let mut after = after;
    let ids: Vec<String> = [
        after.event(SOON).await,
        after.event(SOON).await,
        after.event(SOON).await,
    ]
    .into_iter()
    .map(|b| b.unwrap().id.unwrap())
    .collect();
    assert_eq!(
        ids,
        [committed - 2, committed - 1, committed].map(|s| s.to_string())
    );

    let bob = live
        .sse_with("/v1/changes/stream", Some(&live.s.token("bob")), &[])
        .await;
    assert_eq!(bob.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_does_not_grow_the_server() {
    let live = Live::start(fast_config()).await;
    let alice = live.s.token("alice");
    // A raw socket with a small receive window, which sends its request and then
    // never reads a byte.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut raw = socket.connect(live.addr).await.unwrap();
    let request =
        format!("GET /v1/me/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n\r\n");
    raw.write_all(request.as_bytes()).await.unwrap();
    let deadline = tokio::time::Instant::now() + SOON;
    while live.s.state.open_streams.of_user("alice") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the raw stream opened"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rss_before = vm_rss_kib();

    // 2,000 real changes through the store and the tail...
    let users = [UserId::parse("alice").unwrap()];
    for _ in 0..2000 {
        live.s
            .store
            .invalidate("test", &users, None, permsync_server::time::now())
            .await
            .unwrap();
    }
    live.s.state.catch_up().await.unwrap();
    let last = live.s.revision("alice");
    // ...then far more announcements than the socket buffers hold (~50 bytes
    // each), straight into the hub, so the writer must stop and wait.
    let now = permsync_server::time::now();
    let alice_id = UserId::parse("alice").unwrap();
    let top = last + 1_000_000;
    for seq in last + 1..=top {
        live.s
            .state
            .hub
            .publish(std::slice::from_ref(&alice_id), seq, now);
    }

    // The server answers as usual meanwhile.
    let started = std::time::Instant::now();
    let health = live.http.get(live.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    // The slot holds only the latest, and a reader gets it at once.
    let mut reader = live.sse(&alice).await;
    assert_eq!(reader.opening().await, top);
    // Queued, a million distinct frames would take well over 100 MiB; the bound
    // leaves room for other tests of this binary running at the same time.
    let grown_mib = vm_rss_kib().saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 80, "the process grew by {grown_mib} MiB");
    drop(raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_streams_cleanly() {
    let mut live = Live::start(fast_config()).await;
    let alice = live.s.token("alice");
    let mut sse = live.sse(&alice).await;
    sse.opening().await;
    let mut ws = live.ws("/v1/me/ws", Some(&alice)).await.unwrap();
    ws.revision().await;
    let admin = live.s.token("admin");
    let mut changes = live.sse_with("/v1/changes/stream", Some(&admin), &[]).await;
    assert_eq!(changes.status, 200);

    let served = live.shut_down();
    // The SSE body ends (no session event: the client just reconnects)...
    loop {
        match sse.try_block(SOON).await {
            Ok(None) => break,
            Ok(Some(b)) => assert!(b.event.is_none(), "{b:?}"),
            Err(()) => panic!("the SSE stream did not end"),
        }
    }
    // ...and the WebSocket closes with 1001 going away.
    loop {
        match ws.next().await {
            WsSaw::Ping => {}
            WsSaw::Json(v) if v["type"] == "ping" => {}
            other => {
                assert_eq!(other, WsSaw::Closed(Some(u16::from(CloseCode::Away))));
                break;
            }
        }
    }
    let _ = ws.0.close(None).await;
    loop {
        match changes.try_block(SOON).await {
            Ok(None) => break,
            Ok(Some(_)) => {}
            Err(()) => panic!("the change stream did not end"),
        }
    }
    assert!(
        live.s
            .state
            .shutting_down
            .load(std::sync::atomic::Ordering::Relaxed),
        "readyz answers 503"
    );
    let result = tokio::time::timeout(SOON, served)
        .await
        .expect("run() returns after the streams ended");
    result.unwrap().unwrap();
    assert_eq!(live.s.state.open_streams.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_streams_events_and_latency() {
    let live = Live::start(fast_config()).await;
    let alice = live.s.token("alice");
    let mut sse = live.sse(&alice).await;
    sse.opening().await;
    let mut ws = live.ws("/v1/me/ws", Some(&alice)).await.unwrap();
    ws.revision().await;
    let revision = live.grant("alice", "doc:read").await;
    assert_eq!(sse.revision().await, revision);
    assert_eq!(ws.revision().await, revision);
    let text = live
        .http
        .get(live.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    };
    assert_eq!(value("permsync_open_streams{transport=\"sse\"}"), 1.0);
    assert_eq!(value("permsync_open_streams{transport=\"ws\"}"), 1.0);
    assert!(value("permsync_events_sent_total") >= 4.0);
    assert!(value("permsync_push_latency_seconds_count") >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_the_stream_endpoints() {
    let doc = serde_json::to_value(permsync_server::openapi()).unwrap();
    for path in [
        "/v1/me/events",
        "/v1/me/ws",
        "/v1/me/events/ticket",
        "/v1/changes/stream",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    let events = &doc["paths"]["/v1/me/events"]["get"]["responses"]["200"]["content"];
    assert!(events["text/event-stream"].is_object(), "{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_ignores_client_messages_and_refuses_oversized_ones() {
    let live = Live::start(fast_config()).await;
    let alice = live.s.token("alice");
    let mut ws = live.ws("/v1/me/ws", Some(&alice)).await.unwrap();
    ws.revision().await;
    ws.0.send(Message::text("hello")).await.unwrap();
    let revision = live.grant("alice", "doc:read").await;
    assert_eq!(
        ws.revision().await,
        revision,
        "a client message changes nothing"
    );
    ws.0.send(Message::text("x".repeat(64 * 1024)))
        .await
        .unwrap();
    loop {
        match ws.next().await {
            WsSaw::Closed(_) => break,
            _ => continue,
        }
    }
    let deadline = tokio::time::Instant::now() + SOON;
    while live.s.state.open_streams.of_user("alice") > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the oversized message ended the socket"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let res = live
        .http
        .get(live.url("/v1/me/ws"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "a plain GET is no WebSocket handshake");
}

/// Sends `parts` on a fresh connection (pausing between them, so they arrive as
/// separate segments) and reads until `until` shows. Returns the socket and what
/// was read.
async fn raw_exchange(
    addr: SocketAddr,
    parts: &[&[u8]],
    until: &str,
) -> (tokio::net::TcpStream, String) {
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        raw.write_all(part).await.unwrap();
    }
    let seen = read_until(&mut raw, until).await;
    (raw, seen)
}

/// Reads until `until` shows in what came, the peer closes, or SOON passes.
async fn read_until(raw: &mut tokio::net::TcpStream, until: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + SOON;
    while !String::from_utf8_lossy(&seen).contains(until) {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(deadline, raw.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

async fn wait_streams_of(live: &Live, user: &str, count: usize) {
    let deadline = tokio::time::Instant::now() + SOON;
    while live.s.state.open_streams.of_user(user) != count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{user} has {} streams, expected {count}",
            live.s.state.open_streams.of_user(user)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_http_event_streams_are_framed_per_version_and_freed_on_close() {
    let live = Live::start(fast_config()).await;
    let alice = live.s.token("alice");
    let revision = live.s.revision("alice");
    let first = format!("data: {{\"revision\":{revision}}}");

    // HTTP/1.1: chunked, closed by the server when it ends.
    let request =
        format!("GET /v1/me/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n\r\n");
    let (raw, seen) = raw_exchange(live.addr, &[request.as_bytes()], &first).await;
    let (head, body) = seen.split_once("\r\n\r\n").expect("a response head");
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    for line in [
        "transfer-encoding: chunked",
        "connection: close",
        "content-type: text/event-stream",
        "cache-control: no-store",
        &format!("permissions-revision: {revision}"),
        "date: ",
    ] {
        assert!(head.contains(line), "{line:?} missing in {head}");
    }
    assert!(!head.contains("content-length"), "{head}");
    assert!(body.starts_with("d\r\nretry: 2000\n\n\r\n"), "{body:?}");
    assert!(body.contains(&format!("{first}\n\n\r\n")), "{body:?}");
    wait_streams_of(&live, "alice", 1).await;
    // The client going away frees its place at once.
    drop(raw);
    wait_streams_of(&live, "alice", 0).await;

    // HTTP/1.0: no chunks; the body lasts until the connection closes.
    let request = format!("GET /v1/me/events HTTP/1.0\r\nAuthorization: Bearer {alice}\r\n\r\n");
    let (mut raw, seen) = raw_exchange(live.addr, &[request.as_bytes()], &first).await;
    let (head, body) = seen.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert!(body.starts_with("retry: 2000\n\n"), "{body:?}");
    // Events keep coming on it, unframed.
    let next = live.grant("alice", "doc:raw").await;
    let event = format!("id: {next}\nevent: permissions\ndata: {{\"revision\":{next}}}\n\n");
    let seen = read_until(&mut raw, &event).await;
    assert!(seen.starts_with(&event), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_event_stream_requests_that_are_odd_or_bad_get_answers() {
    let live = Live::start(fast_config()).await;
    let alice = live.s.token("alice");
    let revision = live.s.revision("alice");
    let first = format!("data: {{\"revision\":{revision}}}");

    // A request line split over segments is still served (by the general path).
    let rest =
        format!(" /v1/me/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n\r\n");
    let (_raw, seen) = raw_exchange(live.addr, &[b"GET", rest.as_bytes()], &first).await;
    assert!(seen.starts_with("HTTP/1.1 200 OK\r\n"), "{seen}");
    assert!(seen.contains(&first), "{seen}");

    // Bad heads get problem documents with their length, then the connection ends.
    let huge = format!(
        "GET /v1/me/events HTTP/1.1\r\nAuthorization: Bearer {alice}\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(20_000)
    );
    let cases: [(Vec<u8>, &str, &str); 4] = [
        (
            b"GET /v1/me/events HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            "401",
            "missing bearer token",
        ),
        (huge.into_bytes(), "431", "request head exceeds"),
        (
            format!("GET /v1/me/events HTTP/1.1\r\nAuthorization: Bearer {alice}\r\nContent-Length: 3\r\n\r\nabc").into_bytes(),
            "400",
            "has no body",
        ),
        (
            b"GET /v1/me/events HTTP/1.1\r\nBad Header: x\r\n\r\n".to_vec(),
            "400",
            "malformed HTTP request",
        ),
    ];
    for (request, status, detail) in cases {
        let (_raw, seen) = raw_exchange(live.addr, &[&request], "\u{0}never").await;
        let (head, body) = seen.split_once("\r\n\r\n").expect("a response head");
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains("content-type: application/problem+json"),
            "{head}"
        );
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let problem: Value = serde_json::from_str(body).unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains(detail),
            "{problem}"
        );
    }
    wait_streams_of(&live, "alice", 1).await;

    // A client that keeps writing on its stream is cut off.
    let request = format!("GET /v1/me/events HTTP/1.1\r\nAuthorization: Bearer {alice}\r\n\r\n");
    let (mut chatty, _) = raw_exchange(live.addr, &[request.as_bytes()], &first).await;
    wait_streams_of(&live, "alice", 2).await;
    chatty.write_all(&[b'x'; 100]).await.unwrap();
    wait_streams_of(&live, "alice", 1).await;
}
