//! What every `/v1/me` event stream holds: its user's revision slot (which also
//! announces shutdown), the session and token expiry it answers to, and its place
//! in the stream count. SSE and WebSocket differ only in how they write [`Event`]s.
//!
//! The state is O(1) per connection: a `watch::Receiver` of the user's slot (only
//! the latest revision, never a queue), one timer for both the next keepalive and
//! the token's expiry, and a few words.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap};
use permsync_core::{SessionEnd, Timestamp};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::hub::{Attached, AttachedConnection, Frames, Slot, SlotState, ENDED_KEPT};
use super::open_streams::{StreamGuard, Transport};
use super::writer::DirectWriter;
use crate::api::error::ApiError;
use crate::api::extract::Caller;
use crate::connection::Connection;
use crate::state::AppState;

/// Why a stream ends with a `session` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    LoggedOut,
    Revoked,
    TokenExpired,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::LoggedOut => "logged_out",
            EndReason::Revoked => "revoked",
            EndReason::TokenExpired => "token_expired",
        }
    }
}

impl From<SessionEnd> for EndReason {
    fn from(e: SessionEnd) -> Self {
        match e {
            SessionEnd::LoggedOut => EndReason::LoggedOut,
            SessionEnd::Revoked => EndReason::Revoked,
        }
    }
}

/// What a stream writes next.
pub enum Event {
    /// A revision higher than any this connection was sent; frames shared by all.
    Permissions {
        revision: u64,
        committed_at: Timestamp,
        frames: Frames,
    },
    /// The session or the token ended: say so, then close.
    End(EndReason),
    /// A keepalive period passed (regardless of events in it, so proxies and
    /// clients see one at least every period, as the protocol says).
    Keepalive,
    /// The server is shutting down: close so the client reconnects elsewhere.
    Shutdown,
}

pub struct Subscription {
    state: AppState,
    /// Keeps the user's slot online while this connection lives.
    slot: Arc<Slot>,
    rx: watch::Receiver<SlotState>,
    sid: Option<String>,
    /// Fires at the next keepalive or at the token's expiry, whichever is first.
    timer: Pin<Box<Sleep>>,
    keepalive_period: Duration,
    /// When the token's `exp` passes.
    expires: Instant,
    /// The highest revision this connection was sent (or told it already had).
    sent: u64,
    /// The hyper connection carrying this stream, ended with it (see
    /// [`crate::connection`]); `None` on the direct path and without a connection.
    connection: Option<AttachedConnection>,
    _guard: StreamGuard,
}

impl AppState {
    /// Authenticates an event stream: the `Authorization: Bearer` header when there
    /// is one, else a single-use `?ticket=`. Session and staleness rules apply as
    /// for any request; an expired token's ticket is refused too.
    pub async fn authenticate_stream(
        &self,
        headers: &HeaderMap,
        ticket: Option<&str>,
    ) -> Result<Caller, ApiError> {
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, token)| {
                    scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()
                })
                .map(|(_, token)| token.trim())
                .ok_or_else(|| ApiError::token("expected Authorization: Bearer <token>"))?;
            return self.authenticate(token).await;
        }
        let Some(ticket) = ticket.filter(|t| !t.is_empty()) else {
            return Err(ApiError::token("missing bearer token or ticket"));
        };
        let caller = self
            .tickets
            .redeem(ticket)
            .ok_or_else(|| ApiError::token("unknown, used or expired ticket"))?;
        if caller.exp * 1000 <= self.now().0 {
            return Err(ApiError::token("the ticket's token has expired"));
        }
        if self.session_ended(caller.sid.as_deref()) {
            return Err(ApiError::token("the session has ended"));
        }
        Ok(caller)
    }

    fn session_ended(&self, sid: Option<&str>) -> bool {
        sid.is_some_and(|sid| self.sessions.is_ended(sid))
    }

    /// Joins `caller`'s revision slot and takes a place in the stream count.
    pub fn subscribe(
        &self,
        caller: Caller,
        transport: Transport,
        keepalive: Duration,
    ) -> Result<Subscription, ApiError> {
        let guard = self.open_stream(&caller.user, transport)?;
        let slot = self.hub.join(
            &caller.user,
            self.revision(caller.user.as_str()),
            self.now(),
        );
        // Read again after joining: a change applied before the slot was online
        // was not published to it.
        slot.raise(self.revision(caller.user.as_str()), self.now());
        let rx = slot.subscribe();
        let until_exp =
            Duration::from_millis((caller.exp.saturating_mul(1000) - self.now().0).max(0) as u64);
        let keepalive_period = keepalive.max(Duration::from_millis(10));
        let now = Instant::now();
        let expires = now + until_exp;
        Ok(Subscription {
            state: self.clone(),
            slot,
            rx,
            sid: caller.sid,
            timer: Box::pin(tokio::time::sleep_until(
                (now + keepalive_period).min(expires),
            )),
            keepalive_period,
            expires,
            sent: 0,
            connection: None,
            _guard: guard,
        })
    }
}

