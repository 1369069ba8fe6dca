//! Which login sessions are live, in memory, so that the rule "a permsync token
//! counts only while its `sid` names a live session" costs a hash lookup per
//! request, not a store read.
//!
//! Two bounded maps:
//! - `live`: sessions known open, with their user. Filled when this node opens or
//!   refreshes a session, and on a miss (a session another process made: the
//!   command line's `permsync token`, another `serve` on the same database) by one
//!   store lookup ([`AppState::session_is_live`]).
//! - `ended`: sessions known over, from the changelog's `sessions_ended` (whoever
//!   ended them) and from lookups that found no open session. An entry is kept
//!   until every access token of its session must have expired (the access token
//!   lifetime plus the clock leeway after the end); after that a token of the
//!   session would only be looked up again, and found ended or gone.
//!
//! The race between a miss's lookup and an end: the lookup may read "open" just
//! before the end commits, and come back after the changelog tail applied it. So a
//! lookup's "open" is recorded only if the session is not in `ended` by then; and
//! since `ended` forgets entries (by age, or for room), a lookup that started
//! before the last time anything was forgotten is not trusted and is made again.
//! The same holds for this node's own logins and refreshes, whose store write is
//! such a lookup too. An end applied after the answer was recorded removes the
//! session from `live`, so nothing the tail applied is ever undone.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use permsync_core::UserId;

use crate::api::error::{ApiError, Code};
use crate::state::AppState;

/// Sessions kept in each map; past this, room is made (see [`Sessions`]).
const CAPACITY: usize = 200_000;
/// How often a miss is looked up again when its lookups keep racing forgetting.
const LOOKUP_ATTEMPTS: usize = 3;

/// What memory knows of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Open, and the token's user is the session's.
    Live,
    /// Ended, never existed, or not this user's.
    Dead,
    /// Not known here: ask the store.
    Unknown,
}

pub struct Sessions {
    maps: RwLock<Maps>,
    /// How long an ended session is remembered.
    retention: Duration,
    capacity: usize,
}

struct Maps {
    live: HashMap<Box<str>, UserId>,
    ended: HashMap<Box<str>, Instant>,
    /// The last time an entry of `ended` was forgotten: a lookup started before it
    /// may have missed an end that memory no longer shows.
    forgot_at: Option<Instant>,
}

impl Sessions {
    /// `retention`: the access token lifetime plus the verifier's clock leeway.
    pub fn new(retention: Duration, ended: impl IntoIterator<Item = String>) -> Self {
        Self::with_capacity(retention, ended, CAPACITY)
    }

