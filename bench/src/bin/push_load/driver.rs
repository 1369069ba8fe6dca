//! The driver: builds the database, starts the floor, the servers and the client
//! processes, runs the phases and prints what it measured, then a summary table.
//!
//! The database holds `--max` users: the first `--idle` bound to role `team`,
//! the first `--wide` to role `wide`, all of them to role `all`. Phases:
//! - (0) the floor ([`crate::floor`]) with `--idle` connections: pushes timed as
//!   the role edits below are;
//! - (A) `--idle` connections to one server: its memory per connection;
//! - (B) `--grants` single-user grants while those idle, timed on a probe
//!   connection from request sent to event read;
//! - (C) role edits of `team`, touching every online connection: request sent →
//!   the last member's event delivered into its socket (the kernel's receive
//!   timestamp) and read by its client, and the servers' CPU time per edit; then
//!   the same edits with the client processes stopped (SIGSTOP), so the servers
//!   have both cores to themselves as with clients on other machines (the
//!   delivery times come from the same timestamps, read once the clients resume);
//! - (D) a reconnect storm of those connections;
//! - (E) grow to `--wide` connections and edit `wide` as in (C);
//! - (G) grow to `--max` connections: memory per connection, and edits of `all`;
//! - (F) SIGTERM to every server, timing the graceful shutdown.
//!
//! One server process holds at most [`PER_PROCESS`] streams here, so from
//! (E) on several servers share the database, each taking the next
//! [`PER_PROCESS`] users' connections; role edits are sent to the first, and the
//! others learn of them as any node does, from the changelog.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use permsync_core::{Permission, RoleName, UserId};
use permsync_store::{NewBinding, NewGrant, SqliteStore, Store};
use serde_json::json;
use tokio::sync::{watch, Semaphore};

use crate::client::{self, Stat};
use crate::{now_us, BoxError, PER_PROCESS};

struct Options {
    idle: usize,
    wide: usize,
    max: usize,
    grants: usize,
    rounds: usize,
}

