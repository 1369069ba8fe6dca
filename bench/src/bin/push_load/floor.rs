//! The floor: the least a server can do for a fan-out, to measure permsync
//! against on the same machine, with the same clients, in the same run.
//!
//! It answers every connection's request head with a fixed `200` SSE head and
//! the current revision's event, then keeps the socket. On `push SEQ` (stdin) it
//! writes one pre-encoded event, the same bytes permsync writes, to every
//! connection with one `send` each, split over [`THREADS`] threads (as permsync
//! has two runtime workers), and answers `pushed WRITTEN FAILED`. No parsing, no
//! authentication, no bookkeeping, no tasks to wake: what remains is the kernel's
//! cost of the writes.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::BoxError;

/// Writer threads, one per core of the machines this runs on.
const THREADS: usize = 2;

/// `data` as an HTTP/1.1 chunk.
fn chunked(data: &str) -> Vec<u8> {
    format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
}

/// One event as permsync's direct SSE path writes it.
fn chunk(revision: u64) -> Vec<u8> {
    chunked(&format!(
        "id: {revision}\nevent: permissions\ndata: {{\"revision\":{revision}}}\n\n"
    ))
}

pub async fn run() -> Result<(), BoxError> {
    permsync_server::raise_open_files_limit()?;
    let listener = permsync_server::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let open: Arc<RwLock<Vec<std::net::TcpStream>>> = Arc::default();
    let revision = Arc::new(AtomicU64::new(1));
    let (accepted, current) = (open.clone(), revision.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (accepted, current) = (accepted.clone(), current.clone());
            tokio::spawn(async move {
                if let Ok(stream) = answer(stream, current.load(Ordering::Acquire)).await {
                    accepted.write().unwrap().push(stream);
                }
            });
        }
    });
    let writers = Writers::start(open);
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["push", seq] => {
                let seq: u64 = seq.parse()?;
                revision.store(seq, Ordering::Release);
                let (written, failed) = writers.push(chunk(seq)).await?;
                println!("pushed {written} {failed}");
            }
            ["quit"] => return Ok(()),
            _ => println!("unknown command"),
        }
        std::io::stdout().flush()?;
    }
    Ok(())
}

/// One push for a writer thread: the bytes, and where to say how many streams
/// took them whole.
type Job = (Arc<Vec<u8>>, tokio::sync::oneshot::Sender<usize>);

/// [`THREADS`] threads that live as long as the process (so their CPU time
/// stays readable in `/proc`), each writing its share of the streams.
struct Writers {
    jobs: Vec<std::sync::mpsc::Sender<Job>>,
    open: Arc<RwLock<Vec<std::net::TcpStream>>>,
}

impl Writers {
    fn start(open: Arc<RwLock<Vec<std::net::TcpStream>>>) -> Writers {
        let jobs = (0..THREADS)
            .map(|k| {
                let (tx, rx) = std::sync::mpsc::channel::<Job>();
                let open = open.clone();
                std::thread::spawn(move || {
                    for (bytes, done) in rx {
                        let streams = open.read().unwrap();
                        let share = streams.len().div_ceil(THREADS);
                        let written = streams
                            .iter()
                            .skip(k * share)
                            .take(share)
                            .filter(
                                |s| matches!((&mut &**s).write(&bytes), Ok(n) if n == bytes.len()),
                            )
                            .count();
                        let _ = done.send(written);
                    }
                });
                tx
            })
            .collect();
        Writers { jobs, open }
    }

    /// Writes `bytes` to every stream; returns how many writes were whole and
    /// how many were not.
    async fn push(&self, bytes: Vec<u8>) -> Result<(usize, usize), BoxError> {
        let bytes = Arc::new(bytes);
        let mut answers = Vec::new();
        for job in &self.jobs {
            let (done, answer) = tokio::sync::oneshot::channel();
            job.send((bytes.clone(), done))?;
            answers.push(answer);
        }
        let mut written = 0;
        for answer in answers {
            written += answer.await?;
        }
        Ok((written, self.open.read().unwrap().len() - written))
    }
}

/// Reads a request head, answers it with the SSE head and the current event,
/// and hands the socket back for pushes.
async fn answer(mut stream: TcpStream, revision: u64) -> std::io::Result<std::net::TcpStream> {
    let mut head = Vec::with_capacity(1024);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || stream.read_buf(&mut head).await? == 0 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
    stream.set_nodelay(true)?;
    let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-store\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    out.extend_from_slice(&chunked("retry: 2000\n\n"));
    out.extend_from_slice(&chunk(revision));
    stream.write_all(&out).await?;
    stream.into_std()
}
