//! Delivery acknowledgements: which browser tabs of a user are open on this node,
//! and which revision each has applied, when (`POST /v1/me/ack`, listed by
//! `GET /v1/users/{user}/tabs`).
//!
//! The registry is in memory and bounded: a tab that has not acknowledged for
//! [`Tabs::ttl`] is gone, a user keeps at most [`MAX_TABS_PER_USER`] tabs (a new
//! one pushes out the one heard from least recently), the node at most
//! [`MAX_TABS`] (one more is refused), and a tab remembers its last
//! [`HISTORY`] applied revisions. It is an observation aid for operators, not
//! part of what permsync guarantees: nothing about delivery depends on it, and a
//! restart or another node simply starts with no tabs.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use permsync_core::{Timestamp, UserId};

/// How long a tab stays listed after its last acknowledgement.
pub const TAB_TTL: Duration = Duration::from_secs(60);
/// Tabs remembered per user.
pub const MAX_TABS_PER_USER: usize = 32;
/// Tabs remembered by one node.
pub const MAX_TABS: usize = 100_000;
/// Applied revisions remembered per tab.
pub const HISTORY: usize = 16;
/// Commit times remembered per user, so several tabs applying one revision cost
/// one changelog read.
const COMMIT_TIMES: usize = 8;
/// How often expired tabs are swept, at most.
const SWEEP_EVERY_MS: i64 = 5_000;

/// One revision a tab applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub revision: u64,
    /// When this node heard of it (the acknowledgement's arrival).
    pub at: Timestamp,
    /// When the change that produced `revision` was committed, if known.
    pub committed_at: Option<Timestamp>,
}

/// A tab, as its acknowledgements describe it.
#[derive(Debug, Clone)]
pub struct Tab {
    /// The client's id for the tab.
    pub id: String,
    /// What the client says the tab shows (an app name, a path); for people.
    pub label: Option<String>,
    /// Whether the tab holds the browser's connection to permsync.
    pub leader: bool,
    /// The highest revision the tab has applied.
    pub revision: u64,
    pub opened_at: Timestamp,
    /// The last acknowledgement.
    pub seen_at: Timestamp,
    /// Newest last.
    pub history: VecDeque<Applied>,
}

/// What an acknowledgement said.
#[derive(Debug, Clone)]
pub struct Ack {
    pub tab: String,
    pub revision: u64,
    pub leader: Option<bool>,
    pub label: Option<String>,
}

/// The node holds [`MAX_TABS`] tabs already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TabsFull;

#[derive(Default)]
struct UserTabs {
    tabs: Vec<Tab>,
    /// Recently looked-up commit times: (revision, committed_at).
    commits: VecDeque<(u64, Timestamp)>,
}

#[derive(Default)]
struct Inner {
    users: HashMap<UserId, UserTabs>,
    total: usize,
    swept_at: i64,
}

pub struct Tabs {
    inner: Mutex<Inner>,
    ttl_ms: i64,
}

impl Tabs {
    pub fn new(ttl: Duration) -> Self {
        Tabs {
            inner: Mutex::new(Inner::default()),
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// How long a tab stays listed without an acknowledgement.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms as u64)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an acknowledgement. Returns the revision the tab newly applied, if
    /// it moved forward (the caller then looks up its commit time), or
    /// [`TabsFull`] for a new tab when the node holds [`MAX_TABS`].
    pub fn ack(&self, user: &UserId, ack: Ack, now: Timestamp) -> Result<Option<u64>, TabsFull> {
        let mut inner = self.lock();
        self.sweep(&mut inner, now, false);
        let Inner { users, total, .. } = &mut *inner;
        let entry = users.entry(user.clone()).or_default();
        let index = match entry.tabs.iter().position(|t| t.id == ack.tab) {
            Some(i) => i,
            None => {
                if entry.tabs.len() >= MAX_TABS_PER_USER {
                    let stalest = entry
                        .tabs
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, t)| t.seen_at)
                        .map(|(i, _)| i);
                    if let Some(i) = stalest {
                        entry.tabs.swap_remove(i);
                        *total -= 1;
                    }
                } else if *total >= MAX_TABS {
                    if entry.tabs.is_empty() {
                        users.remove(user);
                    }
                    return Err(TabsFull);
                }
                entry.tabs.push(Tab {
                    id: ack.tab.clone(),
                    label: None,
                    leader: false,
                    revision: 0,
                    opened_at: now,
                    seen_at: now,
                    history: VecDeque::new(),
                });
                *total += 1;
                entry.tabs.len() - 1
            }
        };
        let known = entry
            .commits
            .iter()
            .find(|(r, _)| *r == ack.revision)
            .map(|(_, at)| *at);
        let tab = &mut entry.tabs[index];
        tab.seen_at = now;
        if let Some(leader) = ack.leader {
            tab.leader = leader;
        }
        if ack.label.is_some() {
            tab.label = ack.label;
        }
        if ack.revision <= tab.revision && !tab.history.is_empty() {
            return Ok(None);
        }
        tab.revision = ack.revision;
        if tab.history.len() == HISTORY {
            tab.history.pop_front();
        }
        tab.history.push_back(Applied {
            revision: ack.revision,
            at: now,
            committed_at: known,
        });
        Ok(known.is_none().then_some(ack.revision))
    }

    /// Fills in when `revision` was committed, for every tab of `user` that
    /// applied it, and remembers it for the next tab.
    pub fn set_committed_at(&self, user: &UserId, revision: u64, committed_at: Timestamp) {
        let mut inner = self.lock();
        let Some(entry) = inner.users.get_mut(user) else {
            return;
        };
        if !entry.commits.iter().any(|(r, _)| *r == revision) {
            if entry.commits.len() == COMMIT_TIMES {
                entry.commits.pop_front();
            }
            entry.commits.push_back((revision, committed_at));
        }
        for tab in &mut entry.tabs {
            for applied in tab.history.iter_mut().filter(|a| a.revision == revision) {
                applied.committed_at = Some(committed_at);
            }
        }
    }

