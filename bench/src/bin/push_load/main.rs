//! Load on the live event streams: many idle SSE connections to one permsync
//! server process, and how fast changes reach them.
//!
//! `cargo run --release -p permsync-bench --bin push_load -- [--idle 10000] [--max 19800] [--members 20000] [--grants 1000] [--rounds 5]`
//!
//! The one command plays three parts, by re-running its own executable:
//! - the driver (no subcommand) builds a SQLite database with `--members` users
//!   (the first `--idle` bound to role `team`, all of them to role `all`), starts
//!   the server, runs the phases below and prints a Markdown summary;
//! - `serve DB_URL` is the server: `permsync_server::run` with the
//!   default configuration, in its own process so its RSS can be read from
//!   `/proc`, listening as `permsync serve` does (`permsync_server::bind`);
//! - `clients ADDR TOKENS FROM COUNT` holds COUNT SSE connections over raw TCP
//!   with a minimal HTTP/1.1 request and an incremental de-chunking SSE parser
//!   (a ~512-byte buffer per connection), and answers commands on stdin.
//!
//! A process may hold at most 20,000 open files on these machines (the hard
//! limit, which cannot be raised), so one server process holds at most ~19.9k
//! streams, and clients are split over processes of at most 19,000 connections.
//!
//! Phases: (A) open `--idle` connections and read the server's RSS per
//! connection; (B) with those idle, `--grants` single-user grants over the admin
//! API, timing request-sent → event-read on one probe connection; (C) role edits
//! of `team`, timing request-sent → the last of its online members read the
//! event, then the same edits with the client processes stopped (SIGSTOP), timing
//! until the server counted every frame sent: the server alone on the cores, as
//! with its clients on other machines (the clients then resume and must still
//! read every event); (D) a reconnect storm of the idle connections, timing
//! until every one has read its first event again; (E) grow to `--max` connections, RSS again,
//! and role edits of `all`, whose `--members` members are partly online;
//! (F) SIGTERM, timing the graceful shutdown with every stream open.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use permsync_core::{Permission, RoleName, UserId};
use permsync_store::{NewBinding, NewGrant, SqliteStore, Store};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Semaphore};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connections per client process: below the 20,000 open files a process may hold.
const PER_CLIENT_PROCESS: usize = 19_000;
/// Connections being opened at once in the initial ramp (not in the storm).
const RAMP_CONCURRENCY: usize = 256;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]).await,
        Some("clients") => clients(&args[1..]).await,
        _ => drive(&args).await,
    }
}

// ---------------------------------------------------------------- server part

