//! The connection bounds of a real `permsync serve` process (protocol §5),
//! measured from this second process over loopback.
//!
//! `conn_bounds shed ADDR [COUNT]` opens COUNT (default 10,000) sockets to a
//! running server and sends nothing on them; it reports how long the server took
//! to close them all (the header timeout, 10 s by default, sheds them) and how
//! `GET /healthz`, asked on a fresh connection every 200 ms meanwhile, answered.
//!
//! `conn_bounds sigterm BIN` starts `BIN serve --demo` on a temporary database,
//! holds a half-sent request head, a half-sent POST body, and two event streams
//! whose client never reads (one on a fresh connection, one on a connection that
//! served a request first), made to stall by committing changes to the store
//! until the server's send queues stop growing; then it sends SIGTERM and times
//! the exit.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use permsync_core::UserId;
use permsync_store::{SqliteStore, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// How long the silent sockets are watched at most, once all are open.
const WATCH_AT_MOST: Duration = Duration::from_secs(90);
/// Connections opened at once while the silent sockets are set up.
const CONNECT_AT_ONCE: usize = 500;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["shed", addr] => shed(addr.parse().expect("ADDR"), 10_000).await,
        ["shed", addr, count] => {
            shed(addr.parse().expect("ADDR"), count.parse().expect("COUNT")).await
        }
        ["sigterm", bin] => sigterm(Path::new(bin)).await,
        _ => {
            eprintln!("usage: conn_bounds shed ADDR [COUNT] | conn_bounds sigterm PERMSYNC_BINARY");
            std::process::exit(2);
        }
    }
}

/// What the `/healthz` probe saw.
#[derive(Default)]
struct Probes {
    answered: usize,
    failed: usize,
    slowest: Duration,
}

async fn shed(addr: SocketAddr, count: usize) {
    let limit = permsync_server::raise_open_files_limit().unwrap_or(0);
    println!("shed: {count} silent sockets to {addr} (this process may open {limit} files)");
    let probes = Arc::new(Mutex::new(Probes::default()));
    let probing = Arc::new(AtomicBool::new(true));
    let prober = tokio::spawn(probe_healthz(addr, probes.clone(), probing.clone()));

    let started = Instant::now();
    let mut held = JoinSet::new();
    let mut opened = 0;
    while opened < count {
        let mut connects = JoinSet::new();
        for _ in 0..CONNECT_AT_ONCE.min(count - opened) {
            connects.spawn(TcpStream::connect(addr));
        }
        while let Some(connected) = connects.join_next().await {
            let mut socket = connected.unwrap().expect("connecting");
            opened += 1;
            // Each socket waits for the server to close it, and says when.
            held.spawn(async move {
                let mut byte = [0u8; 1];
                let _ = socket.read(&mut byte).await;
                Instant::now()
            });
        }
    }
    let all_open = Instant::now();
    let mut first_closed: Option<Instant> = None;
    let mut last_closed = all_open;
    let mut closed = 0;
    let watch_until = all_open + WATCH_AT_MOST;
    while let Ok(Some(at)) = tokio::time::timeout_at(watch_until.into(), held.join_next()).await {
        let at = at.unwrap();
        closed += 1;
        first_closed = Some(first_closed.map_or(at, |f| f.min(at)));
        last_closed = last_closed.max(at);
    }
    if closed < count {
        println!(
            "{} of {count} sockets still open {} s after the last opened",
            count - closed,
            WATCH_AT_MOST.as_secs()
        );
    }
    probing.store(false, Ordering::Relaxed);
    let _ = prober.await;
    let probes = probes.lock().unwrap();
    let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    println!("opening took {}", secs(all_open - started));
    if let Some(first_closed) = first_closed {
        println!(
            "the first closed {} and the last {} after the first opened ({} after the last \
             opened)",
            secs(first_closed - started),
            secs(last_closed - started),
            secs(last_closed.saturating_duration_since(all_open)),
        );
    }
    println!(
        "/healthz meanwhile: {} answered 200, {} failed, slowest {:.1} ms",
        probes.answered,
        probes.failed,
        probes.slowest.as_secs_f64() * 1000.0
    );
}

