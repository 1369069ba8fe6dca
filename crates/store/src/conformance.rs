//! The backend-agnostic test suite: every [`Store`] implementation must pass it.
//!
//! Each case is a public async fn taking `&dyn Store` and expects a fresh, empty
//! store. A backend's test binary generates one `#[tokio::test]` per case with
//! [`conformance_tests!`](crate::conformance_tests):
//!
//! ```ignore
//! permsync_store::conformance_tests!(fresh_store());
//! ```
//!
//! where `fresh_store()` is an async fn returning something that dereferences to the
//! store (a `Box`, or a fixture that also keeps a temporary directory alive).
//!
//! The cases panic on failure, like any test.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::future::join_all;
use permsync_core::{
    Change, ChangeKind, Index, Permission, RoleName, Scope, SessionEnd, Timestamp, UserId,
};

use crate::{
    Added, NewBinding, NewGrant, NewSession, RefreshOutcome, Rotation, SigningKey, State, Store,
    StoreError,
};

/// Generates one `#[tokio::test]` per conformance case. `$make` is an expression
/// evaluating to a future of a fixture that dereferences to a fresh store.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            users_lifecycle,
            grants_and_revisions,
            roles_and_bindings,
            invalidate_tracks_unknown_users,
            expire_due_removes_only_due_items,
            delete_user_keeps_revision_monotonic,
            refresh_rotation_and_reuse,
            sessions_end_and_revoke,
            refresh_reuse_grace,
            refresh_races_are_decided_by_the_store,
            prune_sessions_removes_finished_ones,
            list_users_pagination,
            signing_keys,
            seq_gap_free_and_round_trip,
            concurrent_writers_stay_gap_free,
            load_agrees_with_changelog,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture = $make.await;
                $crate::conformance::$case(&*fixture).await;
            }
        )*
    };
}

// ---- small builders ----

const T0: Timestamp = Timestamp(1_700_000_000_000);
const ADMIN: &str = "admin";

fn t(offset_ms: i64) -> Timestamp {
    T0.plus_millis(offset_ms)
}
fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}
fn perm(s: &str) -> Permission {
    Permission::parse(s).unwrap()
}
fn role(s: &str) -> RoleName {
    RoleName::parse(s).unwrap()
}
fn scope(s: &str) -> Scope {
    Scope::parse(s).unwrap()
}
fn new_grant(u: &str, p: &str, s: Option<&str>, expires_at: Option<Timestamp>) -> NewGrant {
    NewGrant {
        user: user(u),
        permission: perm(p),
        scope: s.map(scope),
        expires_at,
    }
}
fn new_binding(u: &str, r: &str, s: Option<&str>, expires_at: Option<Timestamp>) -> NewBinding {
    NewBinding {
        user: user(u),
        role: role(r),
        scope: s.map(scope),
        expires_at,
    }
}
fn new_session(id: &str, u: &str, hash: &str, expires_at: Timestamp) -> NewSession {
    NewSession {
        id: id.into(),
        user: user(u),
        refresh_hash: hash.into(),
        refresh_expires_at: expires_at,
    }
}

/// Every committed change, read in pages the way a tailer reads them.
/// Presents refresh token `old` (its hash, here), to be replaced by `new`, with no
/// grace window: any presentation of a rotated token is reuse.
async fn rotate(
    store: &dyn Store,
    old: &str,
    new: &str,
    new_expires_at: Timestamp,
    at: Timestamp,
) -> crate::Result<RefreshOutcome> {
    rotate_with_grace(store, old, new, new_expires_at, Duration::ZERO, at).await
}

/// As [`rotate`], with a grace window; the successor is "sealed" as `sealed:NEW`.
async fn rotate_with_grace(
    store: &dyn Store,
    old: &str,
    new: &str,
    new_expires_at: Timestamp,
    reuse_grace: Duration,
    at: Timestamp,
) -> crate::Result<RefreshOutcome> {
    let sealed = format!("sealed:{new}");
    store
        .rotate_refresh(
            Rotation {
                old_hash: old,
                new_hash: new,
                new_expires_at,
                successor_sealed: sealed.as_bytes(),
                reuse_grace,
            },
            at,
        )
        .await
}

