//! Load on the live event streams: many idle SSE connections to permsync server
//! processes, and how fast changes reach them.
//!
//! `cargo run --release -p permsync-bench --bin push_load -- [--idle 10000] [--wide 50000] [--max 100000] [--grants 1000] [--rounds 5]`
//!
//! The one command plays four parts, by re-running its own executable:
//! - the driver (no subcommand, [`driver`]) builds a SQLite database, starts the
//!   processes below, runs the phases and prints what it measured;
//! - `serve DB_URL` is one permsync server: `permsync_server::run` with the
//!   default configuration, listening as `permsync serve` does
//!   (`permsync_server::bind`), in its own process so its memory and CPU time can
//!   be read from `/proc`. Several of them share the database when more streams
//!   are wanted than one process may hold;
//! - `clients ADDR TOKENS FROM COUNT` ([`client`]) holds COUNT SSE connections
//!   over raw TCP and answers commands on stdin;
//! - `floor` ([`floor`]) is the least a server can do: it answers every stream
//!   request with a fixed head and, on command, writes one pre-encoded event to
//!   every connection from two threads, and nothing else. Measured with the same
//!   clients in the same run, it is this machine's floor for a fan-out.
//!
//! A process may hold at most 20,000 open files on these machines (the hard
//! limit, which cannot be raised), so a process holds at most [`PER_PROCESS`]
//! connections, server or client.

mod client;
mod driver;
mod floor;

use std::io::Write;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use permsync_store::{SqliteStore, Store};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connections per process, server or client: below the 20,000 open files a
/// process may hold.
const PER_PROCESS: usize = 19_000;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]).await,
        Some("clients") => client::run(&args[1..]).await,
        Some("floor") => floor::run().await,
        _ => driver::run(&args).await,
    }
}

/// One permsync server on `DB_URL`, until SIGTERM.
async fn serve(args: &[String]) -> Result<(), BoxError> {
    let db = args.first().ok_or("serve DB_URL")?;
    let limit = permsync_server::raise_open_files_limit()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(db).await?);
    // Holds PER_PROCESS streams, above the default cap of 90 % of the open files.
    let config = permsync_server::ServerConfig {
        connections: permsync_server::Connections {
            max_connections: Some(PER_PROCESS + 500),
            ..Default::default()
        },
        ..Default::default()
    };
    let state = permsync_server::AppState::open(store, config)
        .await
        .map_err(|e| e.to_string())?;
    let listener = permsync_server::bind("127.0.0.1:0").await?;
    println!("listening {} nofile {limit}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let shutdown = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    permsync_server::run(listener, state, shutdown).await?;
    Ok(())
}
