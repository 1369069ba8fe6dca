//! The hub: one latest-revision slot per online user. A connection holds a
//! `watch::Receiver` of its user's slot and nothing else, so its state is O(1)
//! and a slow reader can never make the server queue: it only ever sees the latest
//! value. Publishing touches only the slots of online affected users. Shutdown
//! is announced through the same slots, so a connection needs no second channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use permsync_core::{SessionEnd, Timestamp, UserId};
use tokio::sync::watch;

/// What every connection of one user watches.
#[derive(Debug, Clone)]
pub struct SlotState {
    pub revision: u64,
    /// When the change that produced `revision` was committed.
    pub committed_at: Timestamp,
    /// The SSE frame announcing `revision`, encoded once and shared.
    pub sse_frame: Bytes,
    /// The WebSocket text message announcing `revision`, encoded once and shared.
    pub ws_text: Utf8Bytes,
    /// The latest sessions of this user that ended, with why (at most
    /// [`ENDED_KEPT`]); a connection of one of them says so and closes. A list
    /// rather than the last end alone, because two ends in a row would otherwise
    /// coalesce and a connection that had not looked in between would miss its own.
    pub ended: Arc<[(String, SessionEnd)]>,
    /// The server is shutting down: every connection closes so its client
    /// reconnects elsewhere.
    pub closing: bool,
}

/// How many ended sessions a slot remembers. Connections also consult the
/// server's set of ended sessions, so an end pushed out of this list is still seen.
pub const ENDED_KEPT: usize = 64;

impl SlotState {
    /// Why `sid` ended, if it is among the ended sessions this slot remembers.
    pub fn ended_reason(&self, sid: &str) -> Option<SessionEnd> {
        self.ended
            .iter()
            .find(|(s, _)| s == sid)
            .map(|(_, reason)| *reason)
    }
}

/// A user's slot; alive while at least one connection holds it.
pub struct Slot {
    pub user: UserId,
    tx: watch::Sender<SlotState>,
    hub: Weak<HubInner>,
}

impl Slot {
    pub fn subscribe(&self) -> watch::Receiver<SlotState> {
        self.tx.subscribe()
    }

    /// Raises the slot to `revision` unless it is there already. A connection calls
    /// it right after joining with the index's revision read *after* the join: a
    /// change applied between creating the slot and that read was published while
    /// the slot was not yet online, and would otherwise be missed.
    pub fn raise(&self, revision: u64, committed_at: Timestamp) {
        raise(
            &self.tx,
            revision,
            committed_at,
            &sse_frame(revision),
            &ws_text(revision),
        );
    }

    /// The revision the slot holds now.
    pub fn revision(&self) -> u64 {
        self.tx.borrow().revision
    }
}

fn raise(
    tx: &watch::Sender<SlotState>,
    seq: u64,
    committed_at: Timestamp,
    sse: &Bytes,
    ws: &Utf8Bytes,
) -> bool {
    tx.send_if_modified(|s| {
        if s.revision >= seq {
            return false;
        }
        s.revision = seq;
        s.committed_at = committed_at;
        s.sse_frame = sse.clone();
        s.ws_text = ws.clone();
        true
    })
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            let slots = &mut hub.lock().by_user;
            // Only remove our own entry: a new slot may already have replaced it.
            if slots
                .get(self.user.as_str())
                .is_some_and(|w| w.strong_count() == 0)
            {
                slots.remove(self.user.as_str());
            }
        }
    }
}

#[derive(Default)]
struct HubInner {
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    by_user: HashMap<UserId, Weak<Slot>, foldhash::fast::RandomState>,
    /// Set once shutdown began; a slot created later starts closed.
    closing: bool,
}

impl HubInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Clone, Default)]
pub struct Hub(Arc<HubInner>);

pub fn sse_frame(revision: u64) -> Bytes {
    Bytes::from(format!(
        "id: {revision}\nevent: permissions\ndata: {{\"revision\":{revision}}}\n\n"
    ))
}

