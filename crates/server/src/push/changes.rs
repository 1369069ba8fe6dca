//! `GET /v1/changes/stream`: the changelog as Server-Sent Events, for backends
//! that replicate or audit. `id` is the change's `seq`; a client resumes with
//! `Last-Event-ID` (or `?after=` on its first connection) and gets every later
//! change once, in order: the store reads by `seq` with no gaps, and this stream
//! only moves its position past a change it wrote.
//!
//! It reads the store in pages and waits on the applied-seq watch between them,
//! so an idle stream costs a receiver and a timer, and a slow reader holds at most
//! one page: the next one is read only when hyper asks for more.
//!
//! It sends only changes this node has applied, and it holds a [`Subscription`]
//! to its user's revision slot like any event stream: the slot carries the end of
//! its session (and shutdown), so a revoked session ends the stream at once with
//! `event: session`, wherever it resumed from (a `sessions_ended` record in a
//! page ends it too, in order). The subscription's timer gives the keepalives and
//! the token's expiry, and it ties the hyper connection to the stream, so a
//! stream whose client stopped reading is reset when it must end (see
//! [`crate::connection`]).

use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use permsync_core::{builtin, ChangeKind, UserId};
use serde::Deserialize;
use tokio::sync::watch;
use utoipa::IntoParams;

use super::open_streams::Transport;
use super::sse::{session_frame, sse_headers, KEEPALIVE, RETRY};
use super::subscription::{Event, Subscription};
use crate::api::dto::ChangeRecord;
use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::{ApiQuery, Caller};
use crate::api::needs;
use crate::connection::Connection;
use crate::state::AppState;

/// Changes read from the store per page (and written as one chunk).
const PAGE: u32 = 256;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ChangeStreamQuery {
    /// Start after this `seq` (default 0, the beginning). `Last-Event-ID` wins.
    pub after: Option<u64>,
    /// A single-use ticket from `POST /v1/me/events/ticket`.
    pub ticket: Option<String>,
}

struct Feed {
    state: AppState,
    user: UserId,
    sid: Option<String>,
    /// The `seq` of the last change written.
    last: u64,
    applied: watch::Receiver<u64>,
    /// The user's revision slot: session end, shutdown, keepalives, token expiry.
    sub: Subscription,
    started: bool,
    done: bool,
}

fn may_replicate(state: &AppState, user: &UserId) -> bool {
    let now = state.now();
    let index = state.index();
    [builtin::ADMIN, builtin::REPLICATE]
        .iter()
        .any(|p| index.can(user.as_str(), p, None, now))
}

/// Committed changes in `seq` order, then new ones as they are applied.
#[utoipa::path(get, path = "/v1/changes/stream", tag = "admin",
    params(ChangeStreamQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "The last `seq` the client has; the stream resumes after it")),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
            description = "`retry: 2000`, then per change `id: <seq>` / `event: change` / `data: <the change record of GET /v1/changes>`; \
                           `: keepalive` comments; `event: session` before closing when the token or session ends"),
        (status = 400, body = crate::api::error::Problem),
        (status = 401, body = crate::api::error::Problem),
        (status = 403, body = crate::api::error::Problem),
        (status = 429, body = crate::api::error::Problem),
    ),
    security(("bearer" = [])))]
pub async fn change_stream(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ChangeStreamQuery>,
    connection: Option<Extension<Arc<Connection>>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let caller: Caller = state
        .authenticate_stream(&headers, query.ticket.as_deref())
        .await?;
    if !may_replicate(&state, &caller.user) {
        return Err(needs("permsync:admin or permsync:replicate"));
    }
    let after = match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::invalid("Last-Event-ID must be a change seq"))?,
        None => query.after.unwrap_or(0),
    };
    let (user, sid) = (caller.user.clone(), caller.sid.clone());
    let mut sub = state.subscribe(caller, Transport::Changes, state.config.stream_keepalive)?;
    if let Some(Extension(connection)) = connection {
        sub.attach_connection(connection);
    }
    let revision = sub.current_revision();
    let feed = Feed {
        applied: state.applied_seq_watch.subscribe(),
        state: state.clone(),
        user,
        sid,
        last: after,
        sub,
        started: false,
        done: false,
    };
    Ok((
        sse_headers(Some(revision)),
        Body::from_stream(changes(feed)),
    )
        .into_response())
}

fn changes(feed: Feed) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send {
    futures_util::stream::unfold(feed, |mut feed| async move {
        if feed.done {
            return None;
        }
        if !feed.started {
            feed.started = true;
            return Some((Ok(Bytes::from_static(RETRY)), feed));
        }
        loop {
            // Also asked before every page: the slot may have heard of the
            // session's end while this stream was writing the last one.
            if let Some(end) = feed.sub.end_now() {
                return feed.end(end);
            }
            // Mark the applied seq seen before reading, so a change applied after
            // the read wakes the wait below.
            let applied = *feed.applied.borrow_and_update();
            if !may_replicate(&feed.state, &feed.user) {
                // Lost the permission: close; a reconnect gets 403.
                return None;
            }
            let mut page = match feed.state.store.changes_after(feed.last, PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    // The client resumes from its Last-Event-ID, so nothing is lost.
                    tracing::warn!(error = %e, "reading the changelog for a change stream failed");
                    return None;
                }
            };
            // Changes this node has not applied wait: one of them may end the
            // session, which the slot learns only once it is applied.
            page.retain(|change| change.seq <= applied);
            if !page.is_empty() {
                if let Some(end) = feed.sub.end_now() {
                    return feed.end(end);
                }
                let chunk = feed.encode(&page);
                return Some((Ok(chunk), feed));
            }
            loop {
                tokio::select! {
                    biased;
                    event = feed.sub.next() => match event {
                        // The user's own revision is not this stream's business.
                        Event::Permissions { .. } => continue,
                        Event::Keepalive => return Some((Ok(Bytes::from_static(KEEPALIVE)), feed)),
                        end => return feed.end(end),
                    },
                    changed = feed.applied.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                        break;
                    }
                }
            }
        }
    })
}

impl Feed {
    /// The stream's last frame for `event` (the end of its session or token, or
    /// shutdown, which ends the body without an event).
    fn end(mut self, event: Event) -> Option<(Result<Bytes, Infallible>, Feed)> {
        self.sub.ending();
        self.done = true;
        match event {
            Event::End(reason) => {
                self.sub.record_sent(&event, false);
                Some((Ok(session_frame(reason)), self))
            }
            _ => None,
        }
    }

    /// One chunk of events for `page`, stopping after a change that ended this
    /// stream's own session (followed by its `session` event).
    fn encode(&mut self, page: &[permsync_core::Change]) -> Bytes {
        let mut out = Vec::with_capacity(page.len() * 200);
        let mut sent = 0;
        for change in page {
            let _ = write!(out, "id: {}\nevent: change\ndata: ", change.seq);
            if serde_json::to_writer(&mut out, &ChangeRecord::from(change)).is_err() {
                out.extend_from_slice(b"{}");
            }
            out.extend_from_slice(b"\n\n");
            self.last = change.seq;
            sent += 1;
            if let ChangeKind::SessionsEnded {
                user,
                sessions,
                reason,
            } = &change.kind
            {
                let own = self
                    .sid
                    .as_ref()
                    .is_some_and(|sid| user == &self.user && sessions.contains(sid));
                if own {
                    out.extend_from_slice(&session_frame((*reason).into()));
                    sent += 1;
                    self.done = true;
                    self.sub.ending();
                    break;
                }
            }
        }
        self.state.metrics.events_sent.inc_by(sent);
        Bytes::from(out)
    }
}