impl Subscription {
    /// The revision the connection starts at (for the `Permissions-Revision` header).
    pub fn current_revision(&self) -> u64 {
        self.rx.borrow().revision
    }

    /// The first event: the current revision, sent at once. `None` when the client
    /// said (by `Last-Event-ID`) that it has exactly this revision already.
    pub fn first(&mut self, client_has: Option<u64>) -> Option<Event> {
        match self.look(true)? {
            Event::Permissions { revision, .. } if client_has == Some(revision) => None,
            event => Some(event),
        }
    }

    /// Waits for the next thing to write. Cancel-safe: every branch is, and the
    /// connection's own state changes only after a branch completed.
    pub async fn next(&mut self) -> Event {
        loop {
            let changed = tokio::select! {
                // The timer first: while revisions keep coming (a client that
                // reads slowly always has one waiting), the token's expiry must
                // still be noticed.
                biased;
                () = &mut self.timer => false,
                // The slot lives as long as this subscription, so its sender does.
                _ = self.rx.changed() => true,
            };
            if !changed {
                return self.timer_fired();
            }
            if let Some(event) = self.look(false) {
                return event;
            }
        }
    }

    /// Waits for the timer: a keepalive period passed, or the token expired.
    /// Cancel-safe: the timer is reset only once it fired.
    pub async fn due(&mut self) -> Event {
        (&mut self.timer).await;
        self.timer_fired()
    }

    fn timer_fired(&mut self) -> Event {
        let now = Instant::now();
        if now >= self.expires {
            return Event::End(EndReason::TokenExpired);
        }
        // A keepalive period passed: the next one is a period from now.
        let next = (now + self.keepalive_period).min(self.expires);
        self.timer.as_mut().reset(next);
        Event::Keepalive
    }

    /// What the slot holds that this connection has not sent: shutdown, the end
    /// of its session, or a revision above `sent` (which a publisher's writer
    /// may have raised since the last look).
    pub fn look_after(&mut self, sent: u64) -> Option<Event> {
        self.sent = self.sent.max(sent);
        self.look(false)
    }

    /// The highest revision this connection sent.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// When the token's `exp` passes and the stream ends.
    pub fn expires(&self) -> Instant {
        self.expires
    }

    /// Ties the hyper connection carrying this stream to it: the end of its
    /// session and shutdown end the connection's stream at once, and its
    /// pending writes give up when the token expires.
    pub(crate) fn attach_connection(&mut self, connection: Arc<Connection>) {
        connection.set_stream_deadline(Some(self.expires));
        self.connection = Some(self.slot.attach_connection(self.sid.clone(), connection));
    }

    /// The stream is about to write its last frame: if the socket cannot take
    /// it at once, its connection is reset rather than left waiting.
    pub fn ending(&self) {
        if let Some(attached) = &self.connection {
            attached.connection().end_stream();
        }
    }

    /// Whether the stream must end now (shutdown, or the end of its session),
    /// without taking the slot's revision as seen: for a stream that sends
    /// something other than revisions (the change stream).
    pub fn end_now(&self) -> Option<Event> {
        let slot = self.rx.borrow();
        if slot.closing {
            return Some(Event::Shutdown);
        }
        ended(&self.state, self.sid.as_deref(), &slot, true).map(Event::End)
    }

    /// A writer for a connection whose socket publishers may write to directly,
    /// registered in the user's slot while the returned guard lives.
    pub fn attach_writer(
        &self,
        socket: Arc<tokio::net::TcpStream>,
        chunked: bool,
    ) -> (Arc<DirectWriter>, Attached) {
        let writer = Arc::new(DirectWriter::new(socket, chunked, self.sid.clone()));
        let attached = self.slot.attach(writer.clone());
        (writer, attached)
    }

