//! The client processes: SSE connections over raw TCP with a minimal HTTP/1.1
//! request and an incremental de-chunking SSE parser (a 512-byte buffer per
//! connection). Each connection records the revision it read last, when it read
//! it, and when its bytes arrived in the socket (the kernel's receive timestamp),
//! so a driver can tell delivery from reading even while this process is stopped.
//!
//! Commands on stdin, one answer line each on stdout:
//! - `expect SEQ`: wait until every connection read a revision ≥ SEQ; answers
//!   `reached READ_US MISSING DELIVERED_US` (the latest among them);
//! - `reconnect`: every connection drops and reconnects at once; answers
//!   `resynced READ_US MISSING DELIVERED_US` once each read its first event again;
//! - `quit`.

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::sync::{watch, Semaphore};

use crate::{now_us, BoxError};

/// Connections being opened at once in the initial ramp (not in the storm).
const RAMP_CONCURRENCY: usize = 256;

/// What one connection has seen, readable by the process's command loop.
#[derive(Default)]
pub struct Stat {
    pub revision: AtomicU64,
    /// When the latest permissions event was read (Unix µs).
    pub at_us: AtomicU64,
    /// When the bytes that completed it arrived in the socket (Unix µs): the
    /// kernel's receive timestamp, set on loopback while the server's `send`
    /// runs, so it is the delivery time even if this process was stopped.
    pub delivered_us: AtomicU64,
    /// The reconnect generation of the connection's latest first event.
    pub synced_gen: AtomicU64,
    pub failed: AtomicBool,
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
    stamp_arrivals(&sock)?;
    sock.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut reader = SseReader::new();
    let mut buf = [0u8; 512];
    let mut permit = permit;
    let mut first = true;
    loop {
        tokio::select! {
            ready = sock.readable() => {
                ready.map_err(|e| e.to_string())?;
                let (n, delivered) = match sock.try_io(Interest::READABLE, || recv_stamped(&sock, &mut buf)) {
                    Ok(read) => read,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e.to_string()),
                };
                if n == 0 {
                    return Err("closed".into());
                }
                let delivered = delivered.unwrap_or_else(now_us);
                reader.feed(&buf[..n], &mut |revision| {
                    stat.revision.store(revision, Ordering::Release);
                    stat.delivered_us.store(delivered, Ordering::Release);
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
            // A new generation: reconnect. No sender: the connection's owner is gone.
            changed = gen_rx.changed() => return changed.map_err(|_| "stopped".to_string()),
        }
    }
}

/// Asks the kernel to timestamp what arrives on `sock` (`SO_TIMESTAMPNS`).
fn stamp_arrivals(sock: &tokio::net::TcpStream) -> Result<(), String> {
    setsockopt(sock, sockopt::ReceiveTimestampns, &true).map_err(|e| e.to_string())
}

/// One non-blocking read, with the kernel's arrival time of the last bytes read
/// (Unix µs) when it gave one.
fn recv_stamped(
    sock: &tokio::net::TcpStream,
    buf: &mut [u8],
) -> std::io::Result<(usize, Option<u64>)> {
    let mut control = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::MSG_DONTWAIT,
    )?;
    let stamp = msg.cmsgs()?.find_map(|c| match c {
        ControlMessageOwned::ScmTimestampns(t) => {
            Some(t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
        }
        _ => None,
    });
    Ok((msg.bytes, stamp))
}

pub async fn connection(
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

/// Where a group of connections got to: the latest read and arrival (Unix µs)
/// among those done, and how many are not done.
pub struct Reached {
    pub read_us: u64,
    pub delivered_us: u64,
    pub missing: usize,
}

/// Waits until `done(stat)` holds for every connection (or `limit` passes).
pub async fn wait_all(stats: &[Stat], limit: Duration, done: impl Fn(&Stat) -> bool) -> Reached {
    let deadline = Instant::now() + limit;
    loop {
        let missing = stats.iter().filter(|s| !done(s)).count();
        if missing == 0 || Instant::now() > deadline {
            let latest = |field: fn(&Stat) -> &AtomicU64| {
                stats
                    .iter()
                    .filter(|s| done(s))
                    .map(|s| field(s).load(Ordering::Acquire))
                    .max()
                    .unwrap_or(0)
            };
            return Reached {
                read_us: latest(|s| &s.at_us),
                delivered_us: latest(|s| &s.delivered_us),
                missing,
            };
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub async fn run(args: &[String]) -> Result<(), BoxError> {
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
    let missing = wait_all(&stats, Duration::from_secs(120), |s| {
        s.synced_gen.load(Ordering::Acquire) == 1
    })
    .await
    .missing;
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
                let r = wait_all(&stats, Duration::from_secs(60), |s| {
                    s.revision.load(Ordering::Acquire) >= revision
                })
                .await;
                println!("reached {} {} {}", r.read_us, r.missing, r.delivered_us);
            }
            ["reconnect"] => {
                let generation = *gen_tx.borrow() + 1;
                gen_tx.send_replace(generation);
                let r = wait_all(&stats, Duration::from_secs(120), |s| {
                    s.synced_gen.load(Ordering::Acquire) == generation
                })
                .await;
                println!("resynced {} {} {}", r.read_us, r.missing, r.delivered_us);
            }
            ["quit"] => return Ok(()),
            _ => println!("unknown command"),
        }
        std::io::stdout().flush()?;
    }
}
