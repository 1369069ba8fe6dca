//! The bounds on connections over real sockets (protocol §5): header, idle, body
//! and write timeouts, the connection cap, streams that end at once whether or
//! not their client reads, and a shutdown that ends whatever clients hold. Raw
//! TCP throughout, since these are the cases polite clients never produce; the
//! timeouts are configured short, and every bound asserted is generous: it proves
//! that something ends, not how fast.

mod common;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use common::TestServer;
use permsync_core::UserId;
use permsync_server::{Connections, ServerConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Longer than every bound under test, shorter than "for ever".
const ENDS_WITHIN: Duration = Duration::from_secs(5);

/// The server sockets' send buffer (the kernel doubles it).
const SEND_BUFFER: u32 = 4096;

/// Limits short enough for a test; each test shortens what it checks further.
fn limits() -> Connections {
    Connections {
        header_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        body_timeout: Duration::from_secs(30),
        max_connections: None,
        shutdown_timeout: Duration::from_secs(10),
        stream_write_timeout: Duration::from_secs(30),
    }
}

/// A seeded server on a loopback port, until dropped or shut down.
struct Served {
    s: TestServer,
    addr: SocketAddr,
    /// The last revision [`Served::fill`] published.
    published: std::sync::atomic::AtomicU64,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

impl Served {
    async fn start(connections: Connections) -> Served {
        let config = ServerConfig {
            connections,
            tail_interval: Duration::from_millis(50),
            public_rate_per_sec: 1000,
            ..Default::default()
        };
        let s = TestServer::with_config(config).await;
        s.seed().await;
        // Accepted sockets inherit the listener's send buffer: a small, fixed one
        // (no autotuning) fills within a few frames when the client does not
        // read, and then stays full.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(SEND_BUFFER).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1024).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(permsync_server::run(
            listener,
            s.state.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Served {
            s,
            addr,
            published: 1_000_000.into(),
            stop: Some(stop),
            served: Some(served),
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    /// A connection whose receive buffer is as small as the kernel allows, for a
    /// client that never reads: the server's writes stall soon.
    async fn connect_unread(&self) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(1024).unwrap();
        socket.connect(self.addr).await.unwrap()
    }

    /// Logs `user` in; returns the access and refresh tokens of the new session.
    async fn login(&self, user: &str) -> (String, String) {
        let mut raw = self.connect().await;
        let body = json!({"username": user, "password": format!("{user}-password")});
        let (status, body) = exchange(&mut raw, "POST", "/v1/auth/login", None, Some(body)).await;
        assert_eq!(status, 200, "{body}");
        (
            body["access_token"].as_str().unwrap().to_string(),
            body["refresh_token"].as_str().unwrap().to_string(),
        )
    }

    /// The server's send queue on the connection from `client`, in bytes.
    fn send_queue(&self, client: &TcpStream) -> Option<u64> {
        send_queue(self.addr, client.local_addr().unwrap())
    }

    /// Publishes revisions to `user`'s streams until the server's send queue to
    /// `client` stops growing: the client reads nothing, so the server's next
    /// write waits for room.
    async fn fill(&self, user: &str, client: &TcpStream) {
        use std::sync::atomic::Ordering;
        let user = UserId::parse(user).unwrap();
        let (mut last, mut same) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        while same < 5 {
            assert!(
                Instant::now() < deadline,
                "the stream's socket never filled"
            );
            for _ in 0..500 {
                let seq = self.published.fetch_add(1, Ordering::Relaxed) + 1;
                let now = permsync_server::time::now();
                self.s
                    .state
                    .hub
                    .publish(std::slice::from_ref(&user), seq, now);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            let queued = self.send_queue(client).unwrap_or(0);
            if queued > u64::from(SEND_BUFFER) / 2 && queued == last {
                same += 1;
            } else {
                same = 0;
            }
            last = queued;
        }
    }

    async fn wait_streams_of(&self, user: &str, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.s.state.open_streams.of_user(user) != count {
            assert!(
                Instant::now() < deadline,
                "{user} has {} open streams, expected {count}",
                self.s.state.open_streams.of_user(user)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn shut_down(&mut self) -> tokio::task::JoinHandle<io::Result<()>> {
        let _ = self.stop.take().unwrap().send(());
        self.served.take().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(served) = &self.served {
            served.abort();
        }
    }
}

/// The kernel's count of bytes not yet acknowledged on the socket from
/// `local` to `remote` (IPv4), from `/proc/net/tcp`.
fn send_queue(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(a) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(a.ip().octets()),
            a.port()
        ),
        SocketAddr::V6(_) => String::new(),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&local.as_str()) || fields.get(2) != Some(&remote.as_str()) {
            return None;
        }
        let (tx, _) = fields.get(4)?.split_once(':')?;
        u64::from_str_radix(tx, 16).ok()
    })
}

/// How a connection ended, seen from the client.
#[derive(Debug, PartialEq)]
enum Ended {
    /// The server closed it (FIN), after these bytes.
    Closed(String),
    /// The server reset it.
    Reset,
}

/// Reads until the server ends the connection; `None` if it is still open
/// after `within`.
async fn ended_within(raw: &mut TcpStream, within: Duration) -> Option<Ended> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, raw.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) => return Some(Ended::Closed(String::from_utf8_lossy(&seen).into())),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => return Some(Ended::Reset),
            Ok(Err(e)) => panic!("reading failed: {e}"),
        }
    }
}