async fn all_changes(store: &dyn Store) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::new();
    loop {
        let after = out.last().map_or(0, |c| c.seq);
        let page = store.changes_after(after, 7).await.unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

async fn revision(store: &dyn Store, name: &str) -> u64 {
    let state = store.load().await.unwrap();
    state
        .users
        .iter()
        .find(|(u, _, _)| u.as_str() == name)
        .map_or(0, |(_, r, _)| *r)
}

fn created<T>(added: Added<T>) -> (T, Change) {
    match added {
        Added::Created(t, c) => (t, c),
        Added::Existing(_) => panic!("expected a new holding, got an existing one"),
    }
}

fn assert_not_found<T: std::fmt::Debug>(r: crate::Result<T>) {
    assert!(
        matches!(r, Err(StoreError::NotFound(_))),
        "expected NotFound, got {r:?}"
    );
}

fn assert_conflict<T: std::fmt::Debug>(r: crate::Result<T>) {
    assert!(
        matches!(r, Err(StoreError::Conflict(_))),
        "expected Conflict, got {r:?}"
    );
}

/// Seqs 1..=n in order, each once.
fn assert_gap_free(changes: &[Change]) {
    for (i, c) in changes.iter().enumerate() {
        assert_eq!(
            c.seq,
            i as u64 + 1,
            "changelog must be 1..=N without gaps or duplicates"
        );
    }
}

// ---- cases ----

/// Creating, listing, deleting users; passwords; Conflict and NotFound.
pub async fn users_lifecycle(store: &dyn Store) {
    store.ping().await.unwrap();
    assert_eq!(store.last_seq().await.unwrap(), 0);
    let alice = user("alice");

    let c = store
        .create_user(ADMIN, &alice, Some("hash-1"), t(0))
        .await
        .unwrap();
    assert_eq!(c.seq, 1);
    assert_eq!(c.at, t(0));
    assert_eq!(c.actor, ADMIN);
    assert_eq!(
        c.kind,
        ChangeKind::UserCreated {
            user: alice.clone()
        }
    );
    assert_eq!(store.last_seq().await.unwrap(), 1);
    assert_eq!(revision(store, "alice").await, 1);
    assert_eq!(
        store.password_hash(&alice).await.unwrap().as_deref(),
        Some("hash-1")
    );

    assert_conflict(store.create_user(ADMIN, &alice, None, t(1)).await);
    assert_eq!(
        store.last_seq().await.unwrap(),
        1,
        "a refused mutation must not use a seq"
    );

    store.set_password(&alice, "hash-2").await.unwrap();
    assert_eq!(
        store.password_hash(&alice).await.unwrap().as_deref(),
        Some("hash-2")
    );
    assert_eq!(
        store.last_seq().await.unwrap(),
        1,
        "passwords are not permission changes"
    );
    assert_not_found(store.set_password(&user("nobody"), "h").await);
    assert_eq!(store.password_hash(&user("nobody")).await.unwrap(), None);

    let bob = store
        .create_user(ADMIN, &user("bob"), None, t(2))
        .await
        .unwrap();
    assert_eq!(bob.seq, 2);
    assert_eq!(store.password_hash(&user("bob")).await.unwrap(), None);

    let deleted = store.delete_user(ADMIN, &alice, t(3)).await.unwrap();
    assert_eq!(deleted.len(), 1, "no session was open");
    assert_eq!(
        deleted[0].kind,
        ChangeKind::UserDeleted {
            user: alice.clone()
        }
    );
    assert_eq!(store.password_hash(&alice).await.unwrap(), None);
    assert_not_found(store.delete_user(ADMIN, &alice, t(4)).await);
    assert_not_found(store.delete_user(ADMIN, &user("nobody"), t(4)).await);

    let page = store.list_users("", 100, None).await.unwrap();
    assert_eq!(page.users, vec![(user("bob"), 2)]);
    assert_eq!(page.next_cursor, None);
    assert_eq!(store.last_seq().await.unwrap(), 3);
}

/// Idempotent grants, revision rules for grants, NotFound cases.
pub async fn grants_and_revisions(store: &dyn Store) {
    let alice = user("alice");
    store.create_user(ADMIN, &alice, None, t(0)).await.unwrap();
    store
        .create_user(ADMIN, &user("bob"), None, t(0))
        .await
        .unwrap();

    let (g, c) = created(
        store
            .add_grant(
                ADMIN,
                new_grant("alice", "invoice:approve", None, None),
                t(10),
            )
            .await
            .unwrap(),
    );
    assert_eq!(
        g.id, c.seq,
        "a grant's id is the seq of the change that created it"
    );
    assert_eq!(g.created_at, t(10));
    assert_eq!(g.created_by, ADMIN);
    assert_eq!(c.kind, ChangeKind::GrantAdded(g.clone()));
    assert_eq!(revision(store, "alice").await, c.seq);
    assert_eq!(revision(store, "bob").await, 2, "other users are untouched");

    // The same active grant again: the existing one, nothing written.
    let seq_before = store.last_seq().await.unwrap();
    match store
        .add_grant(
            "someone-else",
            new_grant("alice", "invoice:approve", None, None),
            t(20),
        )
        .await
        .unwrap()
    {
        Added::Existing(existing) => assert_eq!(existing, g),
        Added::Created(..) => panic!("the same active grant must not be created twice"),
    }
    assert_eq!(store.last_seq().await.unwrap(), seq_before);

    // Another scope is another grant.
    let (scoped, c2) = created(
        store
            .add_grant(
                ADMIN,
                new_grant("alice", "invoice:approve", Some("org/acme"), None),
                t(30),
            )
            .await
            .unwrap(),
    );
    assert_eq!(c2.seq, seq_before + 1);
    assert_eq!(scoped.scope, Some(scope("org/acme")));

    // An expired grant does not count as the same active one.
    let (short, _) = created(
        store
            .add_grant(
                ADMIN,
                new_grant("alice", "doc:read", None, Some(t(100))),
                t(40),
            )
            .await
            .unwrap(),
    );
    let (renewed, _) = created(
        store
            .add_grant(ADMIN, new_grant("alice", "doc:read", None, None), t(100))
            .await
            .unwrap(),
    );
    assert_ne!(short.id, renewed.id);

    assert_not_found(
        store
            .add_grant(ADMIN, new_grant("nobody", "doc:read", None, None), t(50))
            .await,
    );

    // Removing: only by the owner, only once.
    let seq_before = store.last_seq().await.unwrap();
    assert_not_found(store.remove_grant(ADMIN, &user("bob"), g.id, t(60)).await);
    assert_not_found(store.remove_grant(ADMIN, &alice, 9_999, t(60)).await);
    assert_not_found(store.remove_grant(ADMIN, &alice, u64::MAX, t(60)).await);
    assert_eq!(store.last_seq().await.unwrap(), seq_before);
    let removed = store
        .remove_grant(ADMIN, &alice, g.id, t(60))
        .await
        .unwrap();
    assert_eq!(removed.seq, seq_before + 1);
    assert_eq!(
        removed.kind,
        ChangeKind::GrantRemoved {
            user: alice.clone(),
            id: g.id,
            permission: perm("invoice:approve"),
            scope: None,
            expired: false
        }
    );
    assert_eq!(removed.kind.action(), "grant_removed");
    assert_eq!(revision(store, "alice").await, removed.seq);
    assert_not_found(store.remove_grant(ADMIN, &alice, g.id, t(61)).await);

    let state = store.load().await.unwrap();
    let ids: BTreeSet<u64> = state.grants.iter().map(|g| g.id).collect();
    assert_eq!(ids, BTreeSet::from([scoped.id, short.id, renewed.id]));
}

/// Roles: created flag, NotFound cases, idempotent bindings, revision rules for role
/// edits and deletes, deletes removing bindings.
pub async fn roles_and_bindings(store: &dyn Store) {
    for name in ["alice", "bob", "carol"] {
        store
            .create_user(ADMIN, &user(name), None, t(0))
            .await
            .unwrap();
    }
    let editor = role("editor");
    let (c, was_created) = store
        .set_role(
            ADMIN,
            &editor,
            &[perm("doc:edit"), perm("doc:read")],
            "edits",
            t(1),
        )
        .await
        .unwrap();
    assert!(was_created);
    assert_eq!(
        c.kind,
        ChangeKind::RoleSet {
            role: editor.clone(),
            permissions: vec![perm("doc:edit"), perm("doc:read")],
            description: "edits".into()
        }
    );
    let (c_again, was_created) = store
        .set_role(ADMIN, &editor, &[perm("doc:*")], "", t(2))
        .await
        .unwrap();
    assert!(!was_created);
    assert_eq!(c_again.seq, c.seq + 1);
    let carol_rev = revision(store, "carol").await;

    assert_not_found(
        store
            .add_binding(ADMIN, new_binding("alice", "viewer", None, None), t(3))
            .await,
    );
    assert_not_found(
        store
            .add_binding(ADMIN, new_binding("nobody", "editor", None, None), t(3))
            .await,
    );

    let (b, bc) = created(
        store
            .add_binding(
                ADMIN,
                new_binding("alice", "editor", Some("project/7"), None),
                t(4),
            )
            .await
            .unwrap(),
    );
    assert_eq!(b.id, bc.seq);
    assert_eq!(bc.kind, ChangeKind::BindingAdded(b.clone()));
    assert_eq!(revision(store, "alice").await, bc.seq);
    let seq_before = store.last_seq().await.unwrap();
    match store
        .add_binding(
            ADMIN,
            new_binding("alice", "editor", Some("project/7"), None),
            t(5),
        )
        .await
        .unwrap()
    {
        Added::Existing(existing) => assert_eq!(existing, b),
        Added::Created(..) => panic!("the same active binding must not be created twice"),
    }
    assert_eq!(store.last_seq().await.unwrap(), seq_before);
    let (b_bob, _) = created(
        store
            .add_binding(ADMIN, new_binding("bob", "editor", None, None), t(6))
            .await
            .unwrap(),
    );
    let (b_bob2, _) = created(
        store
            .add_binding(
                ADMIN,
                new_binding("bob", "editor", Some("org/x"), None),
                t(6),
            )
            .await
            .unwrap(),
    );

    // Editing the role touches every bound user, and only them.
    let (edit, _) = store
        .set_role(ADMIN, &editor, &[perm("doc:read")], "reads", t(7))
        .await
        .unwrap();
    assert_eq!(revision(store, "alice").await, edit.seq);
    assert_eq!(revision(store, "bob").await, edit.seq);
    assert_eq!(revision(store, "carol").await, carol_rev);
    let listed = store.list_users("", 10, None).await.unwrap().users;
    for (name, want) in [("alice", edit.seq), ("bob", edit.seq), ("carol", carol_rev)] {
        assert!(
            listed.iter().any(|(u, r)| u.as_str() == name && *r == want),
            "{name} listed at {want}: {listed:?}"
        );
    }

    // Removing a binding.
    assert_not_found(
        store
            .remove_binding(ADMIN, &user("alice"), b_bob.id, t(8))
            .await,
    );
    let rm = store
        .remove_binding(ADMIN, &user("bob"), b_bob2.id, t(8))
        .await
        .unwrap();
    assert_eq!(
        rm.kind,
        ChangeKind::BindingRemoved {
            user: user("bob"),
            id: b_bob2.id,
            role: editor.clone(),
            scope: Some(scope("org/x")),
            expired: false
        }
    );
    assert_eq!(revision(store, "bob").await, rm.seq);

    // Deleting the role removes its bindings and touches its members.
    let viewer = role("viewer");
    store
        .set_role(ADMIN, &viewer, &[perm("doc:read")], "", t(9))
        .await
        .unwrap();
    created(
        store
            .add_binding(ADMIN, new_binding("carol", "viewer", None, None), t(9))
            .await
            .unwrap(),
    );
    let del = store.delete_role(ADMIN, &editor, t(10)).await.unwrap();
    assert_eq!(
        del.kind,
        ChangeKind::RoleDeleted {
            role: editor.clone()
        }
    );
    assert_eq!(revision(store, "alice").await, del.seq);
    assert_eq!(revision(store, "bob").await, del.seq);
    assert!(revision(store, "carol").await < del.seq);
    let state = store.load().await.unwrap();
    assert!(
        state.bindings.iter().all(|b| b.role == viewer),
        "bindings of a deleted role must go"
    );
    assert_eq!(state.bindings.len(), 1);
    assert_eq!(state.roles.len(), 1);
    assert_not_found(store.delete_role(ADMIN, &editor, t(11)).await);
    assert_not_found(
        store
            .remove_binding(ADMIN, &user("alice"), b.id, t(11))
            .await,
    );

    // The role can come back, without its old bindings.
    let (_, was_created) = store
        .set_role(ADMIN, &editor, &[], "", t(12))
        .await
        .unwrap();
    assert!(was_created);
    assert_eq!(store.load().await.unwrap().bindings.len(), 1);
}

/// `invalidate` raises listed users' revisions, also of users permsync does not
/// know, without creating them.
pub async fn invalidate_tracks_unknown_users(store: &dyn Store) {
    store
        .create_user(ADMIN, &user("alice"), None, t(0))
        .await
        .unwrap();
    let users = vec![user("alice"), user("external-1"), user("external-2")];
    let c = store
        .invalidate(ADMIN, &users, Some("synced"), t(1))
        .await
        .unwrap();
    assert_eq!(
        c.kind,
        ChangeKind::Invalidated {
            users: users.clone(),
            reason: Some("synced".into())
        }
    );
    for u in &users {
        assert_eq!(revision(store, u.as_str()).await, c.seq);
    }
    let state = store.load().await.unwrap();
    let external = state
        .users
        .iter()
        .find(|(u, _, _)| u.as_str() == "external-1")
        .unwrap();
    assert!(
        !external.2,
        "an invalidated unknown user is tracked by revision only"
    );
    let page = store.list_users("", 10, None).await.unwrap();
    assert_eq!(page.users, vec![(user("alice"), c.seq)]);

    let c2 = store
        .invalidate(ADMIN, &[user("external-1")], None, t(2))
        .await
        .unwrap();
    assert_eq!(
        c2.kind,
        ChangeKind::Invalidated {
            users: vec![user("external-1")],
            reason: None
        }
    );
    assert_eq!(revision(store, "external-2").await, c.seq);

    // Creating a user known only by revision works and moves the revision on.
    let created = store
        .create_user(ADMIN, &user("external-1"), None, t(3))
        .await
        .unwrap();
    assert!(created.seq > c2.seq);
    assert_eq!(revision(store, "external-1").await, created.seq);
    assert_conflict(
        store
            .create_user(ADMIN, &user("external-1"), None, t(4))
            .await,
    );
    // A user known only by revision cannot receive grants.
    assert_not_found(
        store
            .add_grant(ADMIN, new_grant("external-2", "doc:read", None, None), t(5))
            .await,
    );
}

/// `expire_due(now)` removes exactly what has `expires_at <= now`, one change each.
pub async fn expire_due_removes_only_due_items(store: &dyn Store) {
    store
        .create_user(ADMIN, &user("alice"), None, t(0))
        .await
        .unwrap();
    store
        .create_user(ADMIN, &user("bob"), None, t(0))
        .await
        .unwrap();
    store
        .set_role(ADMIN, &role("viewer"), &[perm("doc:read")], "", t(0))
        .await
        .unwrap();
    let (g1, _) = created(
        store
            .add_grant(ADMIN, new_grant("alice", "a:b", None, Some(t(100))), t(1))
            .await
            .unwrap(),
    );
    let (g2, _) = created(
        store
            .add_grant(ADMIN, new_grant("alice", "a:c", None, Some(t(200))), t(1))
            .await
            .unwrap(),
    );
    let (g3, _) = created(
        store
            .add_grant(ADMIN, new_grant("alice", "a:d", None, None), t(1))
            .await
            .unwrap(),
    );
    let (b1, _) = created(
        store
            .add_binding(ADMIN, new_binding("bob", "viewer", None, Some(t(50))), t(1))
            .await
            .unwrap(),
    );
    let (b2, _) = created(
        store
            .add_binding(
                ADMIN,
                new_binding("bob", "viewer", Some("org/a"), Some(t(300))),
                t(1),
            )
            .await
            .unwrap(),
    );
    let seq_before = store.last_seq().await.unwrap();

    assert!(store.expire_due(t(49)).await.unwrap().is_empty());
    assert_eq!(store.last_seq().await.unwrap(), seq_before);

    let expired = store.expire_due(t(150)).await.unwrap();
    assert_eq!(expired.len(), 2);
    // In the order they fell due: the binding (t+50), then the grant (t+100).
    assert_eq!(expired[0].seq, seq_before + 1);
    assert_eq!(expired[1].seq, seq_before + 2);
    assert_eq!(
        expired[0].kind,
        ChangeKind::BindingRemoved {
            user: user("bob"),
            id: b1.id,
            role: role("viewer"),
            scope: None,
            expired: true
        }
    );
    assert_eq!(expired[0].kind.action(), "binding_expired");
    assert_eq!(
        expired[1].kind,
        ChangeKind::GrantRemoved {
            user: user("alice"),
            id: g1.id,
            permission: perm("a:b"),
            scope: None,
            expired: true
        }
    );
    assert_eq!(expired[1].kind.action(), "grant_expired");
    for c in &expired {
        assert_eq!(c.at, t(150));
        assert_eq!(c.actor, "system");
    }
    assert_eq!(revision(store, "bob").await, expired[0].seq);
    assert_eq!(revision(store, "alice").await, expired[1].seq);

    assert!(
        store.expire_due(t(150)).await.unwrap().is_empty(),
        "expiring is done once"
    );
    // `expires_at <= now`: due exactly at its time.
    let at_200 = store.expire_due(t(200)).await.unwrap();
    assert_eq!(at_200.len(), 1);
    assert!(matches!(&at_200[0].kind, ChangeKind::GrantRemoved { id, .. } if *id == g2.id));

    let state = store.load().await.unwrap();
    assert_eq!(
        state.grants.iter().map(|g| g.id).collect::<Vec<_>>(),
        vec![g3.id]
    );
    assert_eq!(
        state.bindings.iter().map(|b| b.id).collect::<Vec<_>>(),
        vec![b2.id]
    );
    assert_eq!(
        all_changes(store).await.last().unwrap(),
        at_200.last().unwrap()
    );
}

/// Deleting a user removes their holdings and sessions; recreating them continues
/// from a higher revision.
pub async fn delete_user_keeps_revision_monotonic(store: &dyn Store) {
    let alice = user("alice");
    store
        .create_user(ADMIN, &alice, Some("h"), t(0))
        .await
        .unwrap();
    store
        .set_role(ADMIN, &role("viewer"), &[perm("doc:read")], "", t(0))
        .await
        .unwrap();
    created(
        store
            .add_grant(ADMIN, new_grant("alice", "doc:edit", None, None), t(1))
            .await
            .unwrap(),
    );
    created(
        store
            .add_binding(ADMIN, new_binding("alice", "viewer", None, None), t(1))
            .await
            .unwrap(),
    );
    store
        .create_session(new_session("s1", "alice", "r1", t(10_000)), t(2))
        .await
        .unwrap();
    store
        .create_session(new_session("s2", "alice", "r2", t(10_000)), t(2))
        .await
        .unwrap();

    let changes = store.delete_user("ops", &alice, t(3)).await.unwrap();
    assert_eq!(changes.len(), 2);
    assert_eq!(
        changes[0].kind,
        ChangeKind::UserDeleted {
            user: alice.clone()
        }
    );
    assert_eq!(
        changes[1].kind,
        ChangeKind::SessionsEnded {
            user: alice.clone(),
            sessions: vec!["s1".into(), "s2".into()],
            reason: SessionEnd::Revoked
        }
    );
    assert_eq!(changes[1].seq, changes[0].seq + 1);
    assert_eq!(changes[1].actor, "ops");
    let deleted_rev = revision(store, "alice").await;
    assert_eq!(
        deleted_rev, changes[0].seq,
        "sessions ending touches nobody's revision"
    );
    assert_eq!(
        rotate(store, "r1", "r1b", t(20_000), t(4)).await.unwrap(),
        RefreshOutcome::Invalid
    );
    let ended = store.ended_sessions(t(3)).await.unwrap();
    assert_eq!(ended, vec!["s1".to_string(), "s2".to_string()]);

    let state = store.load().await.unwrap();
    assert!(state.grants.is_empty() && state.bindings.is_empty());
    assert!(state.users.contains(&(alice.clone(), deleted_rev, false)));
    assert!(store
        .list_users("", 10, None)
        .await
        .unwrap()
        .users
        .is_empty());
    assert_not_found(
        store
            .add_grant(ADMIN, new_grant("alice", "doc:edit", None, None), t(4))
            .await,
    );
    assert_not_found(
        store
            .create_session(new_session("s3", "alice", "r3", t(10_000)), t(4))
            .await,
    );

    let recreated = store.create_user(ADMIN, &alice, None, t(5)).await.unwrap();
    assert!(recreated.seq > deleted_rev);
    assert_eq!(revision(store, "alice").await, recreated.seq);
    assert_eq!(
        store.password_hash(&alice).await.unwrap(),
        None,
        "the old password must not come back"
    );
    assert!(
        store.load().await.unwrap().grants.is_empty(),
        "the old grants must not come back"
    );
}

/// Refresh rotation, and reuse of a rotated token revoking the whole session.
pub async fn refresh_rotation_and_reuse(store: &dyn Store) {
    store
        .create_user(ADMIN, &user("alice"), None, t(0))
        .await
        .unwrap();
    assert_not_found(
        store
            .create_session(new_session("sx", "nobody", "rx", t(10_000)), t(1))
            .await,
    );
    store
        .create_session(new_session("s1", "alice", "r1", t(10_000)), t(1))
        .await
        .unwrap();
    assert_conflict(
        store
            .create_session(new_session("s1", "alice", "other", t(10_000)), t(1))
            .await,
    );
    assert_conflict(
        store
            .create_session(new_session("s9", "alice", "r1", t(10_000)), t(1))
            .await,
    );
    let seq_before = store.last_seq().await.unwrap();

    let rotated = rotate(store, "r1", "r2", t(20_000), t(2)).await.unwrap();
    assert_eq!(
        rotated,
        RefreshOutcome::Rotated {
            session: "s1".into(),
            user: user("alice")
        }
    );
    let rotated = rotate(store, "r2", "r3", t(20_000), t(3)).await.unwrap();
    assert_eq!(
        rotated,
        RefreshOutcome::Rotated {
            session: "s1".into(),
            user: user("alice")
        }
    );
    assert_eq!(
        store.last_seq().await.unwrap(),
        seq_before,
        "rotation is not a change"
    );
    assert_eq!(
        rotate(store, "unknown", "r9", t(20_000), t(3))
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );

    // r1 was rotated away: presenting it again revokes the session.
    let reused = rotate(store, "r1", "r4", t(20_000), t(4)).await.unwrap();
    let RefreshOutcome::Reused {
        session,
        user: who,
        change: Some(change),
    } = reused
    else {
        panic!("expected Reused with a change, got {reused:?}");
    };
    assert_eq!(session, "s1");
    assert_eq!(who, user("alice"));
    assert_eq!(change.seq, seq_before + 1);
    assert_eq!(
        change.kind,
        ChangeKind::SessionsEnded {
            user: user("alice"),
            sessions: vec!["s1".into()],
            reason: SessionEnd::Revoked
        }
    );
    assert_eq!(all_changes(store).await.last(), Some(&change));
    // Every token of the session is dead now, the current one included.
    assert_eq!(
        rotate(store, "r3", "r5", t(20_000), t(5)).await.unwrap(),
        RefreshOutcome::Invalid
    );
    assert_eq!(
        rotate(store, "r1", "r6", t(20_000), t(5)).await.unwrap(),
        RefreshOutcome::Invalid
    );
    assert_eq!(
        store
            .end_session_by_refresh("r3", SessionEnd::LoggedOut, t(5))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.ended_sessions(t(4)).await.unwrap(),
        vec!["s1".to_string()]
    );
    assert!(store.ended_sessions(t(5)).await.unwrap().is_empty());

    // An expired refresh token is refused, and its session stays open.
    store
        .create_session(new_session("s2", "alice", "q1", t(100)), t(6))
        .await
        .unwrap();
    assert_eq!(
        rotate(store, "q1", "q2", t(20_000), t(100)).await.unwrap(),
        RefreshOutcome::Invalid
    );
    assert_eq!(store.last_seq().await.unwrap(), change.seq);
}

/// A rotated token presented again within the grace window, while its successor is
/// the session's current token, is a race of tabs refreshing together: the
/// successor comes back sealed as it was stored, and nothing changes. After the
/// window, or once the successor was rotated in turn, it is reuse.
pub async fn refresh_reuse_grace(store: &dyn Store) {
    const GRACE: Duration = Duration::from_secs(5);
    let alice = user("alice");
    store.create_user(ADMIN, &alice, None, t(0)).await.unwrap();
    store
        .create_session(new_session("s1", "alice", "r1", t(60_000)), t(1))
        .await
        .unwrap();
    let rotated = RefreshOutcome::Rotated {
        session: "s1".into(),
        user: alice.clone(),
    };
    let raced = |session: &str, successor: &str| RefreshOutcome::Raced {
        session: session.into(),
        user: alice.clone(),
        successor_sealed: format!("sealed:{successor}").into_bytes(),
    };
    assert_eq!(
        rotate_with_grace(store, "r1", "r2", t(60_000), GRACE, t(1_000))
            .await
            .unwrap(),
        rotated
    );
    let seq = store.last_seq().await.unwrap();
    for at in [t(1_000), t(3_000), t(6_000)] {
        assert_eq!(
            rotate_with_grace(store, "r1", "unused", t(60_000), GRACE, at)
                .await
                .unwrap(),
            raced("s1", "r2"),
            "within the window, the same successor every time"
        );
    }
    assert_eq!(
        store.last_seq().await.unwrap(),
        seq,
        "a race commits nothing"
    );
    assert_eq!(
        rotate(store, "unused", "x", t(60_000), t(3_000))
            .await
            .unwrap(),
        RefreshOutcome::Invalid,
        "a race stores no new token"
    );
    assert_eq!(
        store.open_session_user("s1").await.unwrap(),
        Some(alice.clone())
    );

    // The successor rotates as usual; r1 is an older token now, within its
    // window or not: presenting it ends the session.
    assert_eq!(
        rotate_with_grace(store, "r2", "r3", t(60_000), GRACE, t(4_000))
            .await
            .unwrap(),
        rotated
    );
    assert_eq!(
        rotate_with_grace(store, "r2", "unused", t(60_000), GRACE, t(4_500))
            .await
            .unwrap(),
        raced("s1", "r3")
    );
    let RefreshOutcome::Reused { session, .. } =
        rotate_with_grace(store, "r1", "r9", t(60_000), GRACE, t(4_500))
            .await
            .unwrap()
    else {
        panic!("an older token within its window must be reuse");
    };
    assert_eq!(session, "s1");
    assert_eq!(store.open_session_user("s1").await.unwrap(), None);
    assert_eq!(
        rotate_with_grace(store, "r3", "r4", t(60_000), GRACE, t(4_600))
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );

    // Past the window, the just-rotated token is reuse too (the window's edge
    // still counts as a race).
    store
        .create_session(new_session("s2", "alice", "q1", t(60_000)), t(10_000))
        .await
        .unwrap();
    rotate_with_grace(store, "q1", "q2", t(60_000), GRACE, t(10_000))
        .await
        .unwrap();
    assert_eq!(
        rotate_with_grace(store, "q1", "unused", t(60_000), GRACE, t(15_000))
            .await
            .unwrap(),
        raced("s2", "q2")
    );
    assert!(matches!(
        rotate_with_grace(store, "q1", "unused", t(60_000), GRACE, t(15_001))
            .await
            .unwrap(),
        RefreshOutcome::Reused { .. }
    ));
    assert_eq!(store.open_session_user("s2").await.unwrap(), None);
}

/// Presentations of one refresh token at the same moment: the store decides,
/// one rotates and every other one gets that rotation's successor.
pub async fn refresh_races_are_decided_by_the_store(store: &dyn Store) {
    const TABS: usize = 5;
    let alice = user("alice");
    store.create_user(ADMIN, &alice, None, t(0)).await.unwrap();
    store
        .create_session(new_session("s1", "alice", "r1", t(60_000)), t(1))
        .await
        .unwrap();
    let news: Vec<String> = (0..TABS).map(|i| format!("r2-{i}")).collect();
    let outcomes =
        join_all(news.iter().map(|new| {
            rotate_with_grace(store, "r1", new, t(60_000), Duration::from_secs(5), t(2))
        }))
        .await;
    let winners: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o, Ok(RefreshOutcome::Rotated { .. })))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one rotation: {outcomes:?}");
    let successor = &news[winners[0]];
    for (i, outcome) in outcomes.into_iter().enumerate() {
        if i == winners[0] {
            continue;
        }
        assert_eq!(
            outcome.unwrap(),
            RefreshOutcome::Raced {
                session: "s1".into(),
                user: alice.clone(),
                successor_sealed: format!("sealed:{successor}").into_bytes(),
            }
        );
    }
    assert_eq!(
        store.open_session_user("s1").await.unwrap(),
        Some(alice.clone())
    );
    assert!(store.ended_sessions(t(0)).await.unwrap().is_empty());
    assert!(matches!(
        rotate(store, successor, "r3", t(60_000), t(3))
            .await
            .unwrap(),
        RefreshOutcome::Rotated { .. }
    ));
}

