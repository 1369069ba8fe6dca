use std::sync::Arc;
use std::time::Instant;
use permsync_core::{Permission, Timestamp, UserId};
use permsync_store::{NewGrant, SqliteStore, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    let store = Arc::new(SqliteStore::open(&url).await.unwrap());
    let u = UserId::parse("alice").unwrap();
    store.create_user("x", &u, None, Timestamp(0)).await.unwrap();
    let n = 3000;
    let start = Instant::now();
    for i in 0..n {
        store.add_grant("x", NewGrant { user: u.clone(), permission: Permission::parse(&format!("p:{i}")).unwrap(), scope: None, expires_at: None }, Timestamp(1)).await.unwrap();
    }
    let e = start.elapsed();
    println!("sequential: {n} commits in {e:?} = {:.0}/s", n as f64 / e.as_secs_f64());
    let start = Instant::now();
    let mut tasks = vec![];
    for t in 0..8 {
        let s = store.clone(); let u = u.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..n/8 {
                s.add_grant("x", NewGrant { user: u.clone(), permission: Permission::parse(&format!("q{t}:{i}")).unwrap(), scope: None, expires_at: None }, Timestamp(1)).await.unwrap();
            }
        }));
    }
    for t in tasks { t.await.unwrap(); }
    let e = start.elapsed();
    println!("8 concurrent: {n} commits in {e:?} = {:.0}/s", n as f64 / e.as_secs_f64());
    let users: Vec<UserId> = (0..10000).map(|i| UserId::parse(&format!("u{i}")).unwrap()).collect();
    let start = Instant::now();
    store.invalidate("x", &users, None, Timestamp(2)).await.unwrap();
    println!("invalidate 10k users: {:?}", start.elapsed());
    let start = Instant::now();
    let st = store.load().await.unwrap();
    println!("load ({} grants, {} users): {:?}", st.grants.len(), st.users.len(), start.elapsed());
    let start = Instant::now();
    let c = store.changes_after(0, 1000).await.unwrap();
    println!("changes_after 1000: {:?} ({})", start.elapsed(), c.len());
    let start = Instant::now();
    for _ in 0..1000 { store.expire_due(Timestamp(5)).await.unwrap(); }
    println!("expire_due nothing due x1000: {:?}", start.elapsed());
}
