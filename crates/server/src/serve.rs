//! The accept loop. hyper serves every connection, except one whose first bytes
//! are an event stream request (`GET /v1/me/events`): [`crate::push::direct`]
//! serves that one, through the same router, and writes the stream's body straight
//! to the socket (see there why).
//!
//! Bounds (protocol §5, `[connections]`): each connection takes a place under
//! `max_connections` at accept, held by its socket (see [`crate::connection`],
//! which also enforces the header, idle, body and write timeouts). Past the cap a
//! connection is still accepted, so that health checks never fail: its head must
//! come within a second, `GET /healthz` is answered 200 and anything else 503
//! `unavailable` (`Retry-After: 1`), then it is closed. At most
//! [`OVER_CAPACITY_AT_ONCE`] such answers run at once; beyond them a connection
//! is closed as soon as it is accepted.
//!
//! Shutdown: once `shutdown` completes the loop stops accepting (the listener is
//! closed), a connection with no request in flight is closed (a head still
//! arriving is not a request yet), and one with a request in flight shuts down
//! gracefully after its answer. Streams end on their own (the shutdown closes every
//! revision slot). After `shutdown_timeout` every connection left is dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Version};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::api::error::{ApiError, Code};
use crate::config::Connections;
use crate::connection::{self, Connection, ConnectionIo, IoLimits};
use crate::push::direct;

/// Over-capacity connections answered at once; more are closed at once.
pub const OVER_CAPACITY_AT_ONCE: usize = 64;
/// How long an over-capacity connection may take to send its head, and to take
/// its answer.
const OVER_CAPACITY_TIMEOUT: Duration = Duration::from_secs(1);
/// The largest head an over-capacity connection may send.
const OVER_CAPACITY_MAX_HEAD: usize = 16 * 1024;

/// Serves `router` on `listener` until `shutdown` completes and every connection
/// has ended, or `limits.shutdown_timeout` has passed since; returns that
/// deadline. Handlers see the peer's address as `ConnectInfo<SocketAddr>` and the
/// connection as `Arc<Connection>` (not on the direct path).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Connections,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) -> Instant {
    // Connections watch `signal` to start their shutdown.
    let (signal_tx, signal_rx) = watch::channel(());
    let capacity = Arc::new(Semaphore::new(
        max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let over_capacity = Arc::new(Semaphore::new(OVER_CAPACITY_AT_ONCE));
    let mut http = http1::Builder::new();
    // hyper's header timer runs from the moment a connection waits for a request
    // until its head is parsed, so it is the idle timeout here; `ConnectionIo`
    // adds the (shorter) header timeout.
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            // Reaps finished connections, so the set holds open ones only.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = &mut shutdown => break,
        };
        let accepted_at = Instant::now();
        match capacity.clone().try_acquire_owned() {
            Ok(permit) => {
                let (router, signal, http) = (router.clone(), signal_rx.clone(), http.clone());
                connections.spawn(async move {
                    let accepted = Accepted {
                        stream,
                        remote,
                        at: accepted_at,
                        permit,
                    };
                    serve_connection(accepted, router, signal, limits, http).await;
                });
            }
            Err(_) => match over_capacity.clone().try_acquire_owned() {
                Ok(permit) => {
                    connections.spawn(answer_over_capacity(stream, permit));
                }
                Err(_) => drop(stream),
            },
        }
    }
    drop(listener);
    let deadline = Instant::now() + limits.shutdown_timeout;
    signal_tx.send_replace(());
    let drained = tokio::time::timeout_at(deadline, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "dropping the connections still open at the shutdown deadline"
        );
        connections.shutdown().await;
    }
    deadline
}

/// A connection just accepted, with its place under the cap.
struct Accepted {
    stream: TcpStream,
    remote: SocketAddr,
    at: Instant,
    permit: OwnedSemaphorePermit,
}

async fn serve_connection(
    accepted: Accepted,
    router: Router,
    mut signal: watch::Receiver<()>,
    limits: Connections,
    http: http1::Builder,
) {
    let Accepted {
        stream,
        remote,
        at,
        permit,
    } = accepted;
    let head_due = at + limits.header_timeout;
    // A connection that sends nothing in time, or nothing before shutdown starts,
    // is simply closed.
    let event_stream = tokio::select! {
        is = tokio::time::timeout_at(head_due, direct::is_event_stream(&stream)) => match is {
            Ok(is) => is,
            Err(_) => return,
        },
        _ = signal.changed() => return,
    };
    if event_stream {
        let write_timeout = limits.stream_write_timeout;
        direct::serve(stream, remote, router, signal, head_due, write_timeout).await;
        drop(permit);
        return;
    }
    let connection = Arc::new(Connection::default());
    let io_limits = IoLimits {
        header_timeout: limits.header_timeout,
        write_timeout: limits.stream_write_timeout,
    };
    let io = ConnectionIo::new(stream, connection.clone(), io_limits, at, permit);
    let body_timeout = limits.body_timeout;
    let (for_requests, for_answers) = (connection.clone(), connection.clone());
    let service = TowerToHyperService::new(
        router
            .map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(remote));
                req.extensions_mut().insert(for_requests.clone());
                req.map(|body| {
                    Body::new(connection::request_started(
                        &for_requests,
                        body,
                        body_timeout,
                    ))
                })
            })
            .map_response(move |res: Response| {
                connection::answer_started(res, for_answers.clone())
            }),
    );
    let mut conn = pin!(http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades());
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::trace!(error = %e, "connection ended with an error");
            }
            return;
        }
        _ = signal.changed() => {}
    }
    if !connection.busy() {
        return;
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::trace!(error = %e, "connection ended with an error");
    }
}

/// Answers a connection over `max_connections`: 200 to `GET /healthz`, 503 to
/// anything else, nothing to a head that does not come within a second.
async fn answer_over_capacity(mut stream: TcpStream, _permit: OwnedSemaphorePermit) {
    let deadline = Instant::now() + OVER_CAPACITY_TIMEOUT;
    let Ok(Some((healthz, version))) =
        tokio::time::timeout_at(deadline, read_request_kind(&mut stream)).await
    else {
        return;
    };
    let response = if healthz {
        axum::Json(serde_json::json!({"status": "ok"})).into_response()
    } else {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                Code::Unavailable,
                "the server is at its connection limit; retry",
            )
        }
        .into_response()
    };
    let _ = direct::write_whole(&mut stream, response, version, OVER_CAPACITY_TIMEOUT).await;
}

/// Reads a request head: whether it is `GET /healthz`, and its version. `None`
/// if the peer went away first. A head that is malformed or too large is
/// "something else".
async fn read_request_kind(stream: &mut TcpStream) -> Option<(bool, Version)> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        buf.reserve(1024);
        if stream.read_buf(&mut buf).await.ok()? == 0 {
            return None;
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let healthz = request.method == Some("GET")
                    && request
                        .path
                        .is_some_and(|p| p.split('?').next() == Some("/healthz"));
                let version = match request.version {
                    Some(0) => Version::HTTP_10,
                    _ => Version::HTTP_11,
                };
                return Some((healthz, version));
            }
            Ok(httparse::Status::Partial) if buf.len() < OVER_CAPACITY_MAX_HEAD => {}
            _ => return Some((false, Version::HTTP_11)),
        }
    }
}

/// After a failed accept: a peer that went away is nothing; anything else (most
/// likely out of open files) is logged, then the loop pauses so that closing
/// connections can free some, rather than spinning.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