/// Session rows do not grow for ever: the ones ended, or whose refresh tokens all
/// expired, before the cutoff go with their tokens; sealed successors are
/// forgotten once their window has passed.
pub async fn prune_sessions_removes_finished_ones(store: &dyn Store) {
    const GRACE: Duration = Duration::from_secs(5);
    let alice = user("alice");
    store.create_user(ADMIN, &alice, None, t(0)).await.unwrap();
    for (id, hash, expires) in [
        ("ended-early", "e1", t(100_000)),
        ("expired", "x1", t(20)),
        ("extended", "d1", t(20)),
        ("live", "l1", t(100_000)),
        ("ended-late", "n1", t(100_000)),
    ] {
        store
            .create_session(new_session(id, "alice", hash, expires), t(1))
            .await
            .unwrap();
    }
    store
        .end_session_by_refresh("e1", SessionEnd::LoggedOut, t(10))
        .await
        .unwrap();
    // A rotation extends the session past its first token's expiry.
    rotate_with_grace(store, "d1", "d2", t(100_000), GRACE, t(15))
        .await
        .unwrap();
    store
        .end_session_by_refresh("n1", SessionEnd::LoggedOut, t(50))
        .await
        .unwrap();
    let seq = store.last_seq().await.unwrap();

    assert_eq!(store.prune_sessions(t(30), t(0)).await.unwrap(), 2);
    assert_eq!(store.prune_sessions(t(30), t(0)).await.unwrap(), 0);
    assert_eq!(store.last_seq().await.unwrap(), seq, "pruning is no change");
    for (id, open) in [
        ("ended-early", false),
        ("expired", false),
        ("extended", true),
        ("live", true),
        ("ended-late", false),
        ("never", false),
    ] {
        assert_eq!(
            store.open_session_user(id).await.unwrap(),
            open.then(|| alice.clone()),
            "{id}"
        );
    }
    assert_eq!(
        store.ended_sessions(t(0)).await.unwrap(),
        vec!["ended-late"]
    );
    for gone in ["e1", "x1"] {
        assert_eq!(
            rotate(store, gone, "z", t(100_000), t(40)).await.unwrap(),
            RefreshOutcome::Invalid,
            "{gone}"
        );
    }

    // Within its window, the rotated token of "extended" still gets its
    // successor, until the sealed copy is forgotten: then it is plain reuse.
    assert!(matches!(
        rotate_with_grace(store, "d1", "z", t(100_000), GRACE, t(18))
            .await
            .unwrap(),
        RefreshOutcome::Raced { .. }
    ));
    store.prune_sessions(t(30), t(16)).await.unwrap();
    assert!(matches!(
        rotate_with_grace(store, "d1", "z", t(100_000), GRACE, t(19))
            .await
            .unwrap(),
        RefreshOutcome::Reused { .. }
    ));
    assert_eq!(store.open_session_user("extended").await.unwrap(), None);
    assert_eq!(store.open_session_user("live").await.unwrap(), Some(alice));
}