async fn serve(args: &[String]) -> Result<(), BoxError> {
    let db = args.first().ok_or("serve DB_URL")?;
    let limit = permsync_server::raise_open_files_limit()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(db).await?);
    let state = permsync_server::AppState::open(store, permsync_server::ServerConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    let listener = permsync_server::bind("127.0.0.1:0").await?;
    println!("listening {} nofile {limit}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let shutdown = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    permsync_server::run(listener, state, shutdown).await?;
    Ok(())
}

// ---------------------------------------------------------------- client part

/// What one connection has seen, readable by the process's command loop.
#[derive(Default)]
struct Stat {
    revision: AtomicU64,
    /// When the latest permissions event was read (Unix µs).
    at_us: AtomicU64,
    /// The reconnect generation of the connection's latest first event.
    synced_gen: AtomicU64,
    failed: AtomicBool,
}

/// An incremental reader of one SSE response: HTTP head, chunked framing, and
/// the `data: {"revision":N}` lines; everything else is skipped.
struct SseReader {
    state: ReadState,
    head: Vec<u8>,
    line: Vec<u8>,
}

enum ReadState {
    Head,
    Size(u64, bool),
    Data(u64),
    DataEnd(u8),
    Raw,
    Done,
}

impl SseReader {
    fn new() -> Self {
        SseReader {
            state: ReadState::Head,
            head: Vec::new(),
            line: Vec::new(),
        }
    }

    /// Feeds bytes; calls `on_revision` per permissions event. Err on a non-200
    /// answer, a `session` event or the end of the body.
    fn feed(&mut self, input: &[u8], on_revision: &mut impl FnMut(u64)) -> Result<(), String> {
        for &b in input {
            match &mut self.state {
                ReadState::Head => {
                    self.head.push(b);
                    if self.head.len() > 4096 {
                        return Err("response head too long".into());
                    }
                    if self.head.ends_with(b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&self.head).to_ascii_lowercase();
                        if !head.starts_with("http/1.1 200") {
                            return Err(head.lines().next().unwrap_or("").to_string());
                        }
                        self.state = if head.contains("transfer-encoding: chunked") {
                            ReadState::Size(0, false)
                        } else {
                            ReadState::Raw
                        };
                        self.head = Vec::new();
                    }
                }
                ReadState::Size(n, ext) => match b {
                    b'\n' if *n == 0 => self.state = ReadState::Done,
                    b'\n' => self.state = ReadState::Data(*n),
                    b'\r' => {}
                    b';' => *ext = true,
                    _ if *ext => {}
                    _ => {
                        let d = (b as char).to_digit(16).ok_or("bad chunk size")?;
                        *n = *n * 16 + u64::from(d);
                    }
                },
                ReadState::Data(left) => {
                    *left -= 1;
                    if *left == 0 {
                        self.state = ReadState::DataEnd(2);
                    }
                    self.sse_byte(b, on_revision)?;
                }
                ReadState::DataEnd(left) => {
                    *left -= 1;
                    if *left == 0 {
                        self.state = ReadState::Size(0, false);
                    }
                }
                ReadState::Raw => self.sse_byte(b, on_revision)?,
                ReadState::Done => return Err("the body ended".into()),
            }
        }
        if matches!(self.state, ReadState::Done) {
            return Err("the body ended".into());
        }
        Ok(())
    }

    fn sse_byte(&mut self, b: u8, on_revision: &mut impl FnMut(u64)) -> Result<(), String> {
        if b != b'\n' {
            if self.line.len() < 256 {
                self.line.push(b);
            }
            return Ok(());
        }
        if let Some(rest) = self.line.strip_prefix(b"data: {\"revision\":") {
            let digits: String = rest
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .map(|&c| c as char)
                .collect();
            on_revision(digits.parse().map_err(|_| "bad revision")?);
        } else if self.line.starts_with(b"event: session") {
            return Err("session ended".into());
        }
        self.line.clear();
        Ok(())
    }
}

/// Reads one connection until the generation changes (Ok) or it fails (Err).
async fn stream_once(
    addr: SocketAddr,
    token: &str,
    stat: &Stat,
    generation: u64,
    gen_rx: &mut watch::Receiver<u64>,
    ramp: Option<&Semaphore>,
) -> Result<(), String> {
    let permit = match ramp {
        Some(s) => Some(s.acquire().await.map_err(|e| e.to_string())?),
        None => None,
    };
    let mut sock = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET /v1/me/events HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    );
    sock.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut reader = SseReader::new();
    let mut buf = [0u8; 512];
    let mut permit = permit;
    let mut first = true;
    loop {
        tokio::select! {
            read = sock.read(&mut buf) => {
                let n = read.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("closed".into());
                }
                reader.feed(&buf[..n], &mut |revision| {
                    stat.revision.store(revision, Ordering::Release);
                    stat.at_us.store(now_us(), Ordering::Release);
                    if first {
                        first = false;
                        stat.synced_gen.store(generation, Ordering::Release);
                    }
                })?;
                if !first {
                    permit.take();
                }
            }
            _ = gen_rx.changed() => return Ok(()),
        }
    }
}

async fn connection(
    addr: SocketAddr,
    token: String,
    stats: Arc<Vec<Stat>>,
    i: usize,
    mut gen_rx: watch::Receiver<u64>,
    ramp: Arc<Semaphore>,
) {
    let mut use_ramp = true;
    loop {
        let generation = *gen_rx.borrow_and_update();
        let ramp = use_ramp.then_some(ramp.as_ref());
        match stream_once(addr, &token, &stats[i], generation, &mut gen_rx, ramp).await {
            Ok(()) => stats[i].failed.store(false, Ordering::Release),
            Err(e) => {
                if !stats[i].failed.swap(true, Ordering::AcqRel) && i < 3 {
                    eprintln!("connection {i}: {e}");
                }
                // Failed: wait for the next generation rather than spin.
                if gen_rx.changed().await.is_err() {
                    return;
                }
            }
        }
        use_ramp = false;
    }
}