fn options(args: &[String]) -> Result<Options, BoxError> {
    let mut o = Options {
        idle: 10_000,
        wide: 50_000,
        max: 100_000,
        grants: 1000,
        rounds: 5,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value: usize = it.next().ok_or("a flag needs a value")?.parse()?;
        match flag.as_str() {
            "--idle" => o.idle = value,
            "--wide" => o.wide = value,
            "--max" => o.max = value,
            "--grants" => o.grants = value,
            "--rounds" => o.rounds = value,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    o.wide = o.wide.max(o.idle);
    o.max = o.max.max(o.wide);
    Ok(o)
}

fn user(i: usize) -> UserId {
    UserId::parse(&format!("u{i:06}")).expect("valid user id")
}

/// Builds the database: users, the three roles and their bindings, an admin.
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
    let roles = [("team", o.idle), ("wide", o.wide), ("all", o.max)];
    for (role, _) in roles {
        let permissions = [Permission::parse(&format!("doc:{role}"))?];
        store
            .set_role("bench", &RoleName::parse(role)?, &permissions, "", at)
            .await?;
    }
    for i in 0..o.max {
        store.create_user("bench", &user(i), None, at).await?;
        for (role, members) in roles {
            if i < members {
                let binding = NewBinding {
                    user: user(i),
                    role: RoleName::parse(role)?,
                    scope: None,
                    expires_at: None,
                };
                store.add_binding("bench", binding, at).await?;
            }
        }
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

/// CPU time the processes' threads have run so far (ns), from `schedstat`.
fn cpu_ns(pids: &[u32]) -> u64 {
    let mut total = 0;
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            total += std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

/// A child process, killed if the driver ends early (an error), so none
/// outlives a failed run.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child speaking the line protocol of the client and floor processes.
struct LineProcess {
    child: Reaped,
    stdin: ChildStdin,
    stdout: std::io::BufReader<ChildStdout>,
}

impl LineProcess {
    fn spawn(args: &[&str]) -> Result<Self, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?);
        Ok(LineProcess {
            child: Reaped(child),
            stdin,
            stdout,
        })
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// The next answer line's words after the first.
    fn read(&mut self) -> Result<Vec<String>, BoxError> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err("a child process ended".into());
        }
        Ok(line
            .split_whitespace()
            .skip(1)
            .map(str::to_string)
            .collect())
    }

    /// The next answer line's numbers after the first word.
    fn read_numbers(&mut self) -> Result<Vec<u64>, BoxError> {
        Ok(self.read()?.iter().filter_map(|w| w.parse().ok()).collect())
    }

    fn send(&mut self, command: &str) -> Result<(), BoxError> {
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        Ok(())
    }
}

/// A client process with `count` connections, using the tokens from line `from`
/// on; it answers its first line once each read its first event.
fn spawn_clients(
    addr: SocketAddr,
    tokens: &Path,
    from: usize,
    count: usize,
) -> Result<LineProcess, BoxError> {
    LineProcess::spawn(&[
        "clients",
        &addr.to_string(),
        &tokens.display().to_string(),
        &from.to_string(),
        &count.to_string(),
    ])
}

/// The latest read and arrival among every client process's connections, and
/// how many did not get there.
struct Reached {
    read_us: u64,
    delivered_us: u64,
    missing: u64,
}

/// Sends `command` to every client process and gathers their answers.
fn broadcast(clients: &mut [LineProcess], command: &str) -> Result<Reached, BoxError> {
    for c in clients.iter_mut() {
        c.send(command)?;
    }
    let mut all = Reached {
        read_us: 0,
        delivered_us: 0,
        missing: 0,
    };
    for c in clients.iter_mut() {
        let answer = c.read_numbers()?;
        let field = |i: usize| answer.get(i).copied().unwrap_or(0);
        all.read_us = all.read_us.max(field(0));
        all.missing += field(1);
        all.delivered_us = all.delivered_us.max(field(2));
    }
    Ok(all)
}

/// The client processes, stopped (SIGSTOP) until this is dropped (SIGCONT).
struct Stopped(Vec<u32>);

impl Stopped {
    fn new(clients: &[LineProcess]) -> Result<Self, BoxError> {
        let stopped = Stopped(clients.iter().map(|c| c.pid()).collect());
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

/// One permsync server process.
struct Node {
    process: Reaped,
    addr: SocketAddr,
    base: String,
    idle_rss_kib: u64,
    /// Kept open: the server's stdout.
    _stdout: std::io::BufReader<ChildStdout>,
}

impl Node {
    async fn start(db: &str, http: &reqwest::Client) -> Result<Node, BoxError> {
        let mut child = Reaped(
            Command::new(std::env::current_exe()?)
                .args(["serve", db])
                .stdout(Stdio::piped())
                .spawn()?,
        );
        let mut stdout = std::io::BufReader::new(child.0.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let addr: SocketAddr = line
            .split_whitespace()
            .nth(1)
            .ok_or("no address from the server")?
            .parse()?;
        let base = format!("http://{addr}");
        http.get(format!("{base}/readyz"))
            .send()
            .await?
            .error_for_status()?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let idle_rss_kib = rss_kib(child.0.id());
        Ok(Node {
            process: child,
            addr,
            base,
            idle_rss_kib,
            _stdout: stdout,
        })
    }

    fn pid(&self) -> u32 {
        self.process.0.id()
    }
}

/// The servers, the client processes and how many connections they opened.
struct Fleet {
    db: String,
    tokens: PathBuf,
    nodes: Vec<Node>,
    clients: Vec<LineProcess>,
    opened: usize,
}

impl Fleet {
    fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(Node::pid).collect()
    }

    /// Opens connections until `n` are open, connection `i` to node
    /// `i / PER_PROCESS` (started when needed); returns how many failed.
    async fn grow(&mut self, n: usize, http: &reqwest::Client) -> Result<u64, BoxError> {
        while self.nodes.len() * PER_PROCESS < n {
            self.nodes.push(Node::start(&self.db, http).await?);
        }
        let mut new = Vec::new();
        while self.opened < n {
            let node = self.opened / PER_PROCESS;
            let end = ((node + 1) * PER_PROCESS).min(n);
            new.push(spawn_clients(
                self.nodes[node].addr,
                &self.tokens,
                self.opened,
                end - self.opened,
            )?);
            self.opened = end;
        }
        let mut failed = 0;
        for c in &mut new {
            failed += c.read_numbers()?.get(1).copied().unwrap_or(0);
        }
        self.clients.extend(new);
        Ok(failed)
    }

    /// The servers' memory beyond what they held idle, per open connection.
    fn kib_per_connection(&self, online: usize) -> (f64, f64) {
        let (now, idle) = self.nodes.iter().fold((0, 0), |(now, idle), n| {
            (now + rss_kib(n.pid()), idle + n.idle_rss_kib)
        });
        (
            now as f64 / 1024.0,
            now.saturating_sub(idle) as f64 / online.max(1) as f64,
        )
    }
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

/// A series' value in `/metrics`, summed over every server.
async fn metric_sum(http: &reqwest::Client, nodes: &[Node], name: &str) -> Result<u64, BoxError> {
    let mut sum = 0;
    for node in nodes {
        sum += metrics(http, &node.base)
            .await?
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .ok_or_else(|| format!("no {name} in /metrics"))?;
    }
    Ok(sum)
}

/// One change, as its maker saw it (Unix µs).
struct Change {
    sent_us: u64,
    answered_us: u64,
    seq: u64,
}

/// Something that makes one change reach every connection of the clients.
trait Fanout {
    /// Makes change number `round`.
    async fn change(&mut self, round: usize) -> Result<Change, BoxError>;
    /// Waits until every frame of the last change was handed to its socket.
    async fn written(&mut self) -> Result<(), BoxError>;
    /// The server processes, whose CPU time is counted.
    fn pids(&self) -> Vec<u32>;
}

/// Role edits sent to the first server, which every server then pushes.
struct RoleEdits<'a> {
    http: &'a reqwest::Client,
    nodes: &'a [Node],
    admin: &'a str,
    role: &'a str,
    frames: u64,
    target: u64,
}

const SENT: &str = "permsync_events_sent_total";

impl Fanout for RoleEdits<'_> {
    async fn change(&mut self, round: usize) -> Result<Change, BoxError> {
        self.target = metric_sum(self.http, self.nodes, SENT).await? + self.frames;
        let permissions = json!([format!("doc:{}", self.role), format!("doc:r{round}")]);
        let sent_us = now_us();
        let res = self
            .http
            .put(format!("{}/v1/roles/{}", self.nodes[0].base, self.role))
            .bearer_auth(self.admin)
            .json(&json!({ "permissions": permissions }))
            .send()
            .await?;
        let answered_us = now_us();
        let seq = res.error_for_status()?.json::<serde_json::Value>().await?["seq"]
            .as_u64()
            .ok_or("no seq")?;
        Ok(Change {
            sent_us,
            answered_us,
            seq,
        })
    }

    async fn written(&mut self) -> Result<(), BoxError> {
        // Asking the servers takes some of their CPU, so not at first, and not
        // often: the figures come from the clients' arrival times, not from this.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while metric_sum(self.http, self.nodes, SENT).await? < self.target {
            if Instant::now() > deadline {
                return Err("the servers did not write every frame in 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Ok(())
    }

    fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(Node::pid).collect()
    }
}

/// The floor process: a push is answered once its writes are done.
struct Floor(LineProcess);

impl Fanout for Floor {
    async fn change(&mut self, round: usize) -> Result<Change, BoxError> {
        let seq = round as u64 + 2;
        let sent_us = now_us();
        self.0.send(&format!("push {seq}"))?;
        let failed = self.0.read_numbers()?.get(1).copied().unwrap_or(0);
        if failed > 0 {
            return Err(format!("the floor could not write {failed} frames whole").into());
        }
        Ok(Change {
            sent_us,
            answered_us: now_us(),
            seq,
        })
    }

    async fn written(&mut self) -> Result<(), BoxError> {
        Ok(())
    }

    fn pids(&self) -> Vec<u32> {
        vec![self.0.pid()]
    }
}

/// What one timed change took, in ms from its request.
struct Outcome {
    delivered_ms: f64,
    /// `None` when the clients were stopped.
    read_ms: Option<f64>,
    answer_ms: f64,
    cpu_ms: f64,
    missing: u64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Makes change `round` and times it until every connection has it; with
/// `stopped`, the client processes are stopped until the servers wrote it all.
async fn time_change(
    fanout: &mut impl Fanout,
    clients: &mut [LineProcess],
    round: usize,
    stopped: bool,
) -> Result<Outcome, BoxError> {
    let pids = fanout.pids();
    let stop = stopped.then(|| Stopped::new(clients)).transpose()?;
    let cpu0 = cpu_ns(&pids);
    let change = fanout.change(round).await?;
    if stop.is_some() {
        fanout.written().await?;
    }
    let cpu_after_writes = cpu_ns(&pids);
    drop(stop);
    let reached = broadcast(clients, &format!("expect {}", change.seq))?;
    let cpu = if stopped {
        cpu_after_writes
    } else {
        cpu_ns(&pids)
    } - cpu0;
    let since = |us: u64| ms(us.saturating_sub(change.sent_us));
    Ok(Outcome {
        delivered_ms: since(reached.delivered_us),
        read_ms: (!stopped).then(|| since(reached.read_us)),
        answer_ms: since(change.answered_us),
        cpu_ms: cpu as f64 / 1e6,
        missing: reached.missing,
    })
}

/// Prints what a run found, and gathers the summary table.
struct Report {
    rows: Vec<(String, String)>,
}

/// `lo–hi (median m)` of a series, or its one value.
fn range(values: impl Iterator<Item = f64>) -> String {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.as_slice() {
        [] => "—".into(),
        [one] => format!("{one:.1}"),
        [lo, .., hi] => format!("{lo:.1}–{hi:.1} (median {:.1})", percentile(&v, 0.5)),
    }
}

impl Report {
    fn say(&self, line: String) {
        println!("{line}");
    }

    fn row(&mut self, figure: String, result: String) {
        self.rows.push((figure, result));
    }

    /// Times `rounds` changes with the clients reading, then `rounds` with them
    /// stopped; prints each and adds the ranges to the table.
    async fn fanout(
        &mut self,
        label: &str,
        fanout: &mut impl Fanout,
        clients: &mut [LineProcess],
        rounds: usize,
        frames: usize,
    ) -> Result<(), BoxError> {
        for stopped in [false, true] {
            let mut outcomes = Vec::new();
            for r in 0..rounds {
                let round = r + if stopped { rounds } else { 0 };
                let o = time_change(fanout, clients, round, stopped).await?;
                let read = o.read_ms.map_or(String::new(), |ms| {
                    format!(", read by its client {ms:.1} ms")
                });
                self.say(format!(
                    "{label} #{}{}: last event delivered into its socket {:.1} ms{read} after the request (answered {:.1} ms; server CPU {:.1} ms, {:.1} µs per event; {} missing)",
                    r + 1,
                    if stopped { ", clients stopped" } else { "" },
                    o.delivered_ms,
                    o.answer_ms,
                    o.cpu_ms,
                    o.cpu_ms * 1000.0 / frames as f64,
                    o.missing
                ));
                if o.missing > 0 {
                    return Err(format!("{} connections missed an event", o.missing).into());
                }
                outcomes.push(o);
            }
            let of = |f: fn(&Outcome) -> f64| range(outcomes.iter().map(f));
            let per_event = range(outcomes.iter().map(|o| o.cpu_ms * 1000.0 / frames as f64));
            if stopped {
                self.row(
                    format!("{label}, clients stopped: request → last event delivered"),
                    format!(
                        "**{} ms** (answered {} ms; CPU {per_event} µs per event)",
                        of(|o| o.delivered_ms),
                        of(|o| o.answer_ms)
                    ),
                );
            } else {
                self.row(
                    format!("{label}: request → last event delivered / read"),
                    format!(
                        "**{} ms** / {} ms (answered {} ms; CPU {per_event} µs per event)",
                        of(|o| o.delivered_ms),
                        of(|o| o.read_ms.unwrap_or(f64::NAN)),
                        of(|o| o.answer_ms)
                    ),
                );
            }
        }
        Ok(())
    }

    fn table(&self) {
        println!("\n| figure | result |\n|---|---|");
        for (figure, result) in &self.rows {
            println!("| {figure} | {result} |");
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Writes a token per user (line `i` for `user(i)`), an admin's and a probe's,
/// each of a session opened in the store (a permsync token counts only while its
/// session is live).
async fn sign_tokens(
    store: &SqliteStore,
    store_keys: Vec<permsync_auth::KeyMaterial>,
    o: &Options,
    path: &Path,
) -> Result<(String, String), BoxError> {
    let defaults = permsync_server::ServerConfig::default();
    let tokens = permsync_auth::Tokens::new(
        store_keys,
        defaults.issuer.clone(),
        defaults.audience.clone(),
        Vec::new(),
    )?;
    const TTL_SECS: i64 = 3 * 3600;
    let (tokens, defaults) = (&tokens, &defaults);
    let sign = |sub: String| async move {
        let at = permsync_server::time::now();
        let iat = at.0 / 1000;
        let sid = format!("bench-{sub}");
        store
            .create_session(
                permsync_store::NewSession {
                    id: sid.clone(),
                    user: UserId::parse(&sub)?,
                    refresh_hash: permsync_auth::sha256_hex(&permsync_auth::random_token()),
                    refresh_expires_at: at.plus_millis(TTL_SECS * 1000),
                },
                at,
            )
            .await?;
        Ok::<_, BoxError>(tokens.sign(&permsync_auth::AccessClaims {
            iss: defaults.issuer.clone(),
            sub: sub.clone(),
            aud: defaults.audience.clone(),
            iat,
            exp: iat + TTL_SECS,
            jti: permsync_auth::random_token(),
            sid,
            prev: 0,
            perms: None,
        }))
    };
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..o.max {
        writeln!(file, "{}", sign(user(i).to_string()).await?)?;
    }
    file.flush()?;
    Ok((
        sign("bench-admin".into()).await?,
        sign("probe".into()).await?,
    ))
}

/// (B): single-user grants while `idle` connections idle, timed on a probe
/// connection from request sent to event read.
async fn single_grants(
    report: &mut Report,
    http: &reqwest::Client,
    node: &Node,
    admin: &str,
    probe: String,
    o: &Options,
) -> Result<(), BoxError> {
    let probe_stat = Arc::new(vec![Stat::default()]);
    let (_probe_gen, probe_gen_rx) = watch::channel(1u64);
    tokio::spawn(client::connection(
        node.addr,
        probe,
        probe_stat.clone(),
        0,
        probe_gen_rx,
        Arc::new(Semaphore::new(1)),
    ));
    client::wait_all(&probe_stat, Duration::from_secs(10), |s| {
        s.synced_gen.load(Ordering::Acquire) == 1
    })
    .await;
    let mut latencies = Vec::with_capacity(o.grants);
    let mut answers = Vec::with_capacity(o.grants);
    for k in 0..o.grants {
        let t0 = now_us();
        let res = http
            .post(format!("{}/v1/users/probe/grants", node.base))
            .bearer_auth(admin)
            .json(&json!({"permission": format!("probe:p{k}")}))
            .send()
            .await?;
        let answered = now_us();
        let body: serde_json::Value = res.error_for_status()?.json().await?;
        let revision = body["revision"].as_u64().ok_or("no revision")?;
        let reached = client::wait_all(&probe_stat, Duration::from_secs(10), |s| {
            s.revision.load(Ordering::Acquire) >= revision
        })
        .await;
        if reached.missing == 0 {
            latencies.push(ms(reached.read_us.saturating_sub(t0)));
            answers.push(ms(answered.saturating_sub(t0)));
        }
    }
    latencies.sort_by(f64::total_cmp);
    answers.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    report.say(format!(
        "B. {} single-user grants with {} idle connections: request sent → event read p50 {p50:.2} ms, p99 {p99:.2} ms, max {:.2} ms (the HTTP answer: p50 {:.2} ms, p99 {:.2} ms)",
        latencies.len(),
        o.idle,
        latencies.last().copied().unwrap_or(f64::NAN),
        percentile(&answers, 0.5),
        percentile(&answers, 0.99),
    ));
    report.row(
        format!(
            "single-user grant, {} other connections idle: request → event read",
            o.idle
        ),
        format!("p50 {p50:.2} ms, **p99 {p99:.2} ms**"),
    );
    Ok(())
}

pub async fn run(args: &[String]) -> Result<(), BoxError> {
    let o = options(args)?;
    permsync_server::raise_open_files_limit()?;
    // The database on tmpfs when there is one: setup commits every user and
    // binding one by one, and the file system's cost is not what this measures.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)?
    } else {
        tempfile::tempdir()?
    };
    let db = format!("sqlite://{}", dir.path().join("permsync.db").display());
    let mut report = Report { rows: Vec::new() };

    let started = Instant::now();
    let store = SqliteStore::open(&db).await?;
    populate(&store, &o).await?;
    let keys = permsync_server::ensure_signing_key(&store)
        .await
        .map_err(|e| e.to_string())?;
    let tokens = dir.path().join("tokens");
    let (admin, probe) = sign_tokens(&store, keys, &o, &tokens).await?;
    drop(store);
    report.say(format!(
        "setup: {} users (the first {} in role team, {} in role wide, all in role all), tokens: {:.1} s",
        o.max,
        o.idle,
        o.wide,
        started.elapsed().as_secs_f64()
    ));

    // (0) The floor, with the same clients.
    let mut floor = LineProcess::spawn(&["floor"])?;
    let floor_addr: SocketAddr = floor
        .read()?
        .first()
        .ok_or("no address from the floor")?
        .parse()?;
    let mut floor_clients = vec![spawn_clients(floor_addr, &tokens, 0, o.idle)?];
    floor_clients[0].read_numbers()?;
    let mut floor = Floor(floor);
    let label = format!("0. floor, push to {} connections", o.idle);
    report
        .fanout(&label, &mut floor, &mut floor_clients, o.rounds, o.idle)
        .await?;
    drop(floor_clients);
    drop(floor);

    // (A) Idle connections to one server.
    let http = reqwest::Client::new();
    let mut fleet = Fleet {
        db: db.clone(),
        tokens,
        nodes: vec![Node::start(&db, &http).await?],
        clients: Vec::new(),
        opened: 0,
    };
    report.say(format!(
        "server pid {} on {}; idle RSS {:.1} MiB",
        fleet.nodes[0].pid(),
        fleet.nodes[0].addr,
        fleet.nodes[0].idle_rss_kib as f64 / 1024.0
    ));
    let started = Instant::now();
    let failed = fleet.grow(o.idle, &http).await?;
    let opening = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss, per) = fleet.kib_per_connection(o.idle);
    report.say(format!(
        "A. {} SSE connections open with their first event in {opening:.2} s ({failed} failed); server RSS {rss:.1} MiB, {per:.1} KiB per connection",
        o.idle,
    ));
    report.row(
        format!("server memory per idle SSE connection, {} open", o.idle),
        format!("**{per:.1} KiB** (RSS {rss:.1} MiB)"),
    );

    // (B) Single-user grants.
    single_grants(&mut report, &http, &fleet.nodes[0], &admin, probe, &o).await?;

    // (C) Role edits touching every online member.
    let label = format!("C. role edit touching {} online members", o.idle);
    let mut edits = RoleEdits {
        http: &http,
        nodes: &fleet.nodes,
        admin: &admin,
        role: "team",
        frames: o.idle as u64,
        target: 0,
    };
    report
        .fanout(&label, &mut edits, &mut fleet.clients, o.rounds, o.idle)
        .await?;

    // (D) Reconnect storm.
    let t0 = now_us();
    let storm = broadcast(&mut fleet.clients, "reconnect")?;
    let storm_ms = ms(storm.read_us.saturating_sub(t0));
    report.say(format!(
        "D. reconnect storm of {} clients at once: all resynchronised (first event read) after {storm_ms:.0} ms ({} missing)",
        o.idle, storm.missing
    ));
    report.row(
        format!(
            "reconnect storm, {} clients at once, until each read its first event",
            o.idle
        ),
        format!("{storm_ms:.0} ms ({} missing)", storm.missing),
    );

    // (E) and (G): more connections, over as many servers as they need.
    for (phase, online, role) in [("E", o.wide, "wide"), ("G", o.max, "all")] {
        if online <= fleet.opened {
            continue;
        }
        let started = Instant::now();
        let before = fleet.opened;
        let failed = fleet.grow(online, &http).await?;
        let opening = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (rss, per) = fleet.kib_per_connection(online);
        let servers = fleet.nodes.len();
        report.say(format!(
            "{phase}. grown to {online} connections over {servers} server processes (+{} opened in {opening:.2} s, {failed} failed); servers' RSS {rss:.1} MiB, {per:.1} KiB per connection",
            online - before,
        ));
        report.row(
            format!("server memory per idle SSE connection, {online} open over {servers} server processes"),
            format!("**{per:.1} KiB** (RSS {rss:.1} MiB in all)"),
        );
        let label = format!(
            "{phase}. role edit touching {online} online members over {servers} server processes"
        );
        let mut edits = RoleEdits {
            http: &http,
            nodes: &fleet.nodes,
            admin: &admin,
            role,
            frames: online as u64,
            target: 0,
        };
        report
            .fanout(&label, &mut edits, &mut fleet.clients, o.rounds, online)
            .await?;
    }
    let open = metric_sum(
        &http,
        &fleet.nodes,
        "permsync_open_streams{transport=\"sse\"}",
    )
    .await?;
    report.say(format!("   open streams (the servers' metrics): {open}"));

    // (F) Graceful shutdown with every stream open.
    let started = Instant::now();
    for pid in fleet.pids() {
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
    }
    let mut statuses = Vec::new();
    for node in &mut fleet.nodes {
        statuses.push(node.process.0.wait()?);
    }
    let took = started.elapsed().as_secs_f64();
    let clean = statuses.iter().all(|s| s.success());
    report.say(format!(
        "F. SIGTERM → every server exited ({}) after {took:.2} s with {} streams open",
        if clean {
            "status 0"
        } else {
            "not all with status 0"
        },
        fleet.opened
    ));
    report.row(
        format!(
            "graceful shutdown (SIGTERM) of {} servers with {} streams open, until all exited",
            fleet.nodes.len(),
            fleet.opened
        ),
        format!("{took:.2} s"),
    );
    for c in &mut fleet.clients {
        let _ = c.send("quit");
    }
    report.table();
    Ok(())
}
