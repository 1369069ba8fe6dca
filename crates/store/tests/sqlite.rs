//! Runs the store conformance suite against the SQLite backend, plus what only a
//! file database can show: data surviving a reopen, and two stores (like the server
//! and the command line) writing one file at once.

use std::ops::Deref;
use std::sync::Arc;

use permsync_core::{ChangeKind, Permission, Timestamp, UserId};
use permsync_store::{NewGrant, SqliteStore, Store, StoreError};
use tempfile::TempDir;

/// A store on a fresh file in a temporary directory, removed when dropped.
struct TempStore {
    store: SqliteStore,
    dir: TempDir,
}

impl Deref for TempStore {
    type Target = SqliteStore;
    fn deref(&self) -> &SqliteStore {
        &self.store
    }
}

impl TempStore {
    fn url(&self) -> String {
        db_url(&self.dir)
    }
}

fn db_url(dir: &TempDir) -> String {
    format!("sqlite://{}", dir.path().join("permsync.db").display())
}

async fn fresh_store() -> TempStore {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&db_url(&dir)).await.unwrap();
    TempStore { store, dir }
}

mod file {
    permsync_store::conformance_tests!(super::fresh_store());
}

mod memory {
    async fn memory_store() -> Box<permsync_store::SqliteStore> {
        Box::new(
            permsync_store::SqliteStore::open("sqlite::memory:")
                .await
                .unwrap(),
        )
    }
    permsync_store::conformance_tests!(memory_store());
}

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn grant(u: &str, p: &str) -> NewGrant {
    NewGrant {
        user: user(u),
        permission: Permission::parse(p).unwrap(),
        scope: None,
        expires_at: None,
    }
}

#[tokio::test]
async fn reopen_keeps_data_and_seq() {
    let first = fresh_store().await;
    first
        .create_user("cli", &user("alice"), Some("h"), Timestamp(1))
        .await
        .unwrap();
    first
        .add_grant("cli", grant("alice", "doc:read"), Timestamp(2))
        .await
        .unwrap();
    let url = first.url();
    let TempStore { store, dir } = first;
    store.close().await;
    drop(store);

    let reopened = SqliteStore::open(&url).await.unwrap();
    assert_eq!(reopened.last_seq().await.unwrap(), 2);
    let state = reopened.load().await.unwrap();
    assert_eq!(state.seq, 2);
    assert_eq!(state.grants.len(), 1);
    assert_eq!(
        reopened
            .password_hash(&user("alice"))
            .await
            .unwrap()
            .as_deref(),
        Some("h")
    );
    let next = reopened
        .invalidate("cli", &[user("alice")], None, Timestamp(3))
        .await
        .unwrap();
    assert_eq!(next.seq, 3, "seq continues after a reopen");
    assert_eq!(reopened.changes_after(0, 100).await.unwrap().len(), 3);
    drop(dir);
}

#[tokio::test]
async fn plain_path_is_accepted_and_its_folder_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("nested.db");
    let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
    store.ping().await.unwrap();
    assert!(path.exists());
}

/// The server and the command line each hold their own store on one file; their
/// writes interleave and the changelog stays 1..=N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_stay_gap_free() {
    let fixture = fresh_store().await;
    let url = fixture.url();
    let a: Arc<SqliteStore> = Arc::new(SqliteStore::open(&url).await.unwrap());
    let b: Arc<SqliteStore> = Arc::new(SqliteStore::open(&url).await.unwrap());
    a.create_user("server", &user("alice"), None, Timestamp(0))
        .await
        .unwrap();

    const PER_WRITER: usize = 40;
    let mut writers = Vec::new();
    for (n, store) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        writers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..PER_WRITER {
                let g = grant("alice", &format!("t{n}:p{i}"));
                match store
                    .add_grant("writer", g, Timestamp(i as i64))
                    .await
                    .unwrap()
                {
                    permsync_store::Added::Created(_, c) => seqs.push(c.seq),
                    permsync_store::Added::Existing(_) => panic!("each grant is new"),
                }
            }
            seqs
        }));
    }
    let mut returned = Vec::new();
    for writer in writers {
        returned.extend(writer.await.unwrap());
    }
    let expected = 1 + 4 * PER_WRITER;
    returned.sort_unstable();
    returned.dedup();
    assert_eq!(returned.len(), 4 * PER_WRITER);

    for store in [&a, &b] {
        let changes = store.changes_after(0, 10_000).await.unwrap();
        assert_eq!(changes.len(), expected);
        for (i, c) in changes.iter().enumerate() {
            assert_eq!(c.seq, i as u64 + 1);
        }
        assert_eq!(store.last_seq().await.unwrap(), expected as u64);
        let state = store.load().await.unwrap();
        assert_eq!(state.grants.len(), 4 * PER_WRITER);
        assert_eq!(
            state.users[0].1, expected as u64,
            "alice's revision is the last change"
        );
    }
}

