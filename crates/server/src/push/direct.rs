//! `GET /v1/me/events` connections, served without hyper.
//!
//! An idle event stream is most of what a busy permsync holds, and hyper keeps at
//! least an 8 KiB read buffer and an 8 KiB write buffer for every connection it
//! serves, for as long as it serves it. So the accept loop hands a connection whose
//! first bytes are `GET /v1/me/events` to this module, which:
//! 1. reads and parses the request head (httparse; at most [`MAX_HEAD`] bytes,
//!    due `header_timeout` after the connection was accepted) into a bodiless
//!    request carrying `ConnectInfo`;
//! 2. answers it with the same router as every other request, so middleware,
//!    authentication and CORS are all unchanged; the SSE handler sees the
//!    request's [`Handoff`] and hands its [`Subscription`] over instead of
//!    making a body of it;
//! 3. writes the response head, then the stream's events, chunked (HTTP/1.1) or
//!    delimited by closing (HTTP/1.0), and closes the connection when the stream
//!    ends or the peer goes away. Any other answer (an error) is written whole,
//!    with its length, before closing.
//!
//! What an idle stream then holds is its task, the socket, the subscription and
//! a [`DirectWriter`] in its user's slot, through which publishers write new
//! revisions straight to the socket (one `write` each, no task woken; see
//! [`super::writer`]). The task writes the rest: keepalives, the session's end,
//! and what a full socket did not take. Backpressure is the socket's own: a
//! client that stops reading holds its socket buffer and at most one partial
//! frame, and the revision slot coalesces. A socket that takes no byte for
//! `stream_write_timeout` is reset, and so is one that cannot take the last
//! frame when the session ends, the token expires or the server closes (the
//! writer's wait for room also watches for those; see
//! [`DirectWriter::write_all`]).

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{
    header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Version,
};
use axum::response::IntoResponse;
use axum::Router;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;

use super::sse::{session_frame, KEEPALIVE, RETRY};
use super::subscription::{Event, Subscription};
use super::writer::DirectWriter;
use crate::api::error::ApiError;

/// The start of a request line this module serves; the next byte must end the path.
const PREFIX: &[u8] = b"GET /v1/me/events";
/// The largest request head accepted (a bearer token and a browser's headers fit
/// many times over).
pub const MAX_HEAD: usize = 16 * 1024;
/// The most header lines accepted.
pub const MAX_HEADERS: usize = 64;
/// How many bytes a client may send once its stream started before it is closed.
const MAX_SENT_AFTER_HEAD: usize = 64;
/// The largest non-stream answer written (they are problem+json documents).
const MAX_ANSWER: usize = 64 * 1024;

/// A subscription and the revision its client said it has (`Last-Event-ID`).
type HandedOver = (Subscription, Option<u64>);

/// Where the SSE handler leaves a direct connection's subscription.
#[derive(Clone, Default)]
pub(crate) struct Handoff(Arc<Mutex<Option<HandedOver>>>);

impl Handoff {
    pub(crate) fn give(&self, subscription: Subscription, client_has: Option<u64>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((subscription, client_has));
    }

    fn take(&self) -> Option<HandedOver> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Whether the connection's first bytes, once some arrived, are an event stream
/// request line. Anything else, or a first segment too short to tell, is left to
/// hyper; nothing is consumed either way.
pub(crate) async fn is_event_stream(stream: &TcpStream) -> bool {
    let mut first = [0u8; PREFIX.len() + 1];
    match stream.peek(&mut first).await {
        Ok(n) if n == first.len() => {
            first.starts_with(PREFIX) && matches!(first[PREFIX.len()], b' ' | b'?')
        }
        _ => false,
    }
}

/// Serves one event stream request on `stream`, then closes it. Its head is due
/// at `head_due`; a write the socket takes nothing of for `write_timeout` resets it.
pub(crate) async fn serve(
    mut stream: TcpStream,
    remote: SocketAddr,
    router: Router,
    mut shutdown: watch::Receiver<()>,
    head_due: Instant,
    write_timeout: Duration,
) {
    // Frames are small and each must leave at once.
    let _ = stream.set_nodelay(true);
    let head = tokio::select! {
        head = tokio::time::timeout_at(head_due, read_head(&mut stream, remote)) => head,
        _ = shutdown.changed() => return,
    };
    let (mut request, version) = match head {
        Ok(Ok(Some(request))) => request,
        Ok(Ok(None)) | Err(_) => return,
        Ok(Err(refusal)) => {
            let answer = refusal.into_response();
            let _ = write_whole(&mut stream, answer, Version::HTTP_11, write_timeout).await;
            return;
        }
    };
    let handoff = Handoff::default();
    request.extensions_mut().insert(handoff.clone());
    let response = match router.oneshot(request).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    };
    let written = match handoff
        .take()
        .filter(|_| is_event_stream_response(&response))
    {
        Some((subscription, client_has)) => {
            let chunked = version != Version::HTTP_10;
            let framing = if chunked {
                "transfer-encoding: chunked\r\n"
            } else {
                ""
            };
            let head = head_bytes(response.status(), response.headers(), version, framing);
            drop(response);
            let output = StreamOutput {
                chunked,
                write_timeout,
            };
            write_stream(stream, head, output, subscription, client_has).await
        }
        None => write_whole(&mut stream, response, version, write_timeout).await,
    };
    if let Err(e) = written {
        tracing::debug!(error = %e, "event stream connection ended");
    }
}