/// Waits until `done(stat)` holds for every connection (or `limit` passes);
/// returns the latest `at_us` among them and how many are missing.
async fn wait_all(stats: &[Stat], limit: Duration, done: impl Fn(&Stat) -> bool) -> (u64, usize) {
    let deadline = Instant::now() + limit;
    loop {
        let missing = stats.iter().filter(|s| !done(s)).count();
        if missing == 0 || Instant::now() > deadline {
            let last = stats
                .iter()
                .filter(|s| done(s))
                .map(|s| s.at_us.load(Ordering::Acquire))
                .max()
                .unwrap_or(0);
            return (last, missing);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn clients(args: &[String]) -> Result<(), BoxError> {
    let [addr, tokens, from, count] = args else {
        return Err("clients ADDR TOKENS FROM COUNT".into());
    };
    permsync_server::raise_open_files_limit()?;
    let addr: SocketAddr = addr.parse()?;
    let (from, count): (usize, usize) = (from.parse()?, count.parse()?);
    let tokens: Vec<String> = std::fs::read_to_string(tokens)?
        .lines()
        .skip(from)
        .take(count)
        .map(str::to_string)
        .collect();
    let stats: Arc<Vec<Stat>> = Arc::new((0..tokens.len()).map(|_| Stat::default()).collect());
    let (gen_tx, gen_rx) = watch::channel(1u64);
    let ramp = Arc::new(Semaphore::new(RAMP_CONCURRENCY));
    let started = Instant::now();
    for (i, token) in tokens.into_iter().enumerate() {
        tokio::spawn(connection(
            addr,
            token,
            stats.clone(),
            i,
            gen_rx.clone(),
            ramp.clone(),
        ));
    }
    let (_, missing) = wait_all(&stats, Duration::from_secs(120), |s| {
        s.synced_gen.load(Ordering::Acquire) == 1
    })
    .await;
    println!(
        "ready {} {missing} {}",
        stats.len() - missing,
        started.elapsed().as_millis()
    );
    std::io::stdout().flush()?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin());
    let mut line = String::new();
    loop {
        line.clear();
        if tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line).await? == 0 {
            return Ok(());
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["expect", revision] => {
                let revision: u64 = revision.parse()?;
                let (last, missing) = wait_all(&stats, Duration::from_secs(60), |s| {
                    s.revision.load(Ordering::Acquire) >= revision
                })
                .await;
                println!("reached {last} {missing}");
            }
            ["reconnect"] => {
                let generation = *gen_tx.borrow() + 1;
                gen_tx.send_replace(generation);
                let (last, missing) = wait_all(&stats, Duration::from_secs(120), |s| {
                    s.synced_gen.load(Ordering::Acquire) == generation
                })
                .await;
                println!("resynced {last} {missing}");
            }
            ["quit"] => return Ok(()),
            _ => println!("unknown command"),
        }
        std::io::stdout().flush()?;
    }
}

// ---------------------------------------------------------------- driver part

struct Options {
    idle: usize,
    max: usize,
    members: usize,
    grants: usize,
    rounds: usize,
}

fn options(args: &[String]) -> Result<Options, BoxError> {
    let mut o = Options {
        idle: 10_000,
        max: 19_800,
        members: 20_000,
        grants: 1000,
        rounds: 5,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value: usize = it.next().ok_or("a flag needs a value")?.parse()?;
        match flag.as_str() {
            "--idle" => o.idle = value,
            "--max" => o.max = value,
            "--members" => o.members = value,
            "--grants" => o.grants = value,
            "--rounds" => o.rounds = value,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    o.max = o.max.max(o.idle);
    o.members = o.members.max(o.max);
    Ok(o)
}

fn user(i: usize) -> UserId {
    UserId::parse(&format!("u{i:05}")).expect("valid user id")
}

/// Builds the database: users, the two roles and their bindings, an admin.
async fn populate(store: &dyn Store, o: &Options) -> Result<(), BoxError> {
    let at = permsync_server::time::now();
    let admin = UserId::parse("bench-admin")?;
    store.create_user("bench", &admin, None, at).await?;
    let admin_grant = NewGrant {
        user: admin,
        permission: Permission::parse("permsync:admin")?,
        scope: None,
        expires_at: None,
    };
    store.add_grant("bench", admin_grant, at).await?;
    store
        .create_user("bench", &UserId::parse("probe")?, None, at)
        .await?;
    let (team, all) = (RoleName::parse("team")?, RoleName::parse("all")?);
    store
        .set_role("bench", &team, &[Permission::parse("doc:read")?], "", at)
        .await?;
    store
        .set_role("bench", &all, &[Permission::parse("doc:view")?], "", at)
        .await?;
    for i in 0..o.members {
        store.create_user("bench", &user(i), None, at).await?;
        let bind = |role: &RoleName| NewBinding {
            user: user(i),
            role: role.clone(),
            scope: None,
            expires_at: None,
        };
        if i < o.idle {
            store.add_binding("bench", bind(&team), at).await?;
        }
        store.add_binding("bench", bind(&all), at).await?;
    }
    Ok(())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct ClientProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: std::io::BufReader<ChildStdout>,
    count: usize,
}

/// A child process that is killed if the driver ends early (an error), so no
/// server or client outlives a failed run.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ClientProcess {
    fn spawn(
        addr: SocketAddr,
        tokens: &std::path::Path,
        from: usize,
        count: usize,
    ) -> Result<Self, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "clients",
                &addr.to_string(),
                &tokens.display().to_string(),
                &from.to_string(),
                &count.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?);
        Ok(ClientProcess {
            child,
            stdin,
            stdout,
            count,
        })
    }

    fn read(&mut self) -> Result<Vec<u64>, BoxError> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        Ok(line
            .split_whitespace()
            .skip(1)
            .filter_map(|w| w.parse().ok())
            .collect())
    }

    fn send(&mut self, command: &str) -> Result<(), BoxError> {
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        Ok(())
    }
}

