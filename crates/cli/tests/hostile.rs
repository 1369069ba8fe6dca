//! A hostile client against a real `permsync serve` process: what an attacker or a
//! bad network can do from a second process on loopback, with no account unless a
//! test says so, and the bound PROTOCOL §3 and §5 promise for each. Silent and
//! dribbling sockets, a connection flood, streams that never read, made-up methods,
//! login storms, SIGTERM while clients hold connections, and a token signed with
//! the key read out of the database file.
//!
//! Timeouts are configured to a second or two so the suite stays short; every bound
//! asserted adds [`SLACK`], as it only proves that something ends. Linux only: the
//! server's side of a connection and its peak memory are read from `/proc`.

use std::io::{BufRead, BufReader, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_permsync");

/// Added to every configured timeout: the bounds prove that something ends, on a
/// machine that may be busy with other work.
const SLACK: Duration = Duration::from_secs(4);

/// "Closed at once" (PROTOCOL §5: within about a second), with room for a busy machine.
const AT_ONCE: Duration = Duration::from_secs(3);

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn db_file(&self) -> PathBuf {
        self.dir.path().join("p.db")
    }

    /// The database file and the WAL files beside it that exist now.
    fn db_files(&self) -> Vec<PathBuf> {
        let db = self.db_file().display().to_string();
        [db.clone(), format!("{db}-wal"), format!("{db}-shm")]
            .into_iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect()
    }

    /// The binary, run under the usual umask of 022: a file it creates is private only
    /// if permsync makes it so.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("umask 022 && exec \"$0\" \"$@\"")
            .arg(BIN)
            .args(args)
            .env(
                "PERMSYNC_DB",
                format!("sqlite://{}", self.db_file().display()),
            )
            .env_remove("PERMSYNC_ADDR")
            .env_remove("PERMSYNC_CONFIG");
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn user_with_password(&self, user: &str, password: &str) {
        let mut child = self
            .cmd(&["user", "add", user, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        assert!(child.wait().unwrap().success(), "user add {user}");
    }

    /// `admin`, who holds `permsync:admin`, and `reader`, whose streams the tests hold.
    fn admin_and_reader(&self) {
        self.ok(&["user", "add", "admin"]);
        self.ok(&["grant", "admin", "permsync:admin"]);
        self.user_with_password("reader", "reader-password");
    }

    /// An access token from `permsync token`, valid for `ttl` seconds.
    fn token(&self, user: &str, ttl: u64) -> String {
        self.ok(&["token", user, "--ttl", &ttl.to_string()])
            .trim()
            .to_string()
    }

    /// Starts `serve` on a free port with `config` as its configuration file (none
    /// if empty); its log goes to a file that failure messages quote.
    fn serve(&self, config: &str) -> Server {
        self.try_serve(config)
            .unwrap_or_else(|log| panic!("the server exited before listening:\n{log}"))
    }

    /// As [`Env::serve`], or the server's log if it exited before listening.
    fn try_serve(&self, config: &str) -> Result<Server, String> {
        let mut args = vec!["serve".to_string(), "--addr".into(), "127.0.0.1:0".into()];
        if !config.is_empty() {
            let path = self.dir.path().join("permsync.toml");
            std::fs::write(&path, config).unwrap();
            args.extend(["--config".into(), path.display().to_string()]);
        }
        let log = self.dir.path().join("server.log");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = self
            .cmd(&args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(base) = line.strip_prefix("permsync listening on ") {
                        break base.to_string();
                    }
                }
                _ => {
                    let _ = child.wait();
                    return Err(std::fs::read_to_string(&log).unwrap_or_default());
                }
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let addr = SocketAddr::from_str(base.strip_prefix("http://").unwrap()).unwrap();
        Ok(Server {
            child,
            addr,
            base,
            log,
        })
    }
}

struct Server {
    child: Child,
    addr: SocketAddr,
    base: String,
    log: PathBuf,
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The server's peak resident memory (VmHWM), in bytes.
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kib * 1024
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM");
    }

    /// The exit status, if the process ends within `limit`.
    fn exits_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
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
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A client whose connections come from `source` (loopback has the whole 127/8), so
/// that limits per client address see several clients.
fn http_from(source: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .local_address(IpAddr::V4(source))
        .build()
        .unwrap()
}

/// Reads and drops what the server sends until it closes the connection (end of
/// stream or reset): how long that took, or `None` if it was still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let until_closed = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, until_closed)
        .await
        .ok()
        .map(|()| started.elapsed())
}

/// What a request on a fresh connection got.
#[derive(Debug)]
enum Answer {
    /// The status and the response head.
    Status(u16, String),
    /// The server closed the connection without answering.
    Closed,
    /// Nothing within the limit.
    Silence,
}

/// Sends `request` (a whole HTTP/1.1 request) on a fresh connection and reads the
/// response head.
async fn exchange(addr: SocketAddr, request: &str, limit: Duration) -> Answer {
    let attempt = async {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            return Answer::Closed;
        };
        if stream.write_all(request.as_bytes()).await.is_err() {
            return Answer::Closed;
        }
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Answer::Closed,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&head[..end]).to_string();
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                return Answer::Status(status, head);
            }
        }
    };
    tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or(Answer::Silence)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: permsync\r\nConnection: close\r\n\r\n")
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A TCP connection as the kernel shows it in `/proc/net/tcp`.
#[derive(Debug, Clone, Copy)]
struct KernelSocket {
    /// `st`: 01 is ESTABLISHED.
    state: u8,
    /// Bytes written and not yet acknowledged by the peer.
    send_queue: u64,
}

