//! `GET /v1/me/events`: the caller's revision as Server-Sent Events.
//!
//! The body is a plain stream over the connection's [`Subscription`]: it yields a
//! chunk only when hyper polls it, and hyper polls only when its write buffer has
//! room. A client that stops reading therefore holds at most hyper's bounded
//! buffer and the socket's, never a queue of events: when it reads again it gets
//! the latest revision (the watch slot coalesced the rest). Permission frames are
//! the slot's shared `Bytes`, written as they are.
//!
//! A connection served by [`super::direct`] (one whose first request is this
//! stream) is handed the subscription itself instead, and writes the same events
//! to its socket without a body in between.
//!
//! A body waiting for a full socket is not polled, so it cannot notice the end of
//! its session, its token or the server by itself: the subscription ties the
//! hyper connection to the stream ([`Subscription::attach_connection`]), and the
//! connection's IO gives up such a write at once (see [`crate::connection`]).
//!
//! `Last-Event-ID`: when it equals the current revision, the first event is left
//! out (the client has it); any other value, or none, gets the current revision
//! at once. Later events are sent either way.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use serde::Deserialize;
use utoipa::IntoParams;

use super::direct::Handoff;
use super::open_streams::Transport;
use super::subscription::{EndReason, Event, Subscription};
use crate::api::error::ApiResult;
use crate::api::extract::ApiQuery;
use crate::api::PERMISSIONS_REVISION;
use crate::connection::Connection;
use crate::state::AppState;

pub(crate) const RETRY: &[u8] = b"retry: 2000\n\n";
pub(crate) const KEEPALIVE: &[u8] = b": keepalive\n\n";
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// The `session` event announcing why a stream closes.
pub(crate) fn session_frame(reason: EndReason) -> Bytes {
    Bytes::from_static(match reason {
        EndReason::LoggedOut => b"event: session\ndata: {\"reason\":\"logged_out\"}\n\n",
        EndReason::Revoked => b"event: session\ndata: {\"reason\":\"revoked\"}\n\n",
        EndReason::TokenExpired => b"event: session\ndata: {\"reason\":\"token_expired\"}\n\n",
    })
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// A single-use ticket from `POST /v1/me/events/ticket`, for clients that
    /// cannot send an `Authorization` header.
    pub ticket: Option<String>,
}

/// The headers of every SSE response.
pub(crate) fn sse_headers(revision: Option<u64>) -> [(HeaderName, HeaderValue); 4] {
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        // Tells nginx-like proxies not to hold events back in their buffers.
        (X_ACCEL_BUFFERING, HeaderValue::from_static("no")),
        (
            PERMISSIONS_REVISION,
            revision.map_or(HeaderValue::from_static("0"), HeaderValue::from),
        ),
    ]
}

/// A `Last-Event-ID` that names a revision; anything else is ignored.
pub(crate) fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

enum Phase {
    Retry { client_has: Option<u64> },
    First { client_has: Option<u64> },
    Live,
    Done,
}

/// The caller's revision, then one event per increase, keepalive comments, and a
/// `session` event before the stream closes for a session or token end.
#[utoipa::path(get, path = "/v1/me/events", tag = "me",
    params(StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "The last revision the client has; equal to the current one, the first event is left out")),
    responses(
        (status = 200, content_type = "text/event-stream", body = String, headers(("Permissions-Revision" = u64)),
            description = "`retry: 2000`, then `id: N` / `event: permissions` / `data: {\"revision\":N}` at once and at each increase; \
                           `: keepalive` comments; `event: session` / `data: {\"reason\":\"logged_out\"|\"revoked\"|\"token_expired\"}` before closing"),
        (status = 401, body = crate::api::error::Problem),
        (status = 429, body = crate::api::error::Problem, description = "Too many open streams for this user"),
    ),
    security(("bearer" = [])))]
pub(crate) async fn my_events(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<StreamQuery>,
    direct: Option<Extension<Handoff>>,
    connection: Option<Extension<Arc<Connection>>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let caller = state
        .authenticate_stream(&headers, query.ticket.as_deref())
        .await?;
    let mut subscription =
        state.subscribe(caller, Transport::Sse, state.config.stream_keepalive)?;
    if let Some(Extension(connection)) = connection {
        subscription.attach_connection(connection);
    }
    let revision = subscription.current_revision();
    let client_has = last_event_id(&headers);
    let body = match direct {
        // A connection served without hyper writes the stream itself.
        Some(Extension(handoff)) => {
            handoff.give(subscription, client_has);
            Body::empty()
        }
        None => Body::from_stream(events(subscription, client_has)),
    };
    Ok((sse_headers(Some(revision)), body).into_response())
}

fn events(
    subscription: Subscription,
    client_has: Option<u64>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send {
    futures_util::stream::unfold(
        (subscription, Phase::Retry { client_has }),
        |(mut sub, phase)| async move {
            let (event, live) = match phase {
                Phase::Done => return None,
                Phase::Retry { client_has } => {
                    return Some((
                        Ok(Bytes::from_static(RETRY)),
                        (sub, Phase::First { client_has }),
                    ));
                }
                Phase::First { client_has } => match sub.first(client_has) {
                    Some(event) => (event, false),
                    None => (sub.next().await, true),
                },
                Phase::Live => (sub.next().await, true),
            };
            sub.record_sent(&event, live);
            let (bytes, next) = match event {
                Event::Permissions { frames, .. } => (frames.sse, Phase::Live),
                Event::Keepalive => (Bytes::from_static(KEEPALIVE), Phase::Live),
                Event::End(reason) => {
                    sub.ending();
                    (session_frame(reason), Phase::Done)
                }
                // Ending the body ends the response cleanly; the client reconnects
                // (to another node) after the `retry` delay.
                Event::Shutdown => {
                    sub.ending();
                    return None;
                }
            };
            Some((Ok(bytes), (sub, next)))
        },
    )
}