/// Asks `GET /healthz` on a fresh connection every 200 ms while `probing`.
async fn probe_healthz(addr: SocketAddr, probes: Arc<Mutex<Probes>>, probing: Arc<AtomicBool>) {
    while probing.load(Ordering::Relaxed) {
        let asked = Instant::now();
        let ok = tokio::time::timeout(Duration::from_secs(2), healthz(addr))
            .await
            .unwrap_or(false);
        let took = asked.elapsed();
        {
            let mut p = probes.lock().unwrap();
            if ok {
                p.answered += 1;
            } else {
                p.failed += 1;
            }
            p.slowest = p.slowest.max(took);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn healthz(addr: SocketAddr) -> bool {
    let Ok(mut raw) = TcpStream::connect(addr).await else {
        return false;
    };
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if raw.write_all(request).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer).await;
    answer.starts_with(b"HTTP/1.1 200 ")
}

async fn sigterm(bin: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("bench.db").display());
    let addr = free_port();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut server = Command::new(bin)
        .args(["serve", "--demo", "--db", &db, "--addr", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting permsync serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthz(addr).await {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = Command::new(bin)
        .args(["token", "alice", "--ttl", "3600", "--db", &db])
        .output()
        .expect("permsync token");
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();

    // The streams first: filling their sockets takes a while, longer than the
    // head and body timeouts, which would otherwise close the other two first.
    let events =
        format!("GET /v1/me/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    let mut direct = unread_socket(addr).await;
    direct.write_all(events.as_bytes()).await.unwrap();
    let mut pooled = unread_socket(addr).await;
    pooled
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 512];
    let n = pooled.read(&mut answer).await.unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200 "));
    pooled.write_all(events.as_bytes()).await.unwrap();
    let store = SqliteStore::open(&db).await.unwrap();
    let filling = Instant::now();
    let queues = stall(&store, addr, &[&direct, &pooled]).await;
    println!(
        "two event streams whose client never reads, stalled after {:.1} s of changes \
         (the server's send queues: {} and {} bytes)",
        filling.elapsed().as_secs_f64(),
        queues[0],
        queues[1]
    );

    let mut head = TcpStream::connect(addr).await.unwrap();
    head.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut body = TcpStream::connect(addr).await.unwrap();
    body.write_all(
        b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"username",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = [
        ("a half-sent head", &head),
        ("a half-sent POST body", &body),
        ("a stalled stream", &direct),
        ("a stalled stream on a used connection", &pooled),
    ];
    for (what, client) in held {
        let open = established(addr, client.local_addr().unwrap());
        println!(
            "holding {what}: {}",
            if open { "open" } else { "CLOSED already" }
        );
    }
    let signalled = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // When each held connection ends, seen by its client.
    let mut ends = JoinSet::new();
    for (what, client) in [
        ("the half-sent head", head),
        ("the half-sent POST body", body),
        ("the stalled stream", direct),
        ("the stalled stream on a used connection", pooled),
    ] {
        ends.spawn(async move {
            let mut client = client;
            let mut buf = vec![0u8; 64 * 1024];
            let how = loop {
                match client.read(&mut buf).await {
                    Ok(0) => break "closed",
                    Ok(_) => {}
                    Err(_) => break "reset",
                }
            };
            (what, how, signalled.elapsed())
        });
    }
    let exit_by = signalled + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > exit_by {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    match status {
        Some(status) => println!(
            "SIGTERM to exit: {:.2} s ({status})",
            signalled.elapsed().as_secs_f64()
        ),
        None => {
            println!("SIGTERM to exit: still running after 120 s; killed");
            let _ = server.kill();
        }
    }
    while let Ok(Some(Ok((what, how, after)))) =
        tokio::time::timeout(Duration::from_secs(5), ends.join_next()).await
    {
        println!("  {what}: {how} {:.2} s after SIGTERM", after.as_secs_f64());
    }
}

/// Whether the server's socket from `local` to `remote` is established.
fn established(local: SocketAddr, remote: SocketAddr) -> bool {
    tcp_entry(local, remote).is_some_and(|(state, _)| state == 1)
}

/// A port nothing listens on now.
fn free_port() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}

/// A socket with the smallest receive buffer, for a client that never reads.
async fn unread_socket(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Commits invalidations of alice until the server's send queue on each of
/// `clients` has not grown for a second; returns the queues.
async fn stall(store: &SqliteStore, server: SocketAddr, clients: &[&TcpStream]) -> Vec<u64> {
    let alice = [UserId::parse("alice").unwrap()];
    let queues = || -> Vec<u64> {
        clients
            .iter()
            .map(|c| send_queue(server, c.local_addr().unwrap()).unwrap_or(0))
            .collect()
    };
    let (mut last, mut steady_since) = (queues(), Instant::now());
    let give_up = Instant::now() + Duration::from_secs(120);
    while steady_since.elapsed() < Duration::from_secs(1) && Instant::now() < give_up {
        for _ in 0..200 {
            store
                .invalidate("bench", &alice, None, permsync_server::time::now())
                .await
                .unwrap();
        }
        let now = queues();
        if now != last || now.contains(&0) {
            steady_since = Instant::now();
        }
        last = now;
    }
    last
}

/// The kernel's count of unacknowledged bytes on the socket from `local` to
/// `remote` (IPv4), from `/proc/net/tcp`.
fn send_queue(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    tcp_entry(local, remote).map(|(_, queue)| queue)
}

/// The state and send queue of the socket from `local` to `remote` (IPv4), from
/// `/proc/net/tcp`.
fn tcp_entry(local: SocketAddr, remote: SocketAddr) -> Option<(u8, u64)> {
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
        let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
        let (tx, _) = fields.get(4)?.split_once(':')?;
        Some((state, u64::from_str_radix(tx, 16).ok()?))
    })
}