pub fn ws_text(revision: u64) -> Utf8Bytes {
    Utf8Bytes::from(format!(
        "{{\"type\":\"permissions\",\"revision\":{revision}}}"
    ))
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    /// The user's slot, created at `revision` if the user has no open connection.
    pub fn join(&self, user: &UserId, revision: u64, now: Timestamp) -> Arc<Slot> {
        let mut slots = self.0.lock();
        if let Some(slot) = slots.by_user.get(user.as_str()).and_then(Weak::upgrade) {
            return slot;
        }
        let state = SlotState {
            revision,
            committed_at: now,
            sse_frame: sse_frame(revision),
            ws_text: ws_text(revision),
            ended: Arc::from([]),
            closing: slots.closing,
        };
        let slot = Arc::new(Slot {
            user: user.clone(),
            tx: watch::Sender::new(state),
            hub: Arc::downgrade(&self.0),
        });
        slots.by_user.insert(user.clone(), Arc::downgrade(&slot));
        slot
    }

    fn online(&self, user: &str) -> Option<Arc<Slot>> {
        self.0.lock().by_user.get(user).and_then(Weak::upgrade)
    }

    /// Announces revision `seq` to the online ones among `users`; returns how many
    /// were online. The frames are encoded once for all of them, and the map is
    /// locked once: raising a slot only marks its connections' tasks runnable.
    pub fn publish(&self, users: &[UserId], seq: u64, committed_at: Timestamp) -> usize {
        let (sse, ws) = (sse_frame(seq), ws_text(seq));
        // Dropped after the lock: the last reference to a slot locks the map.
        let mut raised = Vec::new();
        let slots = self.0.lock();
        for user in users {
            if let Some(slot) = slots.by_user.get(user.as_str()).and_then(Weak::upgrade) {
                raise(&slot.tx, seq, committed_at, &sse, &ws);
                raised.push(slot);
            }
        }
        drop(slots);
        raised.len()
    }

    /// Tells every connection, and every one that joins later, that the server
    /// is shutting down.
    pub fn close_all(&self) {
        let mut slots = self.0.lock();
        slots.closing = true;
        let open: Vec<Arc<Slot>> = slots.by_user.values().filter_map(Weak::upgrade).collect();
        drop(slots);
        for slot in open {
            slot.tx.send_modify(|s| s.closing = true);
        }
    }

    /// Tells the connections of `sessions` that they ended.
    pub fn end_sessions(&self, user: &UserId, sessions: &[String], reason: SessionEnd) {
        if let Some(slot) = self.online(user.as_str()) {
            slot.tx.send_modify(|s| {
                let keep_old = ENDED_KEPT.saturating_sub(sessions.len()).min(s.ended.len());
                let old = &s.ended[s.ended.len() - keep_old..];
                let new = sessions
                    .iter()
                    .rev()
                    .take(ENDED_KEPT)
                    .rev()
                    .map(|sid| (sid.clone(), reason));
                s.ended = old.iter().cloned().chain(new).collect();
            });
        }
    }

    /// How many users have at least one open connection.
    pub fn online_users(&self) -> usize {
        self.0
            .lock()
            .by_user
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    #[test]
    fn publish_raises_online_users_only_and_never_lowers() {
        let hub = Hub::new();
        let alice = hub.join(&user("alice"), 3, Timestamp(0));
        let rx = alice.subscribe();
        assert_eq!(
            hub.publish(&[user("alice"), user("bob")], 5, Timestamp(1)),
            1
        );
        assert_eq!(rx.borrow().revision, 5);
        assert_eq!(&rx.borrow().sse_frame[..], &sse_frame(5)[..]);
        hub.publish(&[user("alice")], 4, Timestamp(2));
        assert_eq!(rx.borrow().revision, 5);
        drop((rx, alice));
        assert_eq!(hub.online_users(), 0);
        assert_eq!(hub.publish(&[user("alice")], 6, Timestamp(3)), 0);
    }

    #[test]
    fn closing_reaches_open_slots_and_slots_joined_later() {
        let hub = Hub::new();
        let alice = hub.join(&user("alice"), 1, Timestamp(0));
        let mut rx = alice.subscribe();
        assert!(!rx.borrow_and_update().closing);
        hub.close_all();
        assert!(rx.has_changed().unwrap());
        assert!(rx.borrow_and_update().closing);
        let bob = hub.join(&user("bob"), 1, Timestamp(0));
        assert!(bob.subscribe().borrow().closing);
    }
}
