//! `GET /v1/me/ws`: the caller's revision over a WebSocket, with the same meaning
//! as the SSE stream. Server messages: `{"type":"permissions","revision":N}` (the
//! slot's shared text), `{"type":"ping"}` keepalives (browser code cannot see ping
//! frames, so the SDK needs a visible one) and `{"type":"session","reason":…}`
//! before a close. Close codes: 4401 when the token expired (reconnect with a
//! fresh one), 4403 when the session was logged out or revoked (do not retry with
//! it), 1001 when the server shuts down (reconnect, probably elsewhere).
//!
//! Buffers are set small on purpose: tungstenite's 128 KiB default read buffer
//! would cost over a GiB for 10k idle sockets, and this socket only ever reads
//! control frames and closes.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::open_streams::Transport;
use super::sse::StreamQuery;
use super::subscription::{EndReason, Event, Subscription};
use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::ApiQuery;
use crate::api::PERMISSIONS_REVISION;
use crate::connection::Connection;
use crate::state::AppState;

/// Read chunk size: client messages are tiny (pongs, a close).
const READ_BUFFER: usize = 4 * 1024;
/// Largest client message or frame accepted; anything larger fails the socket.
const MAX_MESSAGE: usize = 4 * 1024;
/// Write each message at once rather than gathering 128 KiB first.
const WRITE_BUFFER: usize = 0;
/// What may pile up while writes fail; a few of our messages fit.
const MAX_WRITE_BUFFER: usize = 16 * 1024;
/// How long a close frame may take to write before the socket is just dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

const CLOSE_TOKEN_EXPIRED: u16 = 4401;
const CLOSE_SESSION_ENDED: u16 = 4403;

fn session_text(reason: EndReason) -> Utf8Bytes {
    Utf8Bytes::from_static(match reason {
        EndReason::LoggedOut => r#"{"type":"session","reason":"logged_out"}"#,
        EndReason::Revoked => r#"{"type":"session","reason":"revoked"}"#,
        EndReason::TokenExpired => r#"{"type":"session","reason":"token_expired"}"#,
    })
}

/// The caller's revision over a WebSocket: at once, then at each increase.
#[utoipa::path(get, path = "/v1/me/ws", tag = "me",
    params(StreamQuery),
    responses(
        (status = 101, description = "WebSocket. Server messages: `{\"type\":\"permissions\",\"revision\":N}`, `{\"type\":\"ping\"}`, \
                                      `{\"type\":\"session\",\"reason\":\"logged_out\"|\"revoked\"|\"token_expired\"}` then close \
                                      (4401 token expired, 4403 session ended, 1001 server shutting down); ping frames"),
        (status = 400, body = crate::api::error::Problem, description = "Not a WebSocket handshake"),
        (status = 401, body = crate::api::error::Problem),
        (status = 429, body = crate::api::error::Problem, description = "Too many open streams for this user"),
    ),
    security(("bearer" = [])))]
pub async fn my_ws(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<StreamQuery>,
    request: Request,
) -> ApiResult<Response> {
    let (mut parts, _body) = request.into_parts();
    // Authenticate before looking at the handshake: a caller without a token
    // learns nothing else.
    let caller = state
        .authenticate_stream(&parts.headers, query.ticket.as_deref())
        .await?;
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &state)
        .await
        .map_err(|r| ApiError::invalid(r.body_text()).with_status(r.status()))?;
    let ping_every = state.config.ws_ping_interval;
    let mut subscription = state.subscribe(caller, Transport::WebSocket, ping_every)?;
    // The upgraded socket is still the connection's IO: a session end, a token
    // expiry or shutdown resets it at once if it cannot take the last message.
    if let Some(connection) = parts.extensions.get::<Arc<Connection>>() {
        subscription.attach_connection(connection.clone());
    }
    let revision = subscription.current_revision();
    let mut res = upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| serve(socket, subscription, ping_every))
        .into_response();
    res.headers_mut()
        .insert(PERMISSIONS_REVISION, HeaderValue::from(revision));
    Ok(res)
}

/// Runs one socket until the session, the token, the client or the server ends it.
async fn serve(mut socket: WebSocket, mut sub: Subscription, ping_every: Duration) {
    // A blocked write (a client that stopped reading) must not hold the task
    // forever; two keepalive periods without progress means the client is gone.
    let send_timeout = ping_every.saturating_mul(2).max(Duration::from_secs(1));
    // Browsers answer ping frames by themselves; silence for three periods means
    // the peer is gone without a close.
    let silence_limit = ping_every.saturating_mul(3);
    let mut heard = Instant::now();
    let mut first = sub.first(None);
    loop {
        let (event, live) = match first.take() {
            Some(event) => (event, false),
            None => tokio::select! {
                biased;
                msg = socket.recv() => match msg {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    // Pongs, pings (answered by tungstenite) and anything else: the
                    // client is alive, and has nothing to say to this endpoint.
                    Some(Ok(_)) => {
                        heard = Instant::now();
                        continue;
                    }
                },
                event = sub.next() => (event, true),
            },
        };
        sub.record_sent(&event, live);
        match event {
            Event::Permissions { frames, .. } => {
                if !send(&mut socket, Message::Text(frames.ws), send_timeout).await {
                    return;
                }
            }
            Event::Keepalive => {
                if heard.elapsed() > silence_limit {
                    return;
                }
                let ping = Message::Text(Utf8Bytes::from_static(r#"{"type":"ping"}"#));
                if !send(
                    &mut socket,
                    Message::Ping(bytes::Bytes::new()),
                    send_timeout,
                )
                .await
                    || !send(&mut socket, ping, send_timeout).await
                {
                    return;
                }
            }
            Event::End(reason) => {
                sub.ending();
                let code = match reason {
                    EndReason::TokenExpired => CLOSE_TOKEN_EXPIRED,
                    EndReason::LoggedOut | EndReason::Revoked => CLOSE_SESSION_ENDED,
                };
                if send(
                    &mut socket,
                    Message::Text(session_text(reason)),
                    CLOSE_TIMEOUT,
                )
                .await
                {
                    close(socket, code, reason.as_str()).await;
                }
                return;
            }
            Event::Shutdown => {
                sub.ending();
                close(socket, close_code::AWAY, "server shutting down").await;
                return;
            }
        }
    }
}

/// Writes one message; false when the socket failed or the write took too long.
async fn send(socket: &mut WebSocket, message: Message, limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, socket.send(message)).await,
        Ok(Ok(()))
    )
}

/// Sends a close frame and waits briefly for the client's, so the close is clean.
async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    if !send(&mut socket, Message::Close(Some(frame)), CLOSE_TIMEOUT).await {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}
