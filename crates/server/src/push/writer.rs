//! Writing a stream's frames from the publisher, for the SSE connections that
//! [`super::direct`] serves.
//!
//! Waking a connection's task to write one small frame costs more than the write
//! itself: the task, its future, its timer and its socket registration are all
//! cold in the cache when a role edit reaches 10k streams at once. So a direct
//! connection also registers a [`DirectWriter`] in its user's slot, and the
//! publisher offers each new frame to it: if the socket takes the frame whole
//! right away (the common case: an idle stream's send buffer is empty), that is
//! all; the task is not woken. Otherwise the writer wakes the task, which writes
//! what the socket did not take and then whatever the slot holds, as for any
//! stream.
//!
//! The writer's state is O(1): the highest revision sent, whether the task is
//! writing (then publishers leave the socket to it, so bytes never interleave),
//! at most the unsent rest of one frame, and whether it was stopped (its session
//! ended or the server is closing: from then on only the task writes). A client
//! that stops reading thus costs its socket buffer and one partial frame at most;
//! when it reads again, the task writes the latest revision.
//!
//! The task's own writes ([`DirectWriter::write_all`]) wait for room with a
//! timer, the only one a stalled stream costs: a socket that takes no byte for
//! the write timeout is reset, and one still full when the writer is stopped or
//! the token expires is reset at once, rather than left to drain its last frame
//! to a client that does not read (SO_LINGER 0: the kernel drops what it holds).

use std::io;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use permsync_core::Timestamp;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::hub::Frames;

/// What publishers count as they write.
#[derive(Clone)]
pub struct PushCounters {
    pub events_sent: Counter,
    pub push_latency_seconds: Histogram,
}

impl PushCounters {
    /// The server's own `events_sent` and `push_latency_seconds`.
    pub fn of(metrics: &crate::metrics::Metrics) -> Self {
        PushCounters {
            events_sent: metrics.events_sent.clone(),
            push_latency_seconds: metrics.push_latency_seconds.clone(),
        }
    }

    /// Counts an event written after a change (not a connection's first one),
    /// with the time from the change's commit.
    pub fn live_event(&self, committed_at: Timestamp) {
        self.events_sent.inc();
        let latency_ms = (crate::time::now().0 - committed_at.0).max(0);
        self.push_latency_seconds
            .observe(latency_ms as f64 / 1000.0);
    }
}

pub struct DirectWriter {
    socket: std::sync::Arc<TcpStream>,
    /// HTTP/1.1 chunked framing, else HTTP/1.0's bytes as they are.
    chunked: bool,
    /// The session of the stream's token.
    sid: Option<String>,
    state: Mutex<WriterState>,
    /// Wakes the connection's task: a frame is left to it, or it was stopped.
    wake: Notify,
    /// Wakes the task's wait for room when the writer is stopped. Apart from
    /// `wake`, so that publishers' frames do not wake a write stalled on a full
    /// socket.
    stopped: Notify,
}

struct WriterState {
    /// The highest revision written to the socket, or being written by the task.
    sent: u64,
    /// The task is writing: publishers leave the socket to it.
    task_writing: bool,
    /// What a publisher's write left unsent of its frame; the task writes it first.
    rest: Option<Bytes>,
    /// Only the task writes from now on (the session ended, the server closes).
    stopped: bool,
}

impl DirectWriter {
    /// A writer whose task holds the socket until its first [`end`](Self::end),
    /// so nothing is offered before the response head and first event are out.
    pub fn new(socket: std::sync::Arc<TcpStream>, chunked: bool, sid: Option<String>) -> Self {
        DirectWriter {
            socket,
            chunked,
            sid,
            state: Mutex::new(WriterState {
                sent: 0,
                task_writing: true,
                rest: None,
                stopped: false,
            }),
            wake: Notify::new(),
            stopped: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, WriterState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn chunked(&self) -> bool {
        self.chunked
    }

    /// Which of `frames` this connection sends: the chunk, or HTTP/1.0's bare event.
    pub fn frame<'a>(&self, frames: &'a Frames) -> &'a Bytes {
        if self.chunked {
            &frames.sse_chunk
        } else {
            &frames.sse
        }
    }

