//! One connection as hyper serves it: the time limits of its requests (protocol
//! §5), and the handle its streams use to end it at once.
//!
//! hyper's own `header_read_timeout` (with a `TokioTimer`) runs from the moment
//! the connection waits for a request, on its first poll and again as soon as a
//! keep-alive connection goes idle after an answer, until the whole head is
//! parsed. It cannot tell an idle connection from a slow head, so it serves as the
//! idle timeout ([`Connections::idle_timeout`]), and [`ConnectionIo`] adds the
//! header timeout: the first head must be complete `header_timeout` after the
//! connection was accepted, a later one `header_timeout` after its first byte.
//! [`BodyWithDeadline`] bounds a request body from its head's arrival. (tower-http's
//! `RequestBodyTimeoutLayer` bounds the wait for each frame, not the whole body, so
//! a client sending a byte now and then would hold it for ever.)
//!
//! Writes: a write the socket does not take (`Pending`) starts a timer, which
//! progress disarms; at [`Connections::stream_write_timeout`] the connection is
//! reset. A stream served on the connection (SSE, the change stream, a WebSocket
//! after its upgrade, whose IO is still this one) registers the [`Connection`] in
//! its user's revision slot: when its session ends or the server closes,
//! [`Connection::end_stream`] wakes the connection's task, and from then on a
//! write the socket cannot take at once resets the connection instead of
//! waiting (SO_LINGER 0, so the kernel drops what is queued). The stream's token
//! expiry bounds a pending write the same way, because a body that waits for the
//! socket is not polled and cannot notice the time itself. One handle and one IO
//! wrapper cover every kind of stream and answer; the per-write cost is a branch,
//! and a timer exists only while a write or a head waits.
//!
//! The IO also holds the connection's place under `max_connections`, so a
//! WebSocket keeps it after the upgrade hands the IO over.
//!
//! [`Connections::idle_timeout`]: crate::config::Connections::idle_timeout
//! [`Connections::stream_write_timeout`]: crate::config::Connections::stream_write_timeout

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

/// What a connection's IO, its requests and its streams share. Requests find it
/// in their extensions (as `Arc<Connection>`).
#[derive(Default)]
pub struct Connection {
    /// Request heads read on this connection.
    heads: AtomicU64,
    /// Answers finished (their body dropped by hyper).
    answered: AtomicU64,
    /// Answered 101: the IO belongs to another protocol now; no head follows.
    upgraded: AtomicBool,
    /// The stream served on it must end: a write the socket cannot take now
    /// resets the connection.
    ending: AtomicBool,
    /// When the stream served on it must end (its token's expiry): a write still
    /// pending then resets the connection.
    stream_deadline: Mutex<Option<Instant>>,
    /// The connection's task, woken by [`Connection::end_stream`].
    waker: AtomicWaker,
}

impl Connection {
    /// A request head was read; its answer follows.
    fn head_read(&self) {
        self.heads.fetch_add(1, Ordering::Relaxed);
        // A new request means the previous stream, if any, is over.
        self.ending.store(false, Ordering::Relaxed);
    }

    fn answered(&self) {
        self.answered.fetch_add(1, Ordering::Relaxed);
    }

    /// A request is in flight: its head was read and its answer is not finished.
    pub fn busy(&self) -> bool {
        self.heads.load(Ordering::Relaxed) > self.answered.load(Ordering::Relaxed)
    }

    fn awaits_head(&self) -> bool {
        !self.busy() && !self.upgraded.load(Ordering::Relaxed)
    }

