//! The hub: one latest-revision slot per online user. A connection holds a
//! `watch::Receiver` of its user's slot and nothing else, so its state is O(1)
//! and a slow reader can never make the server queue: it only ever sees the latest
//! value. Publishing touches only the slots of online affected users. Shutdown
//! is announced through the same slots, so a connection needs no second channel.
//!
//! A connection served by [`super::direct`] also registers a [`DirectWriter`] in
//! its slot, and publishing offers each new frame to those writers straight away
//! (see [`super::writer`] for why); large fan-outs are split into tasks, so every
//! runtime worker writes a share. A stream that hyper serves registers its
//! [`Connection`] instead, which the end of its session and shutdown end at once
//! (see [`crate::connection`]): its body may be waiting for a full socket, and
//! could not notice the slot itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use permsync_core::{SessionEnd, Timestamp, UserId};
use tokio::sync::watch;

use super::writer::{chunk, DirectWriter, PushCounters};
use crate::connection::Connection;

/// A fan-out this small is written by the publisher itself.
const WRITE_INLINE: usize = 64;
/// A larger one is split into tasks of this many writes, which the runtime's
/// workers share; small enough that none holds a worker for long.
const WRITES_PER_TASK: usize = 256;

/// The messages announcing one revision, encoded once and shared by every
/// connection that sends them.
#[derive(Debug, Clone)]
pub struct Frames {
    /// The SSE event.
    pub sse: Bytes,
    /// The same as an HTTP/1.1 chunk.
    pub sse_chunk: Bytes,
    /// The WebSocket text message.
    pub ws: Utf8Bytes,
}

impl Frames {
    pub fn new(revision: u64) -> Frames {
        let sse =
            format!("id: {revision}\nevent: permissions\ndata: {{\"revision\":{revision}}}\n\n");
        Frames {
            sse_chunk: chunk(sse.as_bytes()),
            sse: Bytes::from(sse),
            ws: Utf8Bytes::from(format!(
                "{{\"type\":\"permissions\",\"revision\":{revision}}}"
            )),
        }
    }
}

/// What every connection of one user watches.
#[derive(Debug, Clone)]
pub struct SlotState {
    pub revision: u64,
    /// When the change that produced `revision` was committed.
    pub committed_at: Timestamp,
    /// The messages announcing `revision`.
    pub frames: Frames,
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
    /// The direct connections' writers, offered every new revision.
    writers: Mutex<Vec<Arc<DirectWriter>>>,
    /// The connections of hyper-served streams, with their session.
    connections: Mutex<Vec<(Option<String>, Arc<Connection>)>>,
    hub: Weak<HubInner>,
}

/// A writer's place in its slot, given up on drop.
pub struct Attached {
    slot: Arc<Slot>,
    writer: Arc<DirectWriter>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.slot
            .writers()
            .retain(|w| !Arc::ptr_eq(w, &self.writer));
    }
}

/// A hyper-served stream's place in its slot, given up on drop.
pub(crate) struct AttachedConnection {
    slot: Arc<Slot>,
    connection: Arc<Connection>,
}

impl AttachedConnection {
    pub(crate) fn connection(&self) -> &Connection {
        &self.connection
    }
}