/// Reads until a whole request head arrived; `None` if the peer went away first.
async fn read_head(
    stream: &mut TcpStream,
    remote: SocketAddr,
) -> Result<Option<(Request<Body>, Version)>, ApiError> {
    let mut buf = Vec::with_capacity(2048);
    loop {
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(2048);
        }
        if !matches!(stream.read_buf(&mut buf).await, Ok(n) if n > 0) {
            return Ok(None);
        }
        match parse_head(&buf, remote)? {
            Some(request) => return Ok(Some(request)),
            None if buf.len() < MAX_HEAD => {}
            None => return Err(head_too_large()),
        }
    }
}

fn head_too_large() -> ApiError {
    ApiError::invalid(format!("the request head exceeds {MAX_HEAD} bytes"))
        .with_status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
}

/// Parses a request head; `None` while it is incomplete.
pub fn parse_head(
    buf: &[u8],
    remote: SocketAddr,
) -> Result<Option<(Request<Body>, Version)>, ApiError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(
                ApiError::invalid(format!("more than {MAX_HEADERS} header lines"))
                    .with_status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            )
        }
        Err(e) => return Err(ApiError::invalid(format!("malformed HTTP request: {e}"))),
    };
    if len > MAX_HEAD {
        return Err(head_too_large());
    }
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut request = Request::builder()
        .method(parsed.method.unwrap_or("GET"))
        .uri(parsed.path.unwrap_or("/"))
        .version(version);
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| ApiError::invalid(format!("invalid header name {:?}", h.name)))?;
        if name == header::CONTENT_LENGTH && h.value.trim_ascii() != b"0"
            || name == header::TRANSFER_ENCODING
        {
            return Err(ApiError::invalid("an event stream request has no body"));
        }
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| ApiError::invalid(format!("invalid value of header {name}")))?;
        request = request.header(name, value);
    }
    let mut request = request
        .body(Body::empty())
        .map_err(|e| ApiError::invalid(format!("malformed HTTP request: {e}")))?;
    request.extensions_mut().insert(ConnectInfo(remote));
    Ok(Some((request, version)))
}