    /// Forgets a tab (it said it closed). True if it was listed.
    pub fn close(&self, user: &UserId, tab: &str) -> bool {
        let mut inner = self.lock();
        let Inner { users, total, .. } = &mut *inner;
        let Some(entry) = users.get_mut(user) else {
            return false;
        };
        let before = entry.tabs.len();
        entry.tabs.retain(|t| t.id != tab);
        let removed = before - entry.tabs.len();
        *total -= removed;
        if entry.tabs.is_empty() {
            users.remove(user);
        }
        removed > 0
    }

    /// The open tabs of `user`, the most recently opened first.
    pub fn of_user(&self, user: &str, now: Timestamp) -> Vec<Tab> {
        let mut inner = self.lock();
        self.sweep(&mut inner, now, true);
        let mut tabs = inner
            .users
            .get(user)
            .map(|e| e.tabs.clone())
            .unwrap_or_default();
        tabs.sort_by(|a, b| b.opened_at.cmp(&a.opened_at).then_with(|| a.id.cmp(&b.id)));
        tabs
    }

    /// Tabs listed on this node now.
    pub fn total(&self) -> usize {
        self.lock().total
    }

    /// Drops tabs not heard from within the TTL; at most every few seconds
    /// unless `force`d (a listing must not show an expired tab).
    fn sweep(&self, inner: &mut Inner, now: Timestamp, force: bool) {
        if !force && now.0 - inner.swept_at < SWEEP_EVERY_MS {
            return;
        }
        inner.swept_at = now.0;
        let deadline = now.0.saturating_sub(self.ttl_ms);
        let Inner { users, total, .. } = inner;
        users.retain(|_, entry| {
            let before = entry.tabs.len();
            entry.tabs.retain(|t| t.seen_at.0 > deadline);
            *total -= before - entry.tabs.len();
            !entry.tabs.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(tab: &str, revision: u64) -> Ack {
        Ack {
            tab: tab.into(),
            revision,
            leader: None,
            label: None,
        }
    }

    fn alice() -> UserId {
        UserId::parse("alice").unwrap()
    }

    #[test]
    fn records_forward_moves_only() {
        let tabs = Tabs::new(Duration::from_secs(60));
        assert_eq!(
            tabs.ack(&alice(), ack("t1", 5), Timestamp(1000)),
            Ok(Some(5))
        );
        assert_eq!(tabs.ack(&alice(), ack("t1", 5), Timestamp(2000)), Ok(None));
        assert_eq!(tabs.ack(&alice(), ack("t1", 4), Timestamp(3000)), Ok(None));
        let listed = tabs.of_user("alice", Timestamp(3000));
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].revision, 5);
        assert_eq!(listed[0].seen_at, Timestamp(3000));
        assert_eq!(listed[0].history.len(), 1);
        assert_eq!(listed[0].history[0].at, Timestamp(1000));
    }

    #[test]
    fn commit_times_are_shared_between_tabs() {
        let tabs = Tabs::new(Duration::from_secs(60));
        assert_eq!(
            tabs.ack(&alice(), ack("t1", 7), Timestamp(1000)),
            Ok(Some(7))
        );
        tabs.set_committed_at(&alice(), 7, Timestamp(990));
        // The second tab finds the commit time already known.
        assert_eq!(tabs.ack(&alice(), ack("t2", 7), Timestamp(1010)), Ok(None));
        for tab in tabs.of_user("alice", Timestamp(1010)) {
            assert_eq!(tab.history[0].committed_at, Some(Timestamp(990)));
        }
    }

    #[test]
    fn expires_and_is_bounded() {
        let tabs = Tabs::new(Duration::from_secs(60));
        tabs.ack(&alice(), ack("old", 1), Timestamp(0)).unwrap();
        tabs.ack(&alice(), ack("new", 1), Timestamp(30_000))
            .unwrap();
        assert_eq!(tabs.of_user("alice", Timestamp(61_000)).len(), 1);
        assert_eq!(tabs.total(), 1);
        for i in 0..(MAX_TABS_PER_USER + 5) {
            tabs.ack(
                &alice(),
                ack(&format!("t{i}"), 1),
                Timestamp(62_000 + i as i64),
            )
            .unwrap();
        }
        let listed = tabs.of_user("alice", Timestamp(70_000));
        assert_eq!(listed.len(), MAX_TABS_PER_USER);
        assert!(
            !listed.iter().any(|t| t.id == "new" || t.id == "t0"),
            "the stalest tabs made room"
        );
        assert_eq!(tabs.total(), MAX_TABS_PER_USER);
        assert!(tabs.close(&alice(), "t10"));
        assert!(!tabs.close(&alice(), "t10"));
        assert_eq!(tabs.total(), MAX_TABS_PER_USER - 1);
    }

    #[test]
    fn history_is_bounded() {
        let tabs = Tabs::new(Duration::from_secs(60));
        for r in 1..=(HISTORY as u64 + 10) {
            tabs.ack(&alice(), ack("t", r), Timestamp(r as i64))
                .unwrap();
        }
        let tab = &tabs.of_user("alice", Timestamp(100))[0];
        assert_eq!(tab.history.len(), HISTORY);
        assert_eq!(
            tab.history.back().map(|a| a.revision),
            Some(HISTORY as u64 + 10)
        );
    }
}
