//! Committed changes per second on the embedded SQLite store: sequential grants
//! from one writer, then the same number from 8 concurrent writers (serialized by
//! the store, as every change takes the next `seq`).
//!
//! `cargo run --release -p permsync-bench --bin commit_rate -- [CHANGES]`

use std::sync::Arc;
use std::time::Instant;

use permsync_core::{Permission, Timestamp, UserId};
use permsync_store::{NewGrant, SqliteStore, Store};

fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(d.as_millis() as i64)
}

fn grant(user: &UserId, i: usize) -> NewGrant {
    NewGrant {
        user: user.clone(),
        permission: Permission::parse(&format!("bench:p{i}")).expect("valid permission"),
        scope: None,
        expires_at: None,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&format!("sqlite://{}", dir.path().join("b.db").display())).await?,
    );
    let users: Vec<UserId> = (0..8)
        .map(|i| UserId::parse(&format!("u{i}")).expect("valid user"))
        .collect();
    for u in &users {
        store.create_user("bench", u, None, now()).await?;
    }

    let started = Instant::now();
    for i in 0..n {
        store.add_grant("bench", grant(&users[0], i), now()).await?;
    }
    let sequential = n as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for (w, user) in users.iter().enumerate() {
        let (store, user) = (store.clone(), user.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..n / 8 {
                store
                    .add_grant("bench", grant(&user, n + w * n + i), now())
                    .await
                    .expect("commit");
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let concurrent = (n / 8 * 8) as f64 / started.elapsed().as_secs_f64();
    let last = store.last_seq().await?;
    println!("changes per writer run: {n}");
    println!("sequential, 1 writer:   {sequential:>8.0} commits/s");
    println!("concurrent, 8 writers:  {concurrent:>8.0} commits/s");
    println!(
        "last seq: {last} (gap-free: {})",
        store.changes_after(0, u32::MAX).await?.len() as u64 == last
    );
    Ok(())
}