/// Writes the status line and headers; `framing` replaces any length headers.
fn head_bytes(status: StatusCode, headers: &HeaderMap, version: Version, framing: &str) -> Vec<u8> {
    let mut head = Vec::with_capacity(512);
    let minor = if version == Version::HTTP_10 { 0 } else { 1 };
    let _ = write!(
        head,
        "HTTP/1.{minor} {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in headers {
        if matches!(
            *name,
            header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::CONNECTION
        ) {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let _ = write!(
        head,
        "date: {}\r\n{framing}connection: close\r\n\r\n",
        httpdate::fmt_http_date(SystemTime::now())
    );
    head
}

fn is_event_stream_response(response: &Response<Body>) -> bool {
    response.status() == StatusCode::OK
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"))
}

/// How a stream's bytes go out.
struct StreamOutput {
    /// HTTP/1.1 chunks, else HTTP/1.0's bytes as they are.
    chunked: bool,
    /// How long the socket may take no byte before it is reset.
    write_timeout: Duration,
}

/// Writes the response head, then the stream's events until it ends, the peer
/// goes away or sends more than a few stray bytes.
async fn write_stream(
    stream: TcpStream,
    head: Vec<u8>,
    output: StreamOutput,
    mut sub: Subscription,
    client_has: Option<u64>,
) -> io::Result<()> {
    let socket = Arc::new(stream);
    // The writer holds the socket for this task until its first `end`, so
    // publishers write nothing before the head and the first event.
    let (writer, _attached) = sub.attach_writer(socket.clone(), output.chunked);
    let mut out = Outgoing::new(&writer, output.write_timeout, sub.expires());
    out.raw(head.into());
    out.data(RETRY);
    if let Some(event) = sub.first(client_has) {
        sub.record_sent(&event, false);
        out.event(event);
    }
    let mut probe = [0u8; 16];
    let mut sent_after_head = 0;
    loop {
        out.write().await?;
        if out.ends {
            return Ok(());
        }
        writer.end(sub.sent());
        let due = tokio::select! {
            // The timer first, so that publishers waking the task for every
            // change cannot hold back the token's expiry.
            biased;
            event = sub.due() => Some(event),
            () = writer.woken() => None,
            // A client has nothing to send on a stream; reading tells when it goes
            // away. A few stray bytes (a trailing blank line) are ignored, more end it.
            ready = socket.readable() => {
                ready?;
                match socket.try_read(&mut probe) {
                    Ok(0) => return Ok(()),
                    Ok(n) => {
                        sent_after_head += n;
                        if sent_after_head > MAX_SENT_AFTER_HEAD {
                            return Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return Ok(()),
                }
                None
            }
        };
        // Publishers leave the socket alone until `end`: first what one of them
        // could not finish, then the timer's event, then what the slot holds.
        let (rest, sent) = writer.begin();
        if let Some(rest) = rest {
            out.raw(rest);
        }
        if let Some(event) = due {
            sub.record_sent(&event, true);
            out.event(event);
        }
        if !out.ends {
            if let Some(event) = sub.look_after(sent) {
                sub.record_sent(&event, true);
                out.event(event);
            }
        }
    }
}

/// What the task writes next, framed for the connection.
struct Outgoing<'a> {
    writer: &'a DirectWriter,
    parts: Vec<Bytes>,
    /// The stream ends after these bytes.
    ends: bool,
    /// How long the socket may take no byte.
    write_timeout: Duration,
    /// When the stream's token expires: a write still waiting for room then
    /// resets the connection.
    expires: Instant,
}

impl<'a> Outgoing<'a> {
    fn new(writer: &'a DirectWriter, write_timeout: Duration, expires: Instant) -> Self {
        Outgoing {
            writer,
            parts: Vec::new(),
            ends: false,
            write_timeout,
            expires,
        }
    }

    fn raw(&mut self, bytes: Bytes) {
        self.parts.push(bytes);
    }

    fn data(&mut self, data: &[u8]) {
        self.parts.push(self.writer.encode(data));
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Permissions { frames, .. } => self.raw(self.writer.frame(&frames).clone()),
            Event::Keepalive => self.data(KEEPALIVE),
            Event::End(reason) => {
                self.data(&session_frame(reason));
                self.finish();
            }
            // Ending the body ends the response cleanly; the client reconnects
            // (to another node) after the `retry` delay.
            Event::Shutdown => self.finish(),
        }
    }

    fn finish(&mut self) {
        if self.writer.chunked() {
            self.raw(Bytes::from_static(b"0\r\n\r\n"));
        }
        self.ends = true;
    }

    async fn write(&mut self) -> io::Result<()> {
        for part in self.parts.drain(..) {
            self.writer
                .write_all(&part, self.write_timeout, self.expires)
                .await?;
        }
        Ok(())
    }
}

/// Writes a complete answer with its length, then ends the connection; resets
/// it if the answer does not go out within `write_timeout`.
pub(crate) async fn write_whole(
    stream: &mut TcpStream,
    response: Response<Body>,
    version: Version,
    write_timeout: Duration,
) -> io::Result<()> {
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, MAX_ANSWER)
        .await
        .unwrap_or_default();
    let mut out = head_bytes(
        parts.status,
        &parts.headers,
        version,
        &format!("content-length: {}\r\n", body.len()),
    );
    out.extend_from_slice(&body);
    let written = tokio::time::timeout(write_timeout, async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    })
    .await;
    match written {
        Ok(result) => result,
        Err(_) => {
            let _ = stream.set_zero_linger();
            Err(io::ErrorKind::TimedOut.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[test]
    fn parses_a_complete_head_and_waits_for_a_partial_one() {
        let head = b"GET /v1/me/events?ticket=t HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 7\r\n\r\n";
        for cut in 0..head.len() {
            assert!(
                parse_head(&head[..cut], remote()).unwrap().is_none(),
                "cut at {cut}"
            );
        }
        let (request, version) = parse_head(head, remote()).unwrap().unwrap();
        assert_eq!(version, Version::HTTP_11);
        assert_eq!(request.uri().query(), Some("ticket=t"));
        assert_eq!(request.headers()["last-event-id"], "7");
        assert!(request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .is_some());
        let (_, version) = parse_head(b"GET /v1/me/events HTTP/1.0\r\n\r\n", remote())
            .unwrap()
            .unwrap();
        assert_eq!(version, Version::HTTP_10);
    }

    #[test]
    fn refuses_bad_heads_with_a_reason() {
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let cases = [
            (
                "Host x\r\n".to_string(),
                StatusCode::BAD_REQUEST,
                "malformed",
            ),
            (
                "Content-Length: 5\r\n".into(),
                StatusCode::BAD_REQUEST,
                "no body",
            ),
            (
                "Transfer-Encoding: chunked\r\n".into(),
                StatusCode::BAD_REQUEST,
                "no body",
            ),
            ("x: \x01\r\n".into(), StatusCode::BAD_REQUEST, "malformed"),
            (
                many,
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header lines",
            ),
        ];
        for (headers, status, words) in cases {
            let head = format!("GET /v1/me/events HTTP/1.1\r\n{headers}\r\n");
            let Err(refusal) = parse_head(head.as_bytes(), remote()) else {
                panic!("accepted {head:?}");
            };
            assert!(
                refusal.detail.contains(words),
                "{head:?}: {}",
                refusal.detail
            );
            assert_eq!(refusal.into_response().status(), status, "{head:?}");
        }
    }

    #[test]
    fn chunks_frames() {
        assert_eq!(
            &super::super::writer::chunk(b"data: {\"revision\":12}\n\n")[..],
            b"17\r\ndata: {\"revision\":12}\n\n\r\n"
        );
    }
}