/// Logout by refresh token and revoking all of a user's sessions.
pub async fn sessions_end_and_revoke(store: &dyn Store) {
    store
        .create_user(ADMIN, &user("alice"), None, t(0))
        .await
        .unwrap();
    store
        .create_user(ADMIN, &user("bob"), None, t(0))
        .await
        .unwrap();
    store
        .create_session(new_session("a1", "alice", "ra1", t(10_000)), t(1))
        .await
        .unwrap();
    store
        .create_session(new_session("a2", "alice", "ra2", t(10_000)), t(1))
        .await
        .unwrap();
    store
        .create_session(new_session("a3", "alice", "ra3", t(10_000)), t(1))
        .await
        .unwrap();
    store
        .create_session(new_session("b1", "bob", "rb1", t(10_000)), t(1))
        .await
        .unwrap();
    let rev_alice = revision(store, "alice").await;

    let out = store
        .end_session_by_refresh("ra1", SessionEnd::LoggedOut, t(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.kind,
        ChangeKind::SessionsEnded {
            user: user("alice"),
            sessions: vec!["a1".into()],
            reason: SessionEnd::LoggedOut
        }
    );
    assert_eq!(out.actor, "alice");
    assert_eq!(
        store
            .end_session_by_refresh("ra1", SessionEnd::LoggedOut, t(3))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .end_session_by_refresh("nope", SessionEnd::LoggedOut, t(3))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        rotate(store, "ra1", "x", t(20_000), t(3)).await.unwrap(),
        RefreshOutcome::Invalid
    );

    let revoked = store
        .revoke_sessions(ADMIN, &user("alice"), t(4))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.seq, out.seq + 1);
    assert_eq!(revoked.actor, ADMIN);
    assert_eq!(
        revoked.kind,
        ChangeKind::SessionsEnded {
            user: user("alice"),
            sessions: vec!["a2".into(), "a3".into()],
            reason: SessionEnd::Revoked
        }
    );
    assert_eq!(
        store
            .revoke_sessions(ADMIN, &user("alice"), t(5))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .revoke_sessions(ADMIN, &user("nobody"), t(5))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        rotate(store, "ra2", "y", t(20_000), t(5)).await.unwrap(),
        RefreshOutcome::Invalid
    );
    assert_eq!(
        rotate(store, "rb1", "rb2", t(20_000), t(5)).await.unwrap(),
        RefreshOutcome::Rotated {
            session: "b1".into(),
            user: user("bob")
        },
        "other users' sessions are untouched"
    );
    assert_eq!(
        revision(store, "alice").await,
        rev_alice,
        "sessions ending touches no revision"
    );

    let mut ended = store.ended_sessions(t(0)).await.unwrap();
    ended.sort();
    assert_eq!(
        ended,
        vec!["a1".to_string(), "a2".to_string(), "a3".to_string()]
    );
    assert_eq!(store.ended_sessions(t(3)).await.unwrap().len(), 2);
}