/// Sends `command` to every client process; returns (latest µs, missing) overall.
fn broadcast(processes: &mut [ClientProcess], command: &str) -> Result<(u64, u64), BoxError> {
    for p in processes.iter_mut() {
        p.send(command)?;
    }
    let mut last = 0;
    let mut missing = 0;
    for p in processes.iter_mut() {
        let answer = p.read()?;
        last = last.max(answer.first().copied().unwrap_or(0));
        missing += answer.get(1).copied().unwrap_or(0);
    }
    Ok((last, missing))
}

/// The server's histogram of commit → frame written, as (upper bound in ms,
/// cumulative count) per bucket.
async fn push_buckets(http: &reqwest::Client, base: &str) -> Result<Vec<(f64, u64)>, BoxError> {
    Ok(metrics(http, base)
        .await?
        .lines()
        .filter_map(|l| l.strip_prefix("permsync_push_latency_seconds_bucket{le=\""))
        .filter_map(|l| {
            let (le, count) = l.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse::<f64>().ok()? * 1000.0
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect())
}

/// What the server wrote between two histogram readings: the bucket bounds (ms)
/// that hold the median frame and the last one.
fn server_side(before: &[(f64, u64)], after: &[(f64, u64)]) -> String {
    let diff: Vec<(f64, u64)> = after
        .iter()
        .zip(before)
        .map(|(&(le, a), &(_, b))| (le, a.saturating_sub(b)))
        .collect();
    let total = diff.last().map_or(0, |&(_, n)| n);
    let bound = |part: u64| {
        diff.iter()
            .find(|&&(_, n)| n >= part)
            .map_or(f64::NAN, |&(le, _)| le)
    };
    format!(
        "server wrote {total} frames, the median ≤ {:.1} ms and the last ≤ {:.1} ms after the commit",
        bound(total.div_ceil(2)),
        bound(total)
    )
}

/// One timed role edit: what it took until every client process saw its seq.
struct RoleEdit {
    /// Request sent → the last online member read the event.
    all_ms: f64,
    /// Request sent → the HTTP answer.
    answer_ms: f64,
    missing: u64,
    /// The server's own share, from its histogram.
    server: String,
}

/// The server's `/metrics` text.
async fn metrics(http: &reqwest::Client, base: &str) -> Result<String, BoxError> {
    Ok(http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?)
}

/// A counter's value in the server's `/metrics`.
async fn counter(http: &reqwest::Client, base: &str, name: &str) -> Result<u64, BoxError> {
    metrics(http, base)
        .await?
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .ok_or_else(|| format!("no {name} in /metrics").into())
}

/// Sets `role` to `permissions` over the admin API; returns when the request was
/// sent and answered (Unix µs) and the change's seq.
async fn set_role(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    role: &str,
    permissions: serde_json::Value,
) -> Result<(u64, u64, u64), BoxError> {
    let sent = now_us();
    let res = http
        .put(format!("{base}/v1/roles/{role}"))
        .bearer_auth(admin)
        .json(&json!({ "permissions": permissions }))
        .send()
        .await?;
    let answered = now_us();
    let seq = res.error_for_status()?.json::<serde_json::Value>().await?["seq"]
        .as_u64()
        .ok_or("no seq")?;
    Ok((sent, answered, seq))
}

/// Sets `role` to `permissions` and waits for every member connection of
/// `processes` to read the change.
async fn role_edit(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    role: &str,
    permissions: serde_json::Value,
    processes: &mut [ClientProcess],
) -> Result<RoleEdit, BoxError> {
    let buckets = push_buckets(http, base).await?;
    let (t0, answered, seq) = set_role(http, base, admin, role, permissions).await?;
    let (last, missing) = broadcast(processes, &format!("expect {seq}"))?;
    Ok(RoleEdit {
        all_ms: ms(last.saturating_sub(t0)),
        answer_ms: ms(answered.saturating_sub(t0)),
        missing,
        server: server_side(&buckets, &push_buckets(http, base).await?),
    })
}

/// The client processes, stopped (SIGSTOP) until this is dropped (SIGCONT).
struct Stopped(Vec<u32>);

impl Stopped {
    fn new(processes: &[ClientProcess]) -> Result<Self, BoxError> {
        let stopped = Stopped(processes.iter().map(|p| p.child.id()).collect());
        stopped.signal("-STOP")?;
        Ok(stopped)
    }

    fn signal(&self, signal: &str) -> Result<(), BoxError> {
        for pid in &self.0 {
            Command::new("kill")
                .args([signal, &pid.to_string()])
                .status()?;
        }
        Ok(())
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.signal("-CONT");
    }
}

/// A role edit with the client processes stopped, so the server has both cores
/// to itself as it would with its clients on other machines. Returns the ms until
/// the server counted `online` more events sent (polled every 2 ms; each is
/// counted as its frame is handed to the socket), the ms until the HTTP answer,
/// and how many members missed the event once the clients resumed.
async fn role_edit_server_alone(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    role: &str,
    permissions: serde_json::Value,
    processes: &mut [ClientProcess],
    online: u64,
) -> Result<(f64, f64, u64), BoxError> {
    const SENT: &str = "permsync_events_sent_total";
    let target = counter(http, base, SENT).await? + online;
    let stopped = Stopped::new(processes)?;
    let (t0, answered, seq) = set_role(http, base, admin, role, permissions).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter(http, base, SENT).await? < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let written = now_us();
    drop(stopped);
    let (_, missing) = broadcast(processes, &format!("expect {seq}"))?;
    Ok((
        ms(written.saturating_sub(t0)),
        ms(answered.saturating_sub(t0)),
        missing,
    ))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

async fn drive(args: &[String]) -> Result<(), BoxError> {
    let o = options(args)?;
    permsync_server::raise_open_files_limit()?;
    // The database on tmpfs when there is one: setup commits ~100k changes one by
    // one, and the file system's cost is not what this measures.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)?
    } else {
        tempfile::tempdir()?
    };
    let db = format!("sqlite://{}", dir.path().join("permsync.db").display());
    let say = |line: String| println!("{line}");

    // Setup: the database and a token per user.
    let started = Instant::now();
    let store = SqliteStore::open(&db).await?;
    populate(&store, &o).await?;
    let keys = permsync_server::ensure_signing_key(&store)
        .await
        .map_err(|e| e.to_string())?;
    let defaults = permsync_server::ServerConfig::default();
    let tokens = permsync_auth::Tokens::new(
        keys,
        defaults.issuer.clone(),
        defaults.audience.clone(),
        Vec::new(),
    )?;
    let sign = |sub: &str| {
        let iat = permsync_server::time::now().0 / 1000;
        tokens.sign(&permsync_auth::AccessClaims {
            iss: defaults.issuer.clone(),
            sub: sub.to_string(),
            aud: defaults.audience.clone(),
            iat,
            exp: iat + 3 * 3600,
            jti: permsync_auth::random_token(),
            sid: format!("bench-{sub}"),
            prev: 0,
            perms: None,
        })
    };
    let tokens_path = dir.path().join("tokens");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&tokens_path)?);
    for i in 0..o.max {
        writeln!(file, "{}", sign(user(i).as_str()))?;
    }
    file.flush()?;
    let (admin, probe) = (sign("bench-admin"), sign("probe"));
    drop(store);
    say(format!(
        "setup: {} users ({} in role team, all in role all), tokens: {:.1} s",
        o.members,
        o.idle,
        started.elapsed().as_secs_f64()
    ));

    // The server, in its own process.
    let mut server = Reaped(
        Command::new(std::env::current_exe()?)
            .args(["serve", &db])
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let mut server_out = std::io::BufReader::new(server.0.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    server_out.read_line(&mut line)?;
    let addr: SocketAddr = line
        .split_whitespace()
        .nth(1)
        .ok_or("no address from the server")?
        .parse()?;
    let pid = server.0.id();
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    http.get(format!("{base}/readyz"))
        .send()
        .await?
        .error_for_status()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = rss_kib(pid);
    say(format!(
        "server pid {pid} on {addr}; idle RSS {:.1} MiB",
        rss0 as f64 / 1024.0
    ));

    // (A) idle connections.
    let started = Instant::now();
    let mut processes = Vec::new();
    let mut opened = 0;
    while opened < o.idle {
        let count = (o.idle - opened).min(PER_CLIENT_PROCESS);
        processes.push(ClientProcess::spawn(addr, &tokens_path, opened, count)?);
        opened += count;
    }
    let mut failed = 0;
    for p in &mut processes {
        failed += p.read()?.get(1).copied().unwrap_or(0);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = rss_kib(pid);
    say(format!(
        "A. {} SSE connections open with their first event in {:.2} s ({failed} failed); server RSS {:.1} MiB, {:.1} KiB per connection",
        o.idle,
        started.elapsed().as_secs_f64(),
        rss1 as f64 / 1024.0,
        (rss1.saturating_sub(rss0)) as f64 / o.idle as f64
    ));

    // (B) single-user grants while the others idle: request sent → event read.
    let probe_stat = Arc::new(vec![Stat::default()]);
    let (_probe_gen, probe_gen_rx) = watch::channel(1u64);
    tokio::spawn(connection(
        addr,
        probe,
        probe_stat.clone(),
        0,
        probe_gen_rx,
        Arc::new(Semaphore::new(1)),
    ));
    wait_all(&probe_stat, Duration::from_secs(10), |s| {
        s.synced_gen.load(Ordering::Acquire) == 1
    })
    .await;
    let mut latencies = Vec::with_capacity(o.grants);
    let mut answers = Vec::with_capacity(o.grants);
    for k in 0..o.grants {
        let t0 = now_us();
        let res = http
            .post(format!("{base}/v1/users/probe/grants"))
            .bearer_auth(&admin)
            .json(&json!({"permission": format!("probe:p{k}")}))
            .send()
            .await?;
        let answered = now_us();
        let body: serde_json::Value = res.error_for_status()?.json().await?;
        let revision = body["revision"].as_u64().ok_or("no revision")?;
        let (at, missing) = wait_all(&probe_stat, Duration::from_secs(10), |s| {
            s.revision.load(Ordering::Acquire) >= revision
        })
        .await;
        if missing == 0 {
            latencies.push(ms(at.saturating_sub(t0)));
            answers.push(ms(answered.saturating_sub(t0)));
        }
    }
    latencies.sort_by(f64::total_cmp);
    answers.sort_by(f64::total_cmp);
    say(format!(
        "B. {} single-user grants with {} idle connections: grant request sent → event read p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (the HTTP answer itself: p50 {:.2} ms, p99 {:.2} ms)",
        latencies.len(),
        o.idle,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        percentile(&answers, 0.5),
        percentile(&answers, 0.99),
    ));

    // (C) role edits touching every online member.
    let mut edits = Vec::new();
    for r in 0..o.rounds {
        let permissions = json!(["doc:read", format!("doc:r{r}")]);
        edits.push(role_edit(&http, &base, &admin, "team", permissions, &mut processes).await?);
    }
    for (i, e) in edits.iter().enumerate() {
        say(format!(
            "C. role edit #{} touching {} online members: request sent → last member read its event {:.1} ms (HTTP answer {:.1} ms; {} missing; {})",
            i + 1,
            o.idle,
            e.all_ms,
            e.answer_ms,
            e.missing,
            e.server
        ));
    }
    for r in 0..o.rounds {
        let permissions = json!(["doc:read", format!("doc:s{r}")]);
        let (written_ms, answer_ms, missing) = role_edit_server_alone(
            &http,
            &base,
            &admin,
            "team",
            permissions,
            &mut processes,
            o.idle as u64,
        )
        .await?;
        say(format!(
            "C. role edit #{} touching {} online members, clients stopped (the server alone on the cores): request sent → every frame handed to its socket {written_ms:.1} ms (HTTP answer {answer_ms:.1} ms; after resuming, {missing} missing)",
            r + 1,
            o.idle,
        ));
    }

    // (D) reconnect storm.
    let t0 = now_us();
    let (last, missing) = broadcast(&mut processes, "reconnect")?;
    say(format!(
        "D. reconnect storm of {} clients at once: all resynchronised (first event read) after {:.0} ms ({missing} missing)",
        o.idle,
        ms(last.saturating_sub(t0))
    ));

    // (E) as many connections as one server process can hold.
    let started = Instant::now();
    let mut more = Vec::new();
    let mut opened = o.idle;
    while opened < o.max {
        let count = (o.max - opened).min(PER_CLIENT_PROCESS);
        more.push(ClientProcess::spawn(addr, &tokens_path, opened, count)?);
        opened += count;
    }
    let mut failed = 0;
    for p in &mut more {
        failed += p.read()?.get(1).copied().unwrap_or(0);
    }
    processes.extend(more);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss2 = rss_kib(pid);
    let online: usize = processes.iter().map(|p| p.count).sum::<usize>() - failed as usize;
    say(format!(
        "E. grown to {online} connections (+{} opened in {:.2} s, {failed} failed); server RSS {:.1} MiB, {:.1} KiB per connection",
        o.max - o.idle,
        started.elapsed().as_secs_f64(),
        rss2 as f64 / 1024.0,
        (rss2.saturating_sub(rss0)) as f64 / online.max(1) as f64
    ));
    for r in 0..o.rounds {
        let permissions = json!(["doc:view", format!("doc:v{r}")]);
        let e = role_edit(&http, &base, &admin, "all", permissions, &mut processes).await?;
        say(format!(
            "E. role edit #{} of `all` ({} members, {online} online): request sent → last online member read its event {:.1} ms (HTTP answer {:.1} ms; {} missing; {})",
            r + 1,
            o.members,
            e.all_ms,
            e.answer_ms,
            e.missing,
            e.server
        ));
    }
    let text = metrics(&http, &base).await?;
    for l in text.lines().filter(|l| {
        l.starts_with("permsync_open_streams{") || l.starts_with("permsync_events_sent")
    }) {
        say(format!("   metrics: {l}"));
    }

    // (F) graceful shutdown with every stream open.
    let started = Instant::now();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let status = server.0.wait()?;
    say(format!(
        "F. SIGTERM → server exited ({status}) after {:.2} s with {online} streams open",
        started.elapsed().as_secs_f64()
    ));
    for p in &mut processes {
        let _ = p.send("quit");
        let _ = p.child.wait();
    }
    Ok(())
}