impl Drop for AttachedConnection {
    fn drop(&mut self) {
        self.connection.set_stream_deadline(None);
        self.slot
            .connections()
            .retain(|(_, c)| !Arc::ptr_eq(c, &self.connection));
    }
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
        if self.revision() < revision {
            raise(&self.tx, revision, committed_at, &Frames::new(revision));
        }
    }

    /// Registers a direct connection's writer, to be offered every revision
    /// raised from now on, and stopped when the server closes.
    pub fn attach(self: &Arc<Self>, writer: Arc<DirectWriter>) -> Attached {
        self.writers().push(writer.clone());
        if self.tx.borrow().closing {
            writer.stop();
        }
        Attached {
            slot: self.clone(),
            writer,
        }
    }

    fn writers(&self) -> MutexGuard<'_, Vec<Arc<DirectWriter>>> {
        self.writers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers the connection of a hyper-served stream of session `sid`, to be
    /// ended when that session ends or the server closes.
    pub(crate) fn attach_connection(
        self: &Arc<Self>,
        sid: Option<String>,
        connection: Arc<Connection>,
    ) -> AttachedConnection {
        self.connections().push((sid, connection.clone()));
        if self.tx.borrow().closing {
            connection.end_stream();
        }
        AttachedConnection {
            slot: self.clone(),
            connection,
        }
    }

    fn connections(&self) -> MutexGuard<'_, Vec<(Option<String>, Arc<Connection>)>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
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
    frames: &Frames,
) -> bool {
    tx.send_if_modified(|s| {
        if s.revision >= seq {
            return false;
        }
        s.revision = seq;
        s.committed_at = committed_at;
        s.frames = frames.clone();
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

#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
    counters: PushCounters,
}

impl Hub {
    /// A hub whose publishers count their writes in `counters`.
    pub fn new(counters: PushCounters) -> Self {
        Hub {
            inner: Arc::default(),
            counters,
        }
    }

    /// What publishers count as they write.
    pub(crate) fn counters(&self) -> &PushCounters {
        &self.counters
    }

    /// The user's slot, created at `revision` if the user has no open connection.
    pub fn join(&self, user: &UserId, revision: u64, now: Timestamp) -> Arc<Slot> {
        let mut slots = self.inner.lock();
        if let Some(slot) = slots.by_user.get(user.as_str()).and_then(Weak::upgrade) {
            return slot;
        }
        let state = SlotState {
            revision,
            committed_at: now,
            frames: Frames::new(revision),
            ended: Arc::from([]),
            closing: slots.closing,
        };
        let slot = Arc::new(Slot {
            user: user.clone(),
            tx: watch::Sender::new(state),
            writers: Mutex::default(),
            connections: Mutex::default(),
            hub: Arc::downgrade(&self.inner),
        });
        slots.by_user.insert(user.clone(), Arc::downgrade(&slot));
        slot
    }

    fn online(&self, user: &str) -> Option<Arc<Slot>> {
        self.inner.lock().by_user.get(user).and_then(Weak::upgrade)
    }

    /// Announces revision `seq` to the online ones among `users`; returns how many
    /// were online. The frames are encoded once for all of them, and the map is
    /// locked once: raising a slot only marks its connections' tasks runnable,
    /// and its direct writers are offered the frame (see the module docs).
    pub fn publish(&self, users: &[UserId], seq: u64, committed_at: Timestamp) -> usize {
        let frames = Arc::new(Frames::new(seq));
        let mut offers = Offers::new(self, seq, frames.clone(), committed_at);
        // Dropped after the lock: the last reference to a slot locks the map.
        let mut raised = Vec::new();
        let slots = self.inner.lock();
        for user in users {
            if let Some(slot) = slots.by_user.get(user.as_str()).and_then(Weak::upgrade) {
                raise(&slot.tx, seq, committed_at, &frames);
                offers.add(&slot.writers());
                raised.push(slot);
            }
        }
        drop(slots);
        offers.finish();
        raised.len()
    }

    /// Tells every connection, and every one that joins later, that the server
    /// is shutting down.
    pub fn close_all(&self) {
        let mut slots = self.inner.lock();
        slots.closing = true;
        let open: Vec<Arc<Slot>> = slots.by_user.values().filter_map(Weak::upgrade).collect();
        drop(slots);
        for slot in open {
            slot.tx.send_modify(|s| s.closing = true);
            for w in slot.writers().iter() {
                w.stop();
            }
            for (_, c) in slot.connections().iter() {
                c.end_stream();
            }
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
            let ended =
                |sid: Option<&str>| sid.is_some_and(|sid| sessions.iter().any(|s| s == sid));
            for w in slot.writers().iter() {
                if ended(w.sid()) {
                    w.stop();
                }
            }
            for (sid, c) in slot.connections().iter() {
                if ended(sid.as_deref()) {
                    c.end_stream();
                }
            }
        }
    }

    /// How many users have at least one open connection.
    pub fn online_users(&self) -> usize {
        self.inner
            .lock()
            .by_user
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}

/// The direct writers a publish offers its revision to: in tasks of
/// [`WRITES_PER_TASK`], each spawned as soon as it is full so that the runtime's
/// other workers start writing while the slots are still being raised; a
/// fan-out of at most [`WRITE_INLINE`] (or one without a runtime) is written by
/// the publisher itself. Each writer keeps its revisions in order, so tasks of
/// two changes may run side by side.
struct Offers<'a> {
    hub: &'a Hub,
    seq: u64,
    frames: Arc<Frames>,
    committed_at: Timestamp,
    pending: Vec<Arc<DirectWriter>>,
    runtime: Option<tokio::runtime::Handle>,
    spawned: bool,
}

impl<'a> Offers<'a> {
    fn new(hub: &'a Hub, seq: u64, frames: Arc<Frames>, committed_at: Timestamp) -> Self {
        Offers {
            hub,
            seq,
            frames,
            committed_at,
            pending: Vec::new(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            spawned: false,
        }
    }

    fn add(&mut self, writers: &[Arc<DirectWriter>]) {
        self.pending.extend(writers.iter().cloned());
        if self.pending.len() >= WRITES_PER_TASK {
            self.spawn();
        }
    }

    fn spawn(&mut self) {
        let Some(runtime) = &self.runtime else {
            return;
        };
        let share = std::mem::take(&mut self.pending);
        let (seq, frames, at) = (self.seq, self.frames.clone(), self.committed_at);
        let counters = self.hub.counters.clone();
        runtime.spawn(async move {
            for w in &share {
                w.offer(seq, &frames, at, &counters);
            }
        });
        self.spawned = true;
    }

    fn finish(mut self) {
        if self.spawned || self.pending.len() > WRITE_INLINE {
            self.spawn();
        }
        for w in &self.pending {
            w.offer(
                self.seq,
                &self.frames,
                self.committed_at,
                &self.hub.counters,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Hub {
        Hub::new(PushCounters::of(&crate::metrics::Metrics::new()))
    }

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    #[test]
    fn publish_raises_online_users_only_and_never_lowers() {
        let hub = hub();
        let alice = hub.join(&user("alice"), 3, Timestamp(0));
        let rx = alice.subscribe();
        assert_eq!(
            hub.publish(&[user("alice"), user("bob")], 5, Timestamp(1)),
            1
        );
        assert_eq!(rx.borrow().revision, 5);
        assert_eq!(rx.borrow().frames.sse, Frames::new(5).sse);
        hub.publish(&[user("alice")], 4, Timestamp(2));
        assert_eq!(rx.borrow().revision, 5);
        drop((rx, alice));
        assert_eq!(hub.online_users(), 0);
        assert_eq!(hub.publish(&[user("alice")], 6, Timestamp(3)), 0);
    }

    #[test]
    fn closing_reaches_open_slots_and_slots_joined_later() {
        let hub = hub();
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