    fn with_capacity(
        retention: Duration,
        ended: impl IntoIterator<Item = String>,
        capacity: usize,
    ) -> Self {
        let now = Instant::now();
        let sessions = Sessions {
            maps: RwLock::new(Maps {
                live: HashMap::new(),
                ended: HashMap::new(),
                forgot_at: None,
            }),
            retention,
            capacity,
        };
        sessions.ended(ended.into_iter().map(|sid| (sid, now)));
        sessions
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Maps> {
        self.maps.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Maps> {
        self.maps.write().unwrap_or_else(|e| e.into_inner())
    }

    /// What memory knows of session `sid` for a token of `user`.
    pub fn known(&self, sid: &str, user: &UserId) -> Known {
        let maps = self.read();
        if let Some(owner) = maps.live.get(sid) {
            return if owner == user {
                Known::Live
            } else {
                Known::Dead
            };
        }
        if maps.ended.contains_key(sid) {
            Known::Dead
        } else {
            Known::Unknown
        }
    }

    /// Whether `sid` is among the sessions known to have ended.
    pub fn is_ended(&self, sid: &str) -> bool {
        self.read().ended.contains_key(sid)
    }

    /// Records what the store said of `sid` (its user while open, else `None`) at a
    /// read that started at `asked_at`. `Err(())` when the answer cannot be trusted
    /// (something was forgotten since the read began): ask again.
    #[allow(clippy::result_unit_err)]
    pub fn record(&self, sid: &str, open: Option<UserId>, asked_at: Instant) -> Result<(), ()> {
        let mut maps = self.write();
        if maps.ended.contains_key(sid) {
            // The end was applied while the store was being asked.
            return Ok(());
        }
        let Some(user) = open else {
            // No open session: it never existed, ended, or was pruned. Remembered
            // as ended, so a token naming it costs no more store reads.
            let Maps {
                ended, forgot_at, ..
            } = &mut *maps;
            self.make_room(ended, forgot_at);
            ended.insert(sid.into(), Instant::now());
            return Ok(());
        };
        if maps.forgot_at.is_some_and(|forgot| forgot >= asked_at) {
            return Err(());
        }
        if maps.live.len() >= self.capacity {
            // Forgetting a live session costs one lookup later, never a wrong answer.
            let drop_every = 4;
            let mut i = 0;
            maps.live.retain(|_, _| {
                i += 1;
                i % drop_every != 0
            });
        }
        maps.live.insert(sid.into(), user);
        Ok(())
    }

    /// Applies ended sessions (from the changelog): their tokens are refused from now on.
    pub fn ended(&self, sids: impl IntoIterator<Item = (String, Instant)>) {
        let mut maps = self.write();
        for (sid, at) in sids {
            maps.live.remove(sid.as_str());
            let Maps {
                ended, forgot_at, ..
            } = &mut *maps;
            if !ended.contains_key(sid.as_str()) {
                self.make_room(ended, forgot_at);
            }
            ended.insert(sid.into_boxed_str(), at);
        }
    }

    /// Forgets ended sessions whose access tokens have all expired.
    pub fn prune(&self, now: Instant) -> usize {
        let mut maps = self.write();
        let before = maps.ended.len();
        let retention = self.retention;
        maps.ended
            .retain(|_, at| now.saturating_duration_since(*at) < retention);
        let forgotten = before - maps.ended.len();
        if forgotten > 0 {
            maps.forgot_at = Some(Instant::now());
        }
        forgotten
    }

    /// Keeps `ended` under its capacity: first what is past retention, then, if
    /// that was not enough, an arbitrary quarter (each such session, if its
    /// tokens come back, is looked up again and found ended).
    fn make_room(&self, ended: &mut HashMap<Box<str>, Instant>, forgot_at: &mut Option<Instant>) {
        if ended.len() < self.capacity {
            return;
        }
        let now = Instant::now();
        let retention = self.retention;
        ended.retain(|_, at| now.saturating_duration_since(*at) < retention);
        if ended.len() >= self.capacity {
            let mut i = 0;
            ended.retain(|_, _| {
                i += 1;
                i % 4 != 0
            });
        }
        *forgot_at = Some(Instant::now());
    }

    /// How many sessions each map holds: (live, ended).
    pub fn sizes(&self) -> (usize, usize) {
        let maps = self.read();
        (maps.live.len(), maps.ended.len())
    }
}

impl AppState {
    /// Whether `sid` is a live session of `user`: from memory, or on a miss from
    /// one store read whose answer memory keeps.
    pub async fn session_is_live(&self, sid: &str, user: &UserId) -> Result<bool, ApiError> {
        match self.sessions.known(sid, user) {
            Known::Live => return Ok(true),
            Known::Dead => return Ok(false),
            Known::Unknown => {}
        }
        for _ in 0..LOOKUP_ATTEMPTS {
            let asked_at = Instant::now();
            let open = self.store.open_session_user(sid).await?;
            if self.sessions.record(sid, open, asked_at).is_ok() {
                return Ok(self.sessions.known(sid, user) == Known::Live);
            }
        }
        Err(ApiError::new(
            Code::Unavailable,
            "the session could not be checked; retry",
        ))
    }

    /// Records a session this node just opened or refreshed (its store write
    /// started at `asked_at`), so its tokens need no lookup.
    pub fn session_opened(&self, sid: &str, user: &UserId, asked_at: Instant) {
        // An untrusted answer only costs the first request a lookup.
        let _ = self.sessions.record(sid, Some(user.clone()), asked_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> UserId {
        UserId::parse("alice").unwrap()
    }

    #[test]
    fn an_end_applied_during_a_lookup_wins() {
        let s = Sessions::new(Duration::from_secs(60), []);
        let asked = Instant::now();
        s.ended([("s1".to_string(), Instant::now())]);
        assert_eq!(s.record("s1", Some(alice()), asked), Ok(()));
        assert_eq!(s.known("s1", &alice()), Known::Dead);
    }

    #[test]
    fn a_lookup_older_than_a_forgetting_is_asked_again() {
        let s = Sessions::new(Duration::from_millis(1), ["old".to_string()]);
        let asked = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(s.prune(Instant::now()), 1);
        assert_eq!(s.record("s1", Some(alice()), asked), Err(()));
        assert_eq!(s.known("s1", &alice()), Known::Unknown);
        assert_eq!(s.record("s1", Some(alice()), Instant::now()), Ok(()));
        assert_eq!(s.known("s1", &alice()), Known::Live);
    }

    #[test]
    fn sessions_belong_to_their_user_and_ends_remove_them() {
        let s = Sessions::new(Duration::from_secs(60), []);
        s.record("s1", Some(alice()), Instant::now()).unwrap();
        assert_eq!(s.known("s1", &alice()), Known::Live);
        assert_eq!(s.known("s1", &UserId::parse("bob").unwrap()), Known::Dead);
        s.ended([("s1".to_string(), Instant::now())]);
        assert_eq!(s.known("s1", &alice()), Known::Dead);
        s.record("gone", None, Instant::now()).unwrap();
        assert_eq!(s.known("gone", &alice()), Known::Dead);
    }

    #[test]
    fn both_maps_stay_bounded() {
        let s = Sessions::with_capacity(Duration::from_secs(60), [], 100);
        for i in 0..1000 {
            s.record(&format!("live{i}"), Some(alice()), Instant::now())
                .unwrap();
            s.ended([(format!("ended{i}"), Instant::now())]);
        }
        let (live, ended) = s.sizes();
        assert!(live <= 100 && ended <= 100, "{live} live, {ended} ended");
        assert_eq!(s.known("live999", &alice()), Known::Live);
        assert!(s.is_ended("ended999"));
    }

    #[test]
    fn ended_sessions_are_forgotten_after_the_retention() {
        let s = Sessions::new(Duration::from_secs(60), []);
        let long_ago = Instant::now() - Duration::from_secs(61);
        s.ended([
            ("old".to_string(), long_ago),
            ("new".to_string(), Instant::now()),
        ]);
        assert_eq!(s.prune(Instant::now()), 1);
        assert!(!s.is_ended("old") && s.is_ended("new"));
    }
}