    pub fn sid(&self) -> Option<&str> {
        self.sid.as_deref()
    }

    /// The publisher's side: writes the frame announcing `revision` if the
    /// socket takes it now, else leaves it to the task. Never blocks, and never
    /// writes a revision at or below one already sent.
    pub fn offer(
        &self,
        revision: u64,
        frames: &Frames,
        committed_at: Timestamp,
        counters: &PushCounters,
    ) {
        let frame = self.frame(frames);
        let mut state = self.lock();
        if state.stopped || state.sent >= revision {
            return;
        }
        if state.task_writing || state.rest.is_some() {
            drop(state);
            self.wake.notify_one();
            return;
        }
        match self.socket.try_write(frame) {
            Ok(n) => {
                state.sent = revision;
                if n < frame.len() {
                    state.rest = Some(frame.slice(n..));
                    drop(state);
                    self.wake.notify_one();
                }
                counters.live_event(committed_at);
            }
            // The socket is full (or failed): the task waits for room, or finds
            // the failure, and writes the slot's latest revision.
            Err(_) => {
                drop(state);
                self.wake.notify_one();
            }
        }
    }

    /// Stops publishers' writes and wakes the task, which finds out why in the slot.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.wake.notify_one();
        self.stopped.notify_waiters();
    }

    /// Waits until a publisher wakes the task.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// The task's side: takes the socket for its own writes. Returns what a
    /// publisher left unsent (to be written first) and the highest revision sent.
    pub fn begin(&self) -> (Option<Bytes>, u64) {
        let mut state = self.lock();
        state.task_writing = true;
        (state.rest.take(), state.sent)
    }

    /// Gives the socket back to publishers once the task has sent up to `sent`.
    /// A publisher that came meanwhile woke the task, so it looks again.
    pub fn end(&self, sent: u64) {
        let mut state = self.lock();
        state.sent = state.sent.max(sent);
        state.task_writing = false;
    }

    /// Writes all of `bytes` for the task, waiting for room as needed. Resets
    /// the connection (and fails) when the socket takes no byte for
    /// `write_timeout`, or is full while the writer is stopped (its session
    /// ended, the server closes) or after `expires` (the token's end): such a
    /// stream must end now, and its client is not reading.
    pub async fn write_all(
        &self,
        mut bytes: &[u8],
        write_timeout: Duration,
        expires: Instant,
    ) -> io::Result<()> {
        // When a wait for room gives up; `None` while bytes go out.
        let mut give_up: Option<Instant> = None;
        while !bytes.is_empty() {
            match self.socket.try_write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    bytes = &bytes[n..];
                    give_up = None;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            let stopped = self.stopped.notified();
            let mut stopped = std::pin::pin!(stopped);
            // Enabled before the flag is read, so a `stop` after the read wakes it.
            stopped.as_mut().enable();
            let now = Instant::now();
            if self.lock().stopped || now >= expires {
                return Err(self.reset());
            }
            let due = *give_up.get_or_insert_with(|| (now + write_timeout).min(expires));
            tokio::select! {
                ready = self.socket.writable() => ready?,
                () = stopped => return Err(self.reset()),
                () = tokio::time::sleep_until(due) => return Err(self.reset()),
            }
        }
        Ok(())
    }

    /// Makes closing the socket a reset, which drops what the kernel holds for it.
    fn reset(&self) -> io::Error {
        let _ = self.socket.set_zero_linger();
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the stream's socket took nothing in time",
        )
    }

    /// Encodes one of the task's frames for this connection.
    pub fn encode(&self, data: &[u8]) -> Bytes {
        if self.chunked {
            chunk(data)
        } else {
            Bytes::copy_from_slice(data)
        }
    }
}