const ESTABLISHED: u8 = 0x01;

fn proc_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    // The kernel prints the address in network byte order as one hex number.
    let ip = u32::from_be(u32::from_str_radix(ip, 16).ok()?);
    Some(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::from(ip)),
        u16::from_str_radix(port, 16).ok()?,
    ))
}

/// The socket whose local address is `local` and whose peer is `peer`, if the kernel
/// still has one.
fn kernel_socket(local: SocketAddr, peer: SocketAddr) -> Option<KernelSocket> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || proc_addr(f[1])? != local || proc_addr(f[2])? != peer {
            return None;
        }
        let (tx, _) = f[4].split_once(':')?;
        Some(KernelSocket {
            state: u8::from_str_radix(f[3], 16).ok()?,
            send_queue: u64::from_str_radix(tx, 16).ok()?,
        })
    })
}

/// A client that sends its request and then never reads. Its receive buffer is
/// 1 KiB, and its maximum segment size small: the kernel sizes the server's send
/// buffer from the segment size, to over a megabyte with loopback's 64 KiB segments,
/// and with small segments the buffer fills after a few hundred events rather than
/// tens of thousands. The socket stays open until dropped.
struct NeverReads {
    _socket: socket2::Socket,
    local: SocketAddr,
    server: SocketAddr,
    what: &'static str,
}

impl NeverReads {
    fn open(server: SocketAddr, request: &str, what: &'static str) -> Self {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        socket.set_recv_buffer_size(1024).unwrap();
        socket.set_tcp_mss(536).unwrap();
        socket.connect(&server.into()).unwrap();
        (&socket).write_all(request.as_bytes()).unwrap();
        let local = socket.local_addr().unwrap().as_socket().unwrap();
        NeverReads {
            _socket: socket,
            local,
            server,
            what,
        }
    }

    /// The server's end of this connection.
    fn server_end(&self) -> Option<KernelSocket> {
        kernel_socket(self.server, self.local)
    }

    /// Whether the server still holds the connection open.
    fn held(&self) -> bool {
        self.server_end().is_some_and(|s| s.state == ESTABLISHED)
    }

    /// Bytes the server wrote that this client has not taken.
    fn unsent(&self) -> u64 {
        self.server_end().map_or(0, |s| s.send_queue)
    }
}

/// The stream request a direct connection makes (its first request).
fn events_request(token: &str) -> String {
    format!("GET /v1/me/events HTTP/1.1\r\nHost: permsync\r\nAuthorization: Bearer {token}\r\n\r\n")
}

/// The same stream asked for on a connection that served a request before, which
/// hyper serves rather than the direct path.
fn events_after_another_request(token: &str) -> String {
    format!(
        "GET /healthz HTTP/1.1\r\nHost: permsync\r\n\r\n{}",
        events_request(token)
    )
}