    /// What the slot holds for this connection: shutdown, the end of its session,
    /// or a revision to send; `None` when nothing is new. Coalesced by the watch
    /// (only ever the latest), and a revision is never one this connection has
    /// sent, so they strictly increase per connection; the `first` look sends the
    /// current revision whatever it is. Only the shared frames are cloned.
    fn look(&mut self, first: bool) -> Option<Event> {
        let slot = self.rx.borrow_and_update();
        if slot.closing {
            return Some(Event::Shutdown);
        }
        // The session may have ended between authentication and joining the slot,
        // before the slot was online to hear of it: the first look asks the
        // server's set too.
        if let Some(reason) = ended(&self.state, self.sid.as_deref(), &slot, first) {
            return Some(Event::End(reason));
        }
        if !first && slot.revision <= self.sent {
            return None;
        }
        self.sent = slot.revision;
        Some(Event::Permissions {
            revision: slot.revision,
            committed_at: slot.committed_at,
            frames: slot.frames.clone(),
        })
    }

    /// Counts a written event. A permissions event that followed a change (`live`,
    /// not the first event of a connection) also records the time from its commit
    /// to its write.
    pub fn record_sent(&self, event: &Event, live: bool) {
        match event {
            Event::Permissions { committed_at, .. } if live => {
                self.state.hub.counters().live_event(*committed_at);
            }
            Event::Permissions { .. } | Event::End(_) => {
                self.state.metrics.events_sent.inc();
            }
            Event::Keepalive | Event::Shutdown => {}
        }
    }
}

/// Whether session `sid` is among the ended ones.
fn ended(
    state: &AppState,
    sid: Option<&str>,
    slot: &SlotState,
    ask_server: bool,
) -> Option<EndReason> {
    let sid = sid?;
    if let Some(reason) = slot.ended_reason(sid) {
        return Some(reason.into());
    }
    // The slot remembers the latest ends only; once its list is full an older
    // end may have been pushed out, and the server's set still knows it (but
    // not why, so such a stream is told `revoked`).
    let ask_server = ask_server || slot.ended.len() >= ENDED_KEPT;
    (ask_server && state.session_ended(Some(sid))).then_some(EndReason::Revoked)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use permsync_core::UserId;
    use permsync_store::SqliteStore;

    use super::*;
    use crate::config::ServerConfig;

    /// Asserts that `start.elapsed()` is `at`, give or take the timer wheel's
    /// rounding up to the next millisecond (time is paused: nothing else moves it).
    fn assert_at(start: Instant, at: Duration) {
        let elapsed = start.elapsed();
        assert!(
            elapsed >= at && elapsed <= at + Duration::from_millis(3),
            "{elapsed:?} instead of {at:?}"
        );
    }

    /// A server state on an in-memory store, made before time is paused (the
    /// store's own timeouts must not see a paused clock jump).
    async fn state() -> AppState {
        let store = Arc::new(SqliteStore::open("sqlite::memory:").await.unwrap());
        AppState::open(store, ServerConfig::default())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn keepalives_come_every_period_until_the_token_expires() {
        let state = state().await;
        tokio::time::pause();
        let caller = Caller {
            user: UserId::parse("alice").unwrap(),
            sid: Some("s1".into()),
            // 40 s from now, to the second.
            exp: state.now().0 / 1000 + 40,
        };
        let until_exp = Duration::from_millis((caller.exp * 1000 - state.now().0) as u64);
        let mut sub = state
            .subscribe(caller, Transport::Sse, Duration::from_secs(15))
            .unwrap();
        assert!(matches!(sub.first(None), Some(Event::Permissions { .. })));
        let start = Instant::now();
        for period in 1..=2 {
            assert!(matches!(sub.next().await, Event::Keepalive));
            assert_at(start, Duration::from_secs(15 * period));
        }
        // The next keepalive would come at 45 s; the token's end comes first.
        assert!(matches!(
            sub.next().await,
            Event::End(EndReason::TokenExpired)
        ));
        assert_at(start, until_exp.saturating_sub(Duration::from_millis(2)));
        // The timer serves the direct path the same way.
        assert!(matches!(
            sub.due().await,
            Event::End(EndReason::TokenExpired)
        ));
    }

    #[tokio::test]
    async fn an_event_does_not_move_the_keepalive_period() {
        let state = state().await;
        tokio::time::pause();
        let alice = UserId::parse("alice").unwrap();
        let caller = Caller {
            user: alice.clone(),
            sid: None,
            exp: state.now().0 / 1000 + 3600,
        };
        let mut sub = state
            .subscribe(caller, Transport::Sse, Duration::from_secs(15))
            .unwrap();
        sub.first(None);
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(5)).await;
        state
            .hub
            .publish(std::slice::from_ref(&alice), 7, state.now());
        assert!(matches!(
            sub.next().await,
            Event::Permissions { revision: 7, .. }
        ));
        assert_at(start, Duration::from_secs(5));
        assert!(matches!(sub.next().await, Event::Keepalive));
        assert_at(start, Duration::from_secs(15));
    }
}