/// `data` as one HTTP/1.1 chunk.
pub fn chunk(data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 12);
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::FutureExt;
    use tokio::io::AsyncReadExt;

    use super::*;

    fn counters() -> PushCounters {
        PushCounters::of(&crate::metrics::Metrics::new())
    }

    /// A writer on one end of a loopback connection, and the other end.
    async fn pair(chunked: bool) -> (DirectWriter, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        server.writable().await.unwrap();
        let writer = DirectWriter::new(Arc::new(server), chunked, Some("s1".into()));
        (writer, client)
    }

    async fn read_some(client: &mut TcpStream) -> Vec<u8> {
        let mut buf = vec![0; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("bytes arrive")
            .unwrap();
        buf.truncate(n);
        buf
    }

    fn woken(writer: &DirectWriter) -> bool {
        writer.woken().now_or_never().is_some()
    }

    #[tokio::test]
    async fn offers_wait_for_the_task_then_go_straight_to_the_socket() {
        let (writer, mut client) = pair(true).await;
        let counters = counters();
        // The task holds the socket until its first `end`: an offer only wakes it.
        writer.offer(5, &Frames::new(5), Timestamp(0), &counters);
        assert!(woken(&writer));
        assert_eq!(counters.events_sent.get(), 0);
        writer.end(4);

        writer.offer(5, &Frames::new(5), Timestamp(0), &counters);
        assert_eq!(read_some(&mut client).await, &Frames::new(5).sse_chunk[..]);
        assert!(!woken(&writer), "a whole write leaves the task asleep");
        assert_eq!(counters.events_sent.get(), 1);

        // Never the same or a lower revision again.
        writer.offer(5, &Frames::new(5), Timestamp(0), &counters);
        writer.offer(3, &Frames::new(3), Timestamp(0), &counters);
        assert_eq!(counters.events_sent.get(), 1);
        assert!(!woken(&writer));
        assert_eq!(writer.begin(), (None, 5));
    }

    #[tokio::test]
    async fn http_1_0_gets_the_bare_event() {
        let (writer, mut client) = pair(false).await;
        writer.end(0);
        writer.offer(9, &Frames::new(9), Timestamp(0), &counters());
        assert_eq!(read_some(&mut client).await, &Frames::new(9).sse[..]);
    }

    #[tokio::test]
    async fn a_stopped_writer_leaves_everything_to_the_task() {
        let (writer, _client) = pair(true).await;
        let counters = counters();
        writer.end(1);
        writer.stop();
        assert!(woken(&writer));
        writer.offer(2, &Frames::new(2), Timestamp(0), &counters);
        assert_eq!(counters.events_sent.get(), 0);
        assert_eq!(writer.begin(), (None, 1));
    }

    #[tokio::test]
    async fn a_full_socket_hands_the_latest_revision_to_the_task() {
        let (writer, mut client) = pair(true).await;
        writer.end(0);
        // Fill the socket: the client reads nothing yet.
        let filler = vec![b'x'; 64 * 1024];
        loop {
            match writer.socket.try_write(&filler) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let counters = counters();
        writer.offer(7, &Frames::new(7), Timestamp(0), &counters);
        assert!(woken(&writer), "the task is told to write");
        let (rest, sent) = writer.begin();
        // What the socket took of the frame, if anything, is sent; the rest is
        // the task's to write first.
        match rest {
            None => assert_eq!(sent, 0),
            Some(rest) => {
                assert_eq!(sent, 7);
                assert!(Frames::new(7).sse_chunk.ends_with(&rest));
            }
        }
        // While the task writes, publishers keep off the socket.
        writer.offer(8, &Frames::new(8), Timestamp(0), &counters);
        assert!(woken(&writer));
        let drain = tokio::spawn(async move {
            let mut buf = vec![0; 64 * 1024];
            while client.read(&mut buf).await.unwrap_or(0) > 0 {}
        });
        let far = Instant::now() + std::time::Duration::from_secs(60);
        writer
            .write_all(
                &Frames::new(8).sse_chunk,
                std::time::Duration::from_secs(30),
                far,
            )
            .await
            .unwrap();
        writer.end(8);
        assert_eq!(writer.begin(), (None, 8));
        drain.abort();
    }
}