/// Reads until `until` shows; panics if it does not within [`ENDS_WITHIN`].
async fn read_until(raw: &mut TcpStream, until: &str) -> String {
    let deadline = Instant::now() + ENDS_WITHIN;
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !String::from_utf8_lossy(&seen).contains(until) {
        let read = tokio::time::timeout_at(deadline, raw.read(&mut buf)).await;
        let n = match read {
            Ok(Ok(n)) if n > 0 => n,
            other => panic!(
                "{until:?} never came ({other:?}): {}",
                String::from_utf8_lossy(&seen)
            ),
        };
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Asserts that the server ends the connection within [`ENDS_WITHIN`].
#[track_caller]
fn assert_ended(ended: Option<Ended>, what: &str) -> Ended {
    ended.unwrap_or_else(|| panic!("{what}: still open after {ENDS_WITHIN:?}"))
}

/// Sends one request and reads its answer (which must have a length): the
/// status and the body as JSON (`Null` if it is not).
async fn exchange(
    raw: &mut TcpStream,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, _, body) = exchange_head(raw, method, path, token, body).await;
    (status, body)
}

async fn exchange_head(
    raw: &mut TcpStream,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, String, Value) {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
    if let Some(t) = token {
        request.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    raw.write_all(request.as_bytes()).await.unwrap();
    read_answer(raw).await
}

/// Reads one answer with a `content-length`: status, head (lower case), body.
async fn read_answer(raw: &mut TcpStream) -> (u16, String, Value) {
    let mut seen = Vec::new();
    let deadline = Instant::now() + ENDS_WITHIN;
    let head_end = loop {
        if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, raw.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(
            n > 0,
            "closed before answering: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&seen[..head_end]).to_ascii_lowercase();
    let status: u16 = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    while seen.len() < head_end + length {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, raw.read(&mut buf))
            .await
            .expect("the body in time")
            .unwrap();
        assert!(n > 0, "closed in the body");
        seen.extend_from_slice(&buf[..n]);
    }
    let body = serde_json::from_slice(&seen[head_end..head_end + length]).unwrap_or(Value::Null);
    (status, head, body)
}

/// Opens an event stream on `raw` (as its first request: the direct path, or
/// after others: hyper) and waits until the server counts it.
async fn open_stream(served: &Served, raw: &mut TcpStream, path: &str, token: &str, user: &str) {
    let before = served.s.state.open_streams.of_user(user);
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    raw.write_all(request.as_bytes()).await.unwrap();
    served.wait_streams_of(user, before + 1, ENDS_WITHIN).await;
}

/// A token of the same session as `token` (a real login's) that expires in
/// `secs` seconds.
fn short_token(served: &Served, token: &str, secs: i64) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let iat = permsync_server::time::now().0 / 1000;
    served.s.state.tokens.sign(&permsync_auth::AccessClaims {
        iss: "permsync".into(),
        sub: claims["sub"].as_str().unwrap().into(),
        aud: "permsync".into(),
        iat,
        exp: iat + secs,
        jti: permsync_auth::random_token(),
        sid: claims["sid"].as_str().unwrap().into(),
        prev: 0,
        perms: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_and_late_heads_are_closed_after_the_header_timeout() {
    let served = Served::start(Connections {
        header_timeout: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let alice = served.s.token("alice");
    let mut held = Vec::new();
    // Nothing at all; a head cut short on the general path; a prefix too short
    // to tell whether it is an event stream; an event stream's head cut short.
    let starts: [&[u8]; 4] = [
        b"",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
        b"GET /v1/me/e",
        b"GET /v1/me/events HTTP/1.1\r\nHost: x\r\n",
    ];
    for start in starts {
        let mut raw = served.connect().await;
        raw.write_all(start).await.unwrap();
        held.push((start, raw));
    }
    for (start, raw) in &mut held {
        let ended = ended_within(raw, ENDS_WITHIN).await;
        let what = format!(
            "a connection that sent {:?}",
            String::from_utf8_lossy(start)
        );
        assert_ended(ended, &what);
    }

    // On a keep-alive connection the next head is timed from its first byte,
    // not from the previous answer: a quiet pause longer than the header
    // timeout is not late.
    let mut raw = served.connect().await;
    let (status, _) = exchange(&mut raw, "GET", "/v1/me/permissions", Some(&alice), None).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, _) = exchange(&mut raw, "GET", "/v1/me/permissions", Some(&alice), None).await;
    assert_eq!(status, 200, "the same connection serves the next request");
    // ...but a head that starts and stalls is.
    raw.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let ended = ended_within(&mut raw, ENDS_WITHIN).await;
    assert_ended(ended, "a later head cut short");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let served = Served::start(Connections {
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        ..limits()
    })
    .await;
    let mut raw = served.connect().await;
    let (status, _) = exchange(&mut raw, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    let ended = ended_within(&mut raw, ENDS_WITHIN).await;
    assert_eq!(
        assert_ended(ended, "an idle connection"),
        Ended::Closed(String::new()),
        "closed quietly, without an answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_ends_its_connection() {
    let served = Served::start(Connections {
        body_timeout: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let mut raw = served.connect().await;
    // Announces 100 bytes, sends 10.
    raw.write_all(
        b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"username",
    )
    .await
    .unwrap();
    let ended = ended_within(&mut raw, ENDS_WITHIN).await;
    match assert_ended(ended, "a connection whose body stalled") {
        Ended::Closed(answer) => assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400 "),
            "{answer}"
        ),
        Ended::Reset => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_connection_cap_healthz_answers_and_everything_else_is_503() {
    let served = Served::start(Connections {
        max_connections: Some(3),
        ..limits()
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(served.connect().await);
    }
    // Let the server accept them (and count them) before the next one comes.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut raw = served.connect().await;
    let (status, head, body) = exchange_head(&mut raw, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, json!({"status": "ok"}));
    assert!(head.contains("connection: close"), "{head}");
    let ended = ended_within(&mut raw, ENDS_WITHIN).await;
    assert_eq!(
        assert_ended(ended, "an over-cap connection"),
        Ended::Closed(String::new())
    );

    for path in ["/v1/me/permissions", "/readyz", "/v1/me/events"] {
        let mut raw = served.connect().await;
        let (status, head, body) = exchange_head(&mut raw, "GET", path, None, None).await;
        assert_eq!(status, 503, "{path}: {head}");
        assert_eq!(body["code"], "unavailable", "{path}: {body}");
        assert!(
            head.contains("content-type: application/problem+json"),
            "{head}"
        );
        assert!(head.contains("retry-after: 1\r\n"), "{head}");
        assert!(head.contains("connection: close"), "{head}");
    }
    // A head that does not come is not waited for long.
    let mut raw = served.connect().await;
    let ended = ended_within(&mut raw, ENDS_WITHIN).await;
    assert_ended(ended, "a silent over-cap connection");

    // Once a place is free, requests are served again.
    drop(silent.pop());
    let deadline = Instant::now() + ENDS_WITHIN;
    loop {
        let mut raw = served.connect().await;
        let (status, body) = exchange(&mut raw, "GET", "/v1/me/permissions", None, None).await;
        if status == 401 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "the freed place was never reused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_client_never_reads_ends_at_once_on_logout() {
    let served = Served::start(limits()).await;
    let (access, refresh) = served.login("alice").await;
    // The direct path: the stream is the connection's first request.
    let mut direct = served.connect_unread().await;
    open_stream(&served, &mut direct, "/v1/me/events", &access, "alice").await;
    served.fill("alice", &direct).await;
    // The hyper path: a stream on a connection that served a request first.
    let mut pooled = served.connect_unread().await;
    let (status, _) = exchange(&mut pooled, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    open_stream(&served, &mut pooled, "/v1/me/events", &access, "alice").await;
    served.fill("alice", &pooled).await;

    let mut raw = served.connect().await;
    let body = json!({"refresh_token": refresh});
    let (status, _) = exchange(&mut raw, "POST", "/v1/auth/logout", None, Some(body)).await;
    assert_eq!(status, 204);
    served.wait_streams_of("alice", 0, ENDS_WITHIN).await;
    for (raw, path) in [(&mut direct, "direct"), (&mut pooled, "hyper")] {
        let ended = ended_within(raw, ENDS_WITHIN).await;
        assert_eq!(
            assert_ended(ended, path),
            Ended::Reset,
            "{path}: a full socket is reset, not left to drain"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_client_never_reads_ends_when_its_token_expires() {
    let served = Served::start(limits()).await;
    let (access, _) = served.login("alice").await;
    let token = short_token(&served, &access, 6);
    let mut direct = served.connect_unread().await;
    open_stream(&served, &mut direct, "/v1/me/events", &token, "alice").await;
    let mut pooled = served.connect_unread().await;
    let (status, _) = exchange(&mut pooled, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    open_stream(&served, &mut pooled, "/v1/me/events", &token, "alice").await;
    served.fill("alice", &direct).await;
    served.fill("alice", &pooled).await;
    // The token's end comes within 6 s; the streams close then.
    served
        .wait_streams_of("alice", 0, Duration::from_secs(6) + ENDS_WITHIN)
        .await;
    for (raw, path) in [(&mut direct, "direct"), (&mut pooled, "hyper")] {
        assert_eq!(
            assert_ended(ended_within(raw, ENDS_WITHIN).await, path),
            Ended::Reset,
            "{path}: a full socket is reset"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_socket_that_takes_nothing_is_closed_after_the_write_timeout() {
    let served = Served::start(Connections {
        stream_write_timeout: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let alice = served.s.token("alice");
    let mut direct = served.connect_unread().await;
    open_stream(&served, &mut direct, "/v1/me/events", &alice, "alice").await;
    let mut pooled = served.connect_unread().await;
    let (status, _) = exchange(&mut pooled, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    open_stream(&served, &mut pooled, "/v1/me/events", &alice, "alice").await;
    served.fill("alice", &direct).await;
    served.fill("alice", &pooled).await;
    served.wait_streams_of("alice", 0, ENDS_WITHIN).await;
    for raw in [&mut direct, &mut pooled] {
        assert_eq!(
            assert_ended(ended_within(raw, ENDS_WITHIN).await, "a stalled stream"),
            Ended::Reset
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_stream_ends_when_its_session_is_revoked_wherever_it_resumed() {
    let served = Served::start(limits()).await;
    let (admin, _) = served.login("admin").await;
    // Resumed past anything committed: no `sessions_ended` record reaches it.
    let mut raw = served.connect().await;
    open_stream(
        &served,
        &mut raw,
        "/v1/changes/stream?after=1000000",
        &admin,
        "admin",
    )
    .await;

    let mut other = served.connect().await;
    let (status, body) = exchange(
        &mut other,
        "POST",
        "/v1/users/admin/sessions/revoke",
        Some(&admin),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The body ends (its last chunk); the connection may serve more requests.
    let seen = read_until(&mut raw, "\r\n0\r\n\r\n").await;
    assert!(
        seen.contains("event: session\ndata: {\"reason\":\"revoked\"}\n\n"),
        "{seen}"
    );
    assert!(!seen.contains("event: change"), "{seen}");
    served.wait_streams_of("admin", 0, ENDS_WITHIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_within_its_deadline_whatever_clients_hold() {
    // Only the shutdown deadline can end these connections in time.
    let mut served = Served::start(Connections {
        shutdown_timeout: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let alice = served.s.token("alice");
    let mut held = Vec::new();
    let mut head = served.connect().await;
    head.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    held.push(("a half-sent head", head));
    let mut body = served.connect().await;
    body.write_all(
        b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"username",
    )
    .await
    .unwrap();
    held.push(("a half-sent body", body));
    let mut stream = served.connect_unread().await;
    open_stream(&served, &mut stream, "/v1/me/events", &alice, "alice").await;
    served.fill("alice", &stream).await;
    held.push(("a stalled stream", stream));
    let mut pooled = served.connect_unread().await;
    let (status, _) = exchange(&mut pooled, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    open_stream(&served, &mut pooled, "/v1/me/events", &alice, "alice").await;
    served.fill("alice", &pooled).await;
    held.push(("a stalled stream on a used connection", pooled));
    // Let the server see the half-sent requests.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let served_task = served.shut_down();
    let result = tokio::time::timeout(ENDS_WITHIN, served_task)
        .await
        .expect("run() returns within the shutdown deadline");
    result.unwrap().unwrap();
    for (what, raw) in &mut held {
        assert_ended(ended_within(raw, ENDS_WITHIN).await, what);
    }
    assert!(
        TcpStream::connect(served.addr).await.is_err(),
        "no longer accepting"
    );
}