/// The two never-reading event streams of `token`: on the direct path and on hyper's.
fn never_reading_event_streams(server: SocketAddr, token: &str) -> Vec<NeverReads> {
    vec![
        NeverReads::open(server, &events_request(token), "direct event stream"),
        NeverReads::open(
            server,
            &events_after_another_request(token),
            "event stream on a used connection",
        ),
    ]
}

/// Aborts its task when dropped.
struct Background(tokio::task::JoinHandle<()>);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Raises `user`'s revision again and again, one event on each of their streams
/// each time, until dropped.
struct EventPump {
    _task: Background,
    /// Events published so far.
    published: Arc<AtomicU64>,
}

fn pump_events(server: &Server, admin_token: &str, user: &str) -> EventPump {
    let (url, token, body) = (
        server.url("/v1/invalidate"),
        admin_token.to_string(),
        json!({"users": [user]}),
    );
    let published = Arc::new(AtomicU64::new(0));
    let count = published.clone();
    let task = Background(tokio::spawn(async move {
        let client = http();
        loop {
            let r = client
                .post(&url)
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await;
            if r.is_ok_and(|r| r.status() == 200) {
                count.fetch_add(1, Ordering::Relaxed);
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }));
    EventPump {
        _task: task,
        published,
    }
}

/// Waits until the server's socket of each stream is full: what it holds unsent
/// has stopped growing while events went on (with `events`), or for half a second
/// (without: a stream with more to send than any socket buffer), so its next write
/// waits for room. A stream found full is not looked at again: the server may close
/// it while another fills.
async fn wait_until_full(streams: &[NeverReads], events: Option<&EventPump>) {
    let published = || events.map_or(0, |p| p.published.load(Ordering::Relaxed));
    // Per stream: its unsent bytes, when they last changed and the events
    // published by then.
    let mut last: Vec<(u64, Instant, u64)> = streams
        .iter()
        .map(|_| (0, Instant::now(), published()))
        .collect();
    let mut full = vec![false; streams.len()];
    let deadline = Instant::now() + Duration::from_secs(30);
    while full.contains(&false) {
        assert!(
            Instant::now() < deadline,
            "the streams did not fill within 30 s: {:?}",
            streams
                .iter()
                .map(|s| (s.what, s.unsent()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        for (i, s) in streams.iter().enumerate() {
            if full[i] {
                continue;
            }
            assert!(
                s.held(),
                "the server closed the {} before it filled",
                s.what
            );
            let unsent = s.unsent();
            let (before, since, published_then) = last[i];
            if unsent != before {
                last[i] = (unsent, Instant::now(), published());
                continue;
            }
            full[i] = unsent >= 4096
                && since.elapsed() >= Duration::from_millis(500)
                && (events.is_none() || published() >= published_then + 5);
        }
    }
}

/// Waits up to `limit` for the server to close every stream; panics naming the ones
/// it still holds.
async fn assert_all_closed_within(streams: &[NeverReads], limit: Duration, after: &str) {
    let started = Instant::now();
    while streams.iter().any(NeverReads::held) {
        if started.elapsed() > limit {
            let held: Vec<String> = streams
                .iter()
                .filter(|s| s.held())
                .map(|s| format!("{} ({} bytes unsent)", s.what, s.unsent()))
                .collect();
            panic!(
                "the server still holds {} {:.1} s after {after}",
                held.join(", "),
                limit.as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_slow_and_idle_connections_are_closed_within_their_timeouts() {
    let e = Env::new();
    let server = e.serve("[connections]\nheader_timeout = 1\nidle_timeout = 1\n");
    let addr = server.addr;
    let limit = Duration::from_secs(1) + SLACK;

    // Each case sends what it sends, then waits for the server to close.
    async fn sends(addr: SocketAddr, bytes: &'static [u8], limit: Duration) -> Option<Duration> {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        closed_within(&mut stream, limit).await
    }
    async fn dribbles(addr: SocketAddr, limit: Duration) -> Option<Duration> {
        // A byte every 100 ms of a head that never ends: each byte arrives well
        // within any per-read timeout, the whole head never does.
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut read, mut write) = stream.into_split();
        let started = Instant::now();
        let writer = Background(tokio::spawn(async move {
            let _ = write
                .write_all(b"GET /v1/me/permissions HTTP/1.1\r\nX-Slow: ")
                .await;
            while write.write_all(b"a").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(limit, async {
            while !matches!(read.read(&mut buf).await, Ok(0) | Err(_)) {}
        })
        .await;
        drop(writer);
        closed.ok().map(|()| started.elapsed())
    }
    async fn idles_after_a_request(addr: SocketAddr, limit: Duration) -> Option<Duration> {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: permsync\r\n\r\n")
            .await
            .unwrap();
        // The answer first (`{"status":"ok"}`, so the response ends with `}`), then
        // nothing: the connection is idle from here.
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !seen.ends_with(b"}") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the connection closed before /healthz was answered");
            seen.extend_from_slice(&buf[..n]);
        }
        closed_within(&mut stream, limit).await
    }

    let (silent, half_head, prefix, dribbled, idle) = tokio::join!(
        sends(addr, b"", limit),
        sends(
            addr,
            b"GET /v1/me/permissions HTTP/1.1\r\nHost: permsync\r\n",
            limit
        ),
        sends(addr, b"GET /v1/me/e", limit),
        dribbles(addr, limit),
        idles_after_a_request(addr, limit),
    );
    let cases = [
        ("a silent socket", silent),
        ("a half-sent head", half_head),
        ("the 12-byte prefix `GET /v1/me/e`", prefix),
        ("a head sent a byte at a time", dribbled),
        ("an idle keep-alive connection", idle),
    ];
    let open: Vec<&str> = cases
        .iter()
        .filter(|(_, closed)| closed.is_none())
        .map(|(what, _)| *what)
        .collect();
    assert!(
        open.is_empty(),
        "still open {:.0} s later (header_timeout and idle_timeout are 1 s): {}",
        limit.as_secs_f64(),
        open.join("; ")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_flood_keeps_healthz_answering_and_service_resumes() {
    let e = Env::new();
    // The flood's sockets stay silent for longer than the test takes.
    let server = e.serve("[connections]\nmax_connections = 50\nheader_timeout = 30\n");
    let addr = server.addr;
    // Twice the cap, and fewer than the cap plus the 64 over-cap connections handled
    // at once, so every over-cap request has a slot to be answered in.
    let mut flood = Vec::new();
    for _ in 0..100 {
        flood.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    for _ in 0..3 {
        match exchange(addr, &get("/healthz"), Duration::from_secs(5)).await {
            Answer::Status(200, _) => {}
            other => panic!("/healthz during the flood: {other:?}"),
        }
    }
    match exchange(addr, &get("/v1/me/permissions"), Duration::from_secs(5)).await {
        Answer::Closed => {}
        Answer::Status(503, head) => {
            assert_eq!(header(&head, "retry-after"), Some("1"), "{head}");
            assert_eq!(
                header(&head, "content-type"),
                Some("application/problem+json")
            );
        }
        other => panic!(
            "over max_connections, a request other than /healthz is refused (503 or closed), \
             not {other:?}"
        ),
    }

    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Served again: the request reaches the API, which wants a token.
        match exchange(addr, &get("/v1/me/permissions"), Duration::from_secs(5)).await {
            Answer::Status(401, _) => break,
            other => assert!(
                Instant::now() < deadline,
                "5 s after the flood ended, a request still got {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_whose_socket_accepts_nothing_is_closed_after_the_write_timeout() {
    let e = Env::new();
    e.admin_and_reader();
    let server = e.serve("[connections]\nstream_write_timeout = 2\n");
    let admin = e.token("admin", 600);
    let reader = e.token("reader", 600);
    let streams = never_reading_event_streams(server.addr, &reader);
    let events = pump_events(&server, &admin, "reader");
    wait_until_full(&streams, Some(&events)).await;
    // The timeout runs from the first write the socket does not take, a little after
    // it was seen full.
    assert_all_closed_within(
        &streams,
        Duration::from_secs(2) + SLACK,
        "their sockets filled (stream_write_timeout is 2 s)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_never_reading_stream_is_closed_at_once_on_logout() {
    let e = Env::new();
    e.admin_and_reader();
    // Default timeouts: nothing but the session's end closes these streams in time.
    let server = e.serve("");
    let admin = e.token("admin", 600);
    let client = http();
    let pair: Value = client
        .post(server.url("/v1/auth/login"))
        .json(&json!({"username": "reader", "password": "reader-password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let streams = never_reading_event_streams(server.addr, pair["access_token"].as_str().unwrap());
    let events = pump_events(&server, &admin, "reader");
    wait_until_full(&streams, Some(&events)).await;
    drop(events);
    let logout = client
        .post(server.url("/v1/auth/logout"))
        .json(&json!({"refresh_token": pair["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    assert_all_closed_within(&streams, AT_ONCE, "the logout's 204").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_never_reading_changes_stream_ends_at_once_when_its_token_expires() {
    let e = Env::new();
    e.admin_and_reader();
    let server = e.serve("");
    let admin = e.token("admin", 600);
    // A changelog larger than the socket can take: the stream is stuck writing it.
    let client = http();
    let reason = "r".repeat(1000);
    for _ in 0..200 {
        let r = client
            .post(server.url("/v1/invalidate"))
            .bearer_auth(&admin)
            .json(&json!({"users": ["reader"], "reason": reason}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let ttl = 8;
    let asked = Instant::now();
    let short = e.token("admin", ttl);
    let issued = Instant::now();
    let streams = vec![NeverReads::open(
        server.addr,
        &format!(
            "GET /v1/changes/stream HTTP/1.1\r\nHost: permsync\r\nAuthorization: Bearer {short}\r\n\r\n"
        ),
        "changes stream",
    )];
    wait_until_full(&streams, None).await;
    // `exp` is whole seconds: the token expires between ttl - 1 s after it was asked
    // for and ttl after it was printed.
    let expiry = issued + Duration::from_secs(ttl);
    tokio::time::sleep_until(
        (asked + Duration::from_secs(ttl) - Duration::from_millis(1500)).into(),
    )
    .await;
    assert!(
        streams[0].held(),
        "the changes stream closed before its token expired"
    );
    tokio::time::sleep_until(expiry.into()).await;
    assert_all_closed_within(&streams, AT_ONCE, "its token expired").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn made_up_methods_create_no_metrics_series() {
    let e = Env::new();
    let server = e.serve("");
    let client = http();
    // Every series a normal request makes exists before the measure.
    metrics_text(&client, &server).await;
    client
        .get(server.url("/v1/me/permissions"))
        .send()
        .await
        .unwrap();
    let before = metrics_text(&client, &server).await;

    // 3,000 pipelined requests, each with a method of its own.
    const REQUESTS: usize = 3000;
    let requests: Vec<String> = (0..REQUESTS)
        .map(|i| {
            let token = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 44;
            format!("X{token:06}M /v1/me/permissions HTTP/1.1\r\nHost: permsync\r\n\r\n")
        })
        .collect();
    let mut answered = 0;
    while answered < REQUESTS {
        // The server may close a connection early; the rest go on a new one.
        let stream = TcpStream::connect(server.addr).await.unwrap();
        let (mut read, mut write) = stream.into_split();
        let batch = requests[answered..].concat();
        let _writer = Background(tokio::spawn(async move {
            let _ = write.write_all(batch.as_bytes()).await;
            // Keep the writing half open until the reader is done.
            std::future::pending::<()>().await;
        }));
        let (mut seen, mut counted_to, mut on_this) = (Vec::new(), 0, 0);
        let mut buf = vec![0u8; 64 * 1024];
        while answered + on_this < REQUESTS {
            let n = tokio::time::timeout(Duration::from_secs(10), read.read(&mut buf))
                .await
                .expect("the server stopped answering the pipelined requests")
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            // Responses start with a status line; bodies never contain one.
            let from = counted_to;
            on_this += seen[from..]
                .windows(9)
                .filter(|w| *w == b"HTTP/1.1 ")
                .count();
            counted_to = seen.len().saturating_sub(8).max(from);
        }
        assert!(on_this > 0, "a connection answered none of the requests");
        answered += on_this;
    }
    let after = metrics_text(&client, &server).await;
    let grown = after.len() as i64 - before.len() as i64;
    eprintln!("/metrics grew by {grown} bytes after {REQUESTS} made-up methods");
    assert!(
        grown < 512,
        "/metrics grew by {grown} bytes ({} to {}) after {REQUESTS} made-up methods",
        before.len(),
        after.len()
    );
    assert!(
        !after.lines().any(|l| l.contains("X0") || l.contains("M\"")),
        "a client's method became a label"
    );
}

async fn metrics_text(client: &reqwest::Client, server: &Server) -> String {
    let r = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_storm_hashes_a_few_passwords_at_a_time() {
    let e = Env::new();
    let server = e.serve("");
    // 240 logins for unknown users, 8 from each of 30 addresses: within the failure
    // limit of each address, so every one of them asks for a password hash.
    let attempts = (0..240).map(|i| {
        let client = http_from(Ipv4Addr::new(127, 0, 0, 2 + (i % 30) as u8));
        let url = server.url("/v1/auth/login");
        async move {
            match client
                .post(url)
                .json(&json!({"username": format!("nobody{i}"), "password": "guess"}))
                .send()
                .await
            {
                Ok(r) => (r.status().as_u16(), r.headers().contains_key("retry-after")),
                // No answer within the client's minute.
                Err(_) => (0, false),
            }
        }
    });
    let started = Instant::now();
    let answers = join_all(attempts).await;
    let peak = server.peak_rss();
    let statuses = count(answers.iter().map(|a| a.0));
    eprintln!(
        "login storm: peak RSS {} MiB, answered in {:.1} s: {statuses:?}",
        peak >> 20,
        started.elapsed().as_secs_f64(),
    );
    // Unbounded, each concurrent Argon2 hash takes about 19 MiB.
    assert!(
        peak < 400 << 20,
        "the server's peak RSS reached {} MiB during a storm of 240 logins: {statuses:?}",
        peak >> 20
    );
    for (status, retry_after) in &answers {
        assert!(
            *status == 401 || (*status == 503 && *retry_after),
            "a login in the storm got {status} (retry-after: {retry_after}; 0 is no answer \
             within a minute): {statuses:?}"
        );
    }
    let health = http().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn simultaneous_wrong_passwords_get_no_more_checks_than_the_failure_limit() {
    let e = Env::new();
    e.user_with_password("victim", "correct-horse");
    let server = e.serve("");
    let attempts = (0..100).map(|i| {
        let client = http_from(Ipv4Addr::new(127, 0, 0, 2 + (i % 5) as u8));
        let url = server.url("/v1/auth/login");
        async move {
            let r = client
                .post(url)
                .json(&json!({"username": "victim", "password": format!("guess-{i}")}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.headers().contains_key("retry-after"))
        }
    });
    let answers = join_all(attempts).await;
    let statuses = count(answers.iter().map(|a| a.0));
    for (status, retry_after) in &answers {
        assert!(
            matches!(status, 401 | 429 | 503),
            "a wrong password got {status}: {statuses:?}"
        );
        assert!(
            *status == 401 || *retry_after,
            "a {status} without Retry-After"
        );
    }
    let checked = answers.iter().filter(|a| a.0 == 401).count();
    assert!(
        checked <= 10,
        "{checked} of 100 simultaneous guesses were checked against a limit of 10 \
         failures: {statuses:?}"
    );
}

/// How often each status occurs, in order of status.
fn count(statuses: impl Iterator<Item = u16>) -> Vec<(u16, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for s in statuses {
        *counts.entry(s).or_insert(0) += 1;
    }
    counts.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_within_the_shutdown_timeout_whatever_clients_hold() {
    let e = Env::new();
    e.admin_and_reader();
    // Only the shutdown deadline may end these connections in time.
    let mut server = e.serve(
        "[connections]\nshutdown_timeout = 2\nheader_timeout = 60\nbody_timeout = 60\n\
         stream_write_timeout = 60\n",
    );
    let admin = e.token("admin", 600);
    let reader = e.token("reader", 600);
    let mut half_head = TcpStream::connect(server.addr).await.unwrap();
    half_head
        .write_all(b"GET /v1/me/permissions HTTP/1.1\r\nHost: permsync\r\n")
        .await
        .unwrap();
    let mut half_body = TcpStream::connect(server.addr).await.unwrap();
    half_body
        .write_all(
            b"POST /v1/auth/login HTTP/1.1\r\nHost: permsync\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n{\"username\":",
        )
        .await
        .unwrap();
    let streams = never_reading_event_streams(server.addr, &reader);
    let events = pump_events(&server, &admin, "reader");
    wait_until_full(&streams, Some(&events)).await;
    drop(events);

    let started = Instant::now();
    server.sigterm();
    let limit = Duration::from_secs(2) + SLACK;
    let status = server.exits_within(limit);
    assert!(
        status.is_some(),
        "the server had not exited {:.0} s after SIGTERM (shutdown_timeout is 2 s), \
         holding a half-sent head, a half-sent body and two never-reading streams",
        limit.as_secs_f64()
    );
    eprintln!(
        "SIGTERM to exit: {:.2} s ({})",
        started.elapsed().as_secs_f64(),
        status.unwrap()
    );
    drop((half_head, half_body));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_signed_with_the_key_from_the_database_file_is_refused() {
    let e = Env::new();
    e.ok(&["user", "add", "admin"]);
    e.ok(&["grant", "admin", "permsync:admin"]);
    e.ok(&["user", "add", "bob"]);
    let server = e.serve("");

    // What anyone who can read the file can do: take the signing key out of it.
    let url = format!("sqlite://{}?mode=ro", e.db_file().display());
    let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let (kid, private_der, public): (String, Vec<u8>, Vec<u8>) = sqlx::query_as(
        "SELECT kid, private_der, public FROM signing_keys WHERE retired_at IS NULL \
         ORDER BY created_at DESC LIMIT 1",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    let client = http();
    let jwks: Value = client
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        jwks["keys"][0]["kid"], kid,
        "the key read is the one that signs"
    );
    let keys = permsync_auth::Tokens::new(
        vec![permsync_auth::KeyMaterial {
            kid,
            private_der,
            public,
            retired: false,
        }],
        "permsync".into(),
        "permsync".into(),
        Vec::new(),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let forged = keys.sign(&keys.access_claims("admin", "anything", 0, now, 300, None));

    let r = client
        .post(server.url("/v1/users/bob/grants"))
        .bearer_auth(&forged)
        .json(&json!({"permission": "permsync:admin"}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let challenge = r.headers().get("www-authenticate").cloned();
    assert_eq!(
        status,
        401,
        "a token of a session that never existed: {}",
        r.text().await.unwrap()
    );
    assert!(challenge.is_some(), "a 401 carries WWW-Authenticate");
    let bob: Value = client
        .get(server.url("/v1/users/bob"))
        .bearer_auth(e.token("admin", 60))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bob["grants"], json!([]), "{bob}");
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn the_database_files_are_readable_by_their_owner_only() {
    let e = Env::new();
    // Created by the command line first, then opened (with its WAL files) by the server.
    e.ok(&["user", "add", "admin"]);
    let modes = |e: &Env| -> Vec<(PathBuf, u32)> {
        e.db_files()
            .into_iter()
            .map(|p| (p.clone(), mode(&p)))
            .collect()
    };
    let by_cli = modes(&e);
    let server = e.serve("");
    let by_server = modes(&e);
    assert_eq!(
        by_server.len(),
        3,
        "the database and its WAL files: {by_server:?}"
    );
    for (path, mode) in by_cli.iter().chain(&by_server) {
        assert_eq!(*mode, 0o600, "{} is {mode:o}", path.display());
    }
    drop(server);
}

#[test]
fn serve_refuses_a_database_that_others_can_read() {
    let e = Env::new();
    e.ok(&["user", "add", "admin"]);
    for path in e.db_files() {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let file = e.db_file().display().to_string();
    match e.try_serve("") {
        Ok(server) => panic!("serve started on a database mode 644:\n{}", server.log()),
        Err(log) => {
            assert!(log.contains(&file), "the message names the file: {log}");
            assert!(log.contains("chmod 600"), "the message says the fix: {log}");
            assert!(!log.contains("panicked"), "{log}");
        }
    }
    // Told otherwise, it serves.
    drop(e.serve("allow_readable_store = true\n"));
}