/// Prefix filter, order, cursor and limit; only existing users.
pub async fn list_users_pagination(store: &dyn Store) {
    let names = ["a_1", "a_2", "a_3", "ab", "b.1", "B", "a", "a_4", "a_5"];
    for n in names {
        store
            .create_user(ADMIN, &user(n), None, t(0))
            .await
            .unwrap();
    }
    store.delete_user(ADMIN, &user("a_4"), t(1)).await.unwrap();
    store
        .invalidate(ADMIN, &[user("a_9")], None, t(2))
        .await
        .unwrap();

    let all = store.list_users("", 100, None).await.unwrap();
    let listed: Vec<&str> = all.users.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(
        listed,
        vec!["B", "a", "a_1", "a_2", "a_3", "a_5", "ab", "b.1"]
    );
    assert_eq!(all.next_cursor, None);

    // `_` is a literal, not a wildcard; pages of 2 walk the prefix exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store.list_users("a_", 2, cursor.as_deref()).await.unwrap();
        pages += 1;
        assert!(page.users.len() <= 2);
        seen.extend(page.users.iter().map(|(u, _)| u.as_str().to_owned()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(pages < 10, "pagination must end");
    }
    assert_eq!(seen, vec!["a_1", "a_2", "a_3", "a_5"]);
    assert_eq!(pages, 2, "the last full page must know it is the last");

    let page = store.list_users("a", 3, Some("a_2")).await.unwrap();
    let listed: Vec<&str> = page.users.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(listed, vec!["a_3", "a_5", "ab"]);
    assert_eq!(page.next_cursor, None);
    assert!(store
        .list_users("zz", 10, None)
        .await
        .unwrap()
        .users
        .is_empty());
    let revs = store.list_users("ab", 10, None).await.unwrap().users;
    assert_eq!(revs, vec![(user("ab"), 4)]);
}

/// Signing keys survive in the store and are retired once.
pub async fn signing_keys(store: &dyn Store) {
    assert!(store.signing_keys().await.unwrap().is_empty());
    let k1 = SigningKey {
        kid: "k1".into(),
        algorithm: "EdDSA".into(),
        private_der: vec![1, 2, 3, 0, 255],
        public: vec![9; 32],
        created_at: t(0),
        retired_at: None,
    };
    let k2 = SigningKey {
        kid: "k2".into(),
        created_at: t(10),
        ..k1.clone()
    };
    store.add_signing_key(&k1).await.unwrap();
    store.add_signing_key(&k2).await.unwrap();
    assert_conflict(store.add_signing_key(&k1).await);
    assert_eq!(
        store.signing_keys().await.unwrap(),
        vec![k1.clone(), k2.clone()]
    );

    store.retire_signing_key("k1", t(20)).await.unwrap();
    store.retire_signing_key("k1", t(30)).await.unwrap();
    assert_not_found(store.retire_signing_key("nope", t(30)).await);
    let keys = store.signing_keys().await.unwrap();
    assert_eq!(
        keys[0].retired_at,
        Some(t(20)),
        "the first retirement stands"
    );
    assert_eq!(keys[1].retired_at, None);
    assert_eq!(
        store.last_seq().await.unwrap(),
        0,
        "keys are not permission changes"
    );
}

/// Every kind of change, in one history: seqs are 1..=N, and what each mutation
/// returned is exactly what the changelog gives back.
pub async fn seq_gap_free_and_round_trip(store: &dyn Store) {
    let mut returned: Vec<Change> = Vec::new();
    returned.push(
        store
            .create_user(ADMIN, &user("alice"), Some("h"), t(0))
            .await
            .unwrap(),
    );
    returned.push(
        store
            .create_user("cli", &user("bob"), None, t(1))
            .await
            .unwrap(),
    );
    let description = "Edits \"documents\" — ünïcödé, newlines\nand {json}";
    returned.push(
        store
            .set_role(
                ADMIN,
                &role("editor"),
                &[perm("doc:*"), perm("*")],
                description,
                t(2),
            )
            .await
            .unwrap()
            .0,
    );
    returned.push(
        store
            .set_role(ADMIN, &role("empty"), &[], "", t(2))
            .await
            .unwrap()
            .0,
    );
    let (_, c) = created(
        store
            .add_grant(
                ADMIN,
                new_grant(
                    "alice",
                    "invoice:line:edit",
                    Some("org/acme/project/7"),
                    Some(t(50)),
                ),
                t(3),
            )
            .await
            .unwrap(),
    );
    returned.push(c);
    let (g, c) = created(
        store
            .add_grant(ADMIN, new_grant("bob", "*", None, None), t(4))
            .await
            .unwrap(),
    );
    returned.push(c);
    let (b, c) = created(
        store
            .add_binding(
                "alice",
                new_binding("bob", "editor", Some("org/acme"), Some(t(40))),
                t(5),
            )
            .await
            .unwrap(),
    );
    returned.push(c);
    let (_, c) = created(
        store
            .add_binding(ADMIN, new_binding("alice", "editor", None, None), t(5))
            .await
            .unwrap(),
    );
    returned.push(c);
    returned.push(
        store
            .remove_grant(ADMIN, &user("bob"), g.id, t(6))
            .await
            .unwrap(),
    );
    returned.push(
        store
            .remove_binding(ADMIN, &user("bob"), b.id, t(6))
            .await
            .unwrap(),
    );
    returned.push(
        created(
            store
                .add_binding(ADMIN, new_binding("bob", "editor", None, Some(t(30))), t(7))
                .await
                .unwrap(),
        )
        .1,
    );
    returned.extend(store.expire_due(t(60)).await.unwrap());
    returned.push(
        store
            .invalidate(
                ADMIN,
                &[user("alice"), user("ghost")],
                Some("app sync"),
                t(8),
            )
            .await
            .unwrap(),
    );
    returned.push(store.invalidate(ADMIN, &[], None, t(8)).await.unwrap());
    store
        .create_session(new_session("s1", "alice", "r1", t(10_000)), t(9))
        .await
        .unwrap();
    store
        .create_session(new_session("s2", "bob", "q1", t(10_000)), t(9))
        .await
        .unwrap();
    store
        .create_session(new_session("s3", "bob", "q9", t(10_000)), t(9))
        .await
        .unwrap();
    rotate(store, "r1", "r2", t(10_000), t(10)).await.unwrap();
    let RefreshOutcome::Reused {
        change: Some(c), ..
    } = rotate(store, "r1", "r3", t(10_000), t(11)).await.unwrap()
    else {
        panic!("expected reuse");
    };
    returned.push(c);
    returned.push(
        store
            .end_session_by_refresh("q1", SessionEnd::LoggedOut, t(12))
            .await
            .unwrap()
            .unwrap(),
    );
    returned.push(
        store
            .revoke_sessions(ADMIN, &user("bob"), t(12))
            .await
            .unwrap()
            .unwrap(),
    );
    returned.push(
        store
            .delete_role("cli", &role("editor"), t(13))
            .await
            .unwrap(),
    );
    store
        .create_session(new_session("s4", "alice", "r4", t(10_000)), t(14))
        .await
        .unwrap();
    returned.extend(
        store
            .delete_user(ADMIN, &user("alice"), t(14))
            .await
            .unwrap(),
    );
    returned.push(
        store
            .create_user(ADMIN, &user("alice"), None, t(15))
            .await
            .unwrap(),
    );

    let read_back = all_changes(store).await;
    assert_gap_free(&read_back);
    assert_eq!(
        read_back, returned,
        "the changelog must give back exactly what the mutations returned"
    );
    assert_eq!(store.last_seq().await.unwrap(), read_back.len() as u64);
    assert_eq!(store.load().await.unwrap().seq, read_back.len() as u64);

    // Every action appears, so every row shape was round-tripped.
    let actions: BTreeSet<&str> = read_back.iter().map(|c| c.kind.action()).collect();
    let expected: BTreeSet<&str> = [
        "user_created",
        "user_deleted",
        "grant_added",
        "grant_removed",
        "grant_expired",
        "binding_added",
        "binding_removed",
        "binding_expired",
        "role_set",
        "role_deleted",
        "invalidated",
        "sessions_ended",
    ]
    .into();
    assert_eq!(actions, expected);

    // Reading from the middle, and with limits.
    let tail = store.changes_after(5, 3).await.unwrap();
    assert_eq!(tail, read_back[5..8].to_vec());
    assert!(store
        .changes_after(read_back.len() as u64, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store.changes_after(u64::MAX, 10).await.unwrap().is_empty());
    assert!(store.changes_after(0, 0).await.unwrap().is_empty());
}

/// Writers racing each other still produce seqs 1..=N, each once, committed in order.
pub async fn concurrent_writers_stay_gap_free(store: &dyn Store) {
    const WRITERS: usize = 8;
    const EACH: usize = 25;
    let writers = (0..WRITERS).map(|w| async move {
        let me = user(&format!("writer-{w}"));
        let mut seqs = vec![store.create_user(ADMIN, &me, None, t(0)).await.unwrap().seq];
        for i in 1..EACH {
            let seq = match i % 4 {
                0 => {
                    store
                        .invalidate(ADMIN, std::slice::from_ref(&me), None, t(i as i64))
                        .await
                        .unwrap()
                        .seq
                }
                1 | 2 => {
                    let g = new_grant(me.as_str(), &format!("p:{i}"), None, None);
                    created(store.add_grant(ADMIN, g, t(i as i64)).await.unwrap())
                        .1
                        .seq
                }
                _ => {
                    let r = role(&format!("r-{w}-{i}"));
                    store
                        .set_role(ADMIN, &r, &[perm("x")], "", t(i as i64))
                        .await
                        .unwrap()
                        .0
                        .seq
                }
            };
            seqs.push(seq);
        }
        seqs
    });
    let returned: Vec<u64> = join_all(writers).await.into_iter().flatten().collect();
    let total = WRITERS * EACH;
    assert_eq!(returned.len(), total);
    let distinct: BTreeSet<u64> = returned.iter().copied().collect();
    assert_eq!(distinct.len(), total, "no seq may be handed out twice");

    let changes = all_changes(store).await;
    assert_eq!(changes.len(), total);
    assert_gap_free(&changes);
    assert_eq!(distinct, changes.iter().map(|c| c.seq).collect());
    assert_eq!(store.last_seq().await.unwrap(), total as u64);
}

/// Builds the index the way the server does at start.
pub fn index_from_state(state: &State) -> Index {
    let mut index = Index::new();
    for (u, revision, exists) in &state.users {
        index.load_user(u.clone(), *revision, *exists);
    }
    for (r, permissions, description) in &state.roles {
        index.load_role(r.clone(), permissions.clone(), description.clone());
    }
    for g in &state.grants {
        index.load_grant(g.clone());
    }
    for b in &state.bindings {
        index.load_binding(b.clone());
    }
    index.set_applied_seq(state.seq);
    index
}

/// The index built from `load()` equals the index built by applying the whole
/// changelog: the rows and the log tell the same story.
pub async fn load_agrees_with_changelog(store: &dyn Store) {
    for n in ["alice", "bob", "carol", "dave"] {
        store
            .create_user(ADMIN, &user(n), None, t(0))
            .await
            .unwrap();
    }
    store
        .set_role(
            ADMIN,
            &role("editor"),
            &[perm("doc:edit"), perm("doc:read")],
            "e",
            t(1),
        )
        .await
        .unwrap();
    store
        .set_role(ADMIN, &role("viewer"), &[perm("doc:read")], "v", t(1))
        .await
        .unwrap();
    store
        .set_role(ADMIN, &role("gone"), &[perm("x:*")], "", t(1))
        .await
        .unwrap();
    created(
        store
            .add_grant(
                ADMIN,
                new_grant("alice", "invoice:*", Some("org/acme"), None),
                t(2),
            )
            .await
            .unwrap(),
    );
    created(
        store
            .add_grant(
                ADMIN,
                new_grant("alice", "report:read", None, Some(t(1_000))),
                t(2),
            )
            .await
            .unwrap(),
    );
    created(
        store
            .add_grant(
                ADMIN,
                new_grant("bob", "report:read", None, Some(t(10))),
                t(2),
            )
            .await
            .unwrap(),
    );
    created(
        store
            .add_binding(
                ADMIN,
                new_binding("bob", "editor", Some("project/7"), None),
                t(3),
            )
            .await
            .unwrap(),
    );
    created(
        store
            .add_binding(
                ADMIN,
                new_binding("bob", "viewer", None, Some(t(500))),
                t(3),
            )
            .await
            .unwrap(),
    );
    created(
        store
            .add_binding(ADMIN, new_binding("carol", "gone", None, None), t(3))
            .await
            .unwrap(),
    );
    created(
        store
            .add_binding(
                ADMIN,
                new_binding("carol", "viewer", Some("org/acme"), None),
                t(3),
            )
            .await
            .unwrap(),
    );
    let (g, _) = created(
        store
            .add_grant(ADMIN, new_grant("dave", "doc:edit", None, None), t(4))
            .await
            .unwrap(),
    );
    created(
        store
            .add_grant(ADMIN, new_grant("dave", "doc:read", None, None), t(4))
            .await
            .unwrap(),
    );
    store
        .remove_grant(ADMIN, &user("dave"), g.id, t(5))
        .await
        .unwrap();
    store
        .set_role(
            ADMIN,
            &role("viewer"),
            &[perm("doc:read"), perm("doc:list")],
            "v2",
            t(6),
        )
        .await
        .unwrap();
    store.delete_role(ADMIN, &role("gone"), t(7)).await.unwrap();
    store.expire_due(t(20)).await.unwrap();
    store
        .invalidate(ADMIN, &[user("carol"), user("external")], None, t(8))
        .await
        .unwrap();
    store.delete_user(ADMIN, &user("dave"), t(9)).await.unwrap();
    // Left expired but not yet removed: both sides must still agree.
    created(
        store
            .add_grant(
                ADMIN,
                new_grant("carol", "late:thing", None, Some(t(15))),
                t(10),
            )
            .await
            .unwrap(),
    );

    let state = store.load().await.unwrap();
    let from_rows = index_from_state(&state);
    let mut from_log = Index::new();
    for change in all_changes(store).await {
        from_log.apply(&change);
    }

    assert_eq!(from_rows.applied_seq(), from_log.applied_seq());
    assert_eq!(from_rows.applied_seq(), store.last_seq().await.unwrap());
    assert_eq!(from_rows.roles(), from_log.roles());
    assert_eq!(from_rows.next_expiry(), from_log.next_expiry());
    let names = ["alice", "bob", "carol", "dave", "external", "nobody"];
    for name in names {
        let u = user(name);
        assert_eq!(
            from_rows.revision(name),
            from_log.revision(name),
            "revision of {name}"
        );
        assert_eq!(
            from_rows.user_exists(name),
            from_log.user_exists(name),
            "existence of {name}"
        );
        for now in [t(11), t(100), t(2_000)] {
            assert_eq!(
                from_rows.snapshot(&u, now),
                from_log.snapshot(&u, now),
                "snapshot of {name}"
            );
            for p in [
                "invoice:pay",
                "report:read",
                "doc:edit",
                "doc:read",
                "doc:list",
                "x:y",
                "late:thing",
            ] {
                for s in [
                    None,
                    Some("org/acme"),
                    Some("org/acme/project/7"),
                    Some("project/7"),
                ] {
                    assert_eq!(
                        from_rows.can(name, p, s, now),
                        from_log.can(name, p, s, now),
                        "{name} {p} {s:?}"
                    );
                }
            }
        }
    }
    // A few facts the scenario was built to show.
    assert!(from_rows.can("alice", "invoice:pay", Some("org/acme/project/7"), t(11)));
    assert!(!from_rows.can("alice", "invoice:pay", None, t(11)));
    assert!(
        from_rows.can("bob", "doc:list", None, t(11)),
        "role edits reach bound users"
    );
    assert!(
        !from_rows.can("carol", "x:y", None, t(11)),
        "a deleted role grants nothing"
    );
    assert!(!from_rows.user_exists("dave") && from_rows.revision("dave") > 0);
    assert!(!from_rows.user_exists("external") && from_rows.revision("external") > 0);
    assert_eq!(state.users.len(), 5);
}