/// A changelog row that does not decode is an Internal error, not a panic or a skip.
#[tokio::test]
async fn corrupt_changelog_row_is_internal() {
    use sqlx::Connection;
    let fixture = fresh_store().await;
    fixture
        .create_user("cli", &user("alice"), None, Timestamp(0))
        .await
        .unwrap();
    let mut raw = sqlx::SqliteConnection::connect(&fixture.url())
        .await
        .unwrap();
    let bad_rows = [
        "INSERT INTO changelog (seq, at, actor, action) VALUES (2, 0, 'x', 'no_such_action')",
        "UPDATE changelog SET action = 'grant_added', user = 'alice' WHERE seq = 2",
        "UPDATE changelog SET action = 'role_set', role = 'r', detail = '{not json' WHERE seq = 2",
        "UPDATE changelog SET action = 'user_created', user = 'not a valid name' WHERE seq = 2",
        "UPDATE changelog SET action = 'sessions_ended', user = 'alice', \
         detail = '{\"sessions\":[],\"reason\":\"bored\"}' WHERE seq = 2",
        "UPDATE changelog SET at = 'yesterday', action = 'user_created', user = 'alice' WHERE seq = 2",
    ];
    for statement in bad_rows {
        sqlx::query(statement).execute(&mut raw).await.unwrap();
        let read = fixture.changes_after(0, 10).await;
        assert!(
            matches!(read, Err(StoreError::Internal(_))),
            "{statement}: {read:?}"
        );
    }
    // The good row before it still reads.
    let first = fixture.changes_after(0, 1).await.unwrap();
    assert_eq!(
        first[0].kind,
        ChangeKind::UserCreated {
            user: user("alice")
        }
    );
}

/// Another process holding the write lock longer than the busy timeout makes a
/// write fail with Unavailable (not Internal), and the seq stays untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_blocked_beyond_busy_timeout_is_unavailable() {
    use sqlx::Connection;
    let fixture = fresh_store().await;
    let mut other = sqlx::SqliteConnection::connect(&fixture.url())
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let result = fixture
        .create_user("cli", &user("alice"), None, Timestamp(0))
        .await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(4),
        "waited for the busy timeout"
    );
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    // Reads were never blocked, and the store works again.
    assert_eq!(fixture.last_seq().await.unwrap(), 0);
    assert_eq!(
        fixture
            .create_user("cli", &user("alice"), None, Timestamp(0))
            .await
            .unwrap()
            .seq,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_stores_commit_is_signalled_at_once() {
    let a = fresh_store().await;
    let mut signal = a.commit_signal().expect("a file database signals commits");
    assert!(
        !signal.has_changed().unwrap(),
        "a new subscription starts quiet"
    );
    let b = SqliteStore::open(&a.url()).await.unwrap();
    // Opening may touch the files too; only the commit below counts.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    signal.mark_unchanged();
    b.create_user("cli", &user("alice"), None, Timestamp(1))
        .await
        .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), signal.changed())
        .await
        .expect("the other store's commit is signalled")
        .unwrap();
    assert_eq!(a.changes_after(0, 10).await.unwrap().len(), 1);
    // An in-memory database has nobody else to hear from.
    let memory = SqliteStore::open("sqlite::memory:").await.unwrap();
    assert!(memory.commit_signal().is_none());
}

/// The database holds the private signing keys: every file of it is the owner's
/// alone, whatever the umask lets a new file be.
#[cfg(unix)]
#[tokio::test]
async fn database_files_are_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let store = fresh_store().await;
    store
        .create_user("cli", &user("alice"), Some("h"), Timestamp(1))
        .await
        .unwrap();
    let files = permsync_store::database_files(&store.url()).unwrap();
    assert_eq!(files.len(), 3);
    for file in &files {
        let mode = std::fs::metadata(file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    assert!(permsync_store::database_files("sqlite::memory:")
        .unwrap()
        .is_empty());
}