    /// The stream served on this connection must end now (its session ended, its
    /// token expired, the server closes): a write that cannot go out at once
    /// resets the connection. Wakes the connection's task, which may be waiting
    /// for the socket rather than polling the stream.
    pub fn end_stream(&self) {
        self.ending.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Bounds every pending write by `deadline` while a stream with a token
    /// expiring then is served (`None` once it ended).
    pub fn set_stream_deadline(&self, deadline: Option<Instant>) {
        *self
            .stream_deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = deadline;
    }

    fn stream_deadline(&self) -> Option<Instant> {
        *self
            .stream_deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// The time limits a [`ConnectionIo`] enforces.
#[derive(Debug, Clone, Copy)]
pub struct IoLimits {
    pub header_timeout: Duration,
    pub write_timeout: Duration,
}

/// A hyper-served TCP connection: reads time out while a request head is late,
/// writes while the socket takes nothing (see the module docs).
pub struct ConnectionIo {
    stream: TcpStream,
    connection: Arc<Connection>,
    limits: IoLimits,
    /// The head being awaited: how many heads came before it, and when it is due.
    head_due: Option<(u64, Instant)>,
    head_timer: Option<Pin<Box<Sleep>>>,
    /// When the pending write gives up; `None` while writes make progress.
    write_due: Option<Instant>,
    write_timer: Option<Pin<Box<Sleep>>>,
    /// The connection was reset: every later call fails.
    aborted: bool,
    /// Its place under `max_connections`, for as long as the socket lives.
    _permit: OwnedSemaphorePermit,
}

impl ConnectionIo {
    /// Wraps a connection accepted at `accepted_at`: its first head is due
    /// `header_timeout` after that.
    pub fn new(
        stream: TcpStream,
        connection: Arc<Connection>,
        limits: IoLimits,
        accepted_at: Instant,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        ConnectionIo {
            stream,
            connection,
            limits,
            head_due: Some((0, accepted_at + limits.header_timeout)),
            head_timer: None,
            write_due: None,
            write_timer: None,
            aborted: false,
            _permit: permit,
        }
    }

    /// Bytes arrived: while no request is in flight they begin a head, which is
    /// due `header_timeout` from now (unless that head's clock already runs).
    fn bytes_read(&mut self) {
        let heads = self.connection.heads.load(Ordering::Relaxed);
        if self.head_due.is_some_and(|(before, _)| before == heads) {
            return;
        }
        if self.connection.awaits_head() {
            self.head_due = Some((heads, Instant::now() + self.limits.header_timeout));
        }
    }

    /// Whether the awaited head is overdue; registers its timer otherwise.
    fn head_overdue(&mut self, cx: &mut Context<'_>) -> bool {
        let Some((before, due)) = self.head_due else {
            return false;
        };
        if before != self.connection.heads.load(Ordering::Relaxed) || !self.connection.awaits_head()
        {
            // That head arrived (or the IO was upgraded): nothing is awaited.
            self.head_due = None;
            return false;
        }
        poll_until(&mut self.head_timer, due, cx)
    }

    /// Whether a write that the socket did not take must give up now; registers
    /// its timer otherwise.
    fn write_overdue(&mut self, cx: &mut Context<'_>) -> bool {
        // Registered before the flag is read, so an `end_stream` after the read
        // wakes this task.
        self.connection.waker.register(cx.waker());
        if self.connection.ending.load(Ordering::Acquire) {
            return true;
        }
        let due = *self.write_due.get_or_insert_with(|| {
            let stalled = Instant::now() + self.limits.write_timeout;
            self.connection
                .stream_deadline()
                .map_or(stalled, |end| end.min(stalled))
        });
        poll_until(&mut self.write_timer, due, cx)
    }

    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Pending if self.write_overdue(cx) => Poll::Ready(Err(self.abort())),
            Poll::Ready(Ok(n)) if n > 0 => {
                self.write_due = None;
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    /// Resets the connection: SO_LINGER 0, so closing drops what the kernel
    /// still holds for a client that does not read.
    fn abort(&mut self) -> io::Error {
        self.aborted = true;
        let _ = self.stream.set_zero_linger();
        aborted()
    }
}

fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the connection was reset: its socket took nothing in time",
    )
}

/// Polls `timer`, created or moved to `due` as needed; true once `due` passed.
fn poll_until(timer: &mut Option<Pin<Box<Sleep>>>, due: Instant, cx: &mut Context<'_>) -> bool {
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
    if timer.deadline() != due {
        timer.as_mut().reset(due);
    }
    timer.as_mut().poll(cx).is_ready()
}

impl AsyncRead for ConnectionIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.aborted {
            return Poll::Ready(Err(aborted()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.bytes_read();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if this.head_overdue(cx) {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the request head did not arrive in time",
                    )));
                }
                this.connection.waker.register(cx.waker());
                Poll::Pending
            }
            failed => failed,
        }
    }
}

impl AsyncWrite for ConnectionIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.aborted {
            return Poll::Ready(Err(aborted()));
        }
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.after_write(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.aborted {
            return Poll::Ready(Err(aborted()));
        }
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.after_write(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Marks the request's head read on `connection`, and bounds its body by
/// `body_timeout` from now.
pub fn request_started(
    connection: &Arc<Connection>,
    body: Incoming,
    body_timeout: Duration,
) -> BodyWithDeadline {
    connection.head_read();
    BodyWithDeadline {
        body,
        due: Instant::now() + body_timeout,
        timer: None,
    }
}

/// A request body that must have arrived by a deadline; past it, reading fails
/// (the handler answers 400 and hyper closes the connection, whose body was not
/// read to its end).
pub struct BodyWithDeadline {
    body: Incoming,
    due: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

impl HttpBody for BodyWithDeadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            // Only a body that keeps the handler waiting costs a timer.
            Poll::Pending if poll_until(&mut this.timer, this.due, cx) => {
                Poll::Ready(Some(Err(Box::new(BodyTimedOut))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// An answer's body that tells its connection when hyper is done with it.
pub struct AnswerBody {
    body: axum::body::Body,
    connection: Arc<Connection>,
}

/// Wraps the answer to a request of `connection`, so the connection learns when
/// it is finished; a 101 hands the IO over to another protocol for good.
pub fn answer_started(
    response: axum::response::Response,
    connection: Arc<Connection>,
) -> axum::http::Response<AnswerBody> {
    if response.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS {
        connection.upgraded.store(true, Ordering::Relaxed);
    }
    response.map(|body| AnswerBody { body, connection })
}

impl Drop for AnswerBody {
    fn drop(&mut self) {
        self.connection.answered();
    }
}

impl HttpBody for AnswerBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
