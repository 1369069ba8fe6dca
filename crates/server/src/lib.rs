//! permsync's HTTP server.
//!
//! [`app`] builds the whole router for a state, so tests drive it with `oneshot`;
//! [`run`] serves it on a listener the caller bound, until the caller's shutdown
//! future completes. Data walks one way: a handler authorizes with the core,
//! commits through the store, then applies the changelog (the same path that
//! applies other processes' changes) before answering.

pub mod api;
pub mod config;
mod connection;
mod limits;
pub mod metrics;
pub mod push;
mod serve;
mod sessions;
pub mod state;
pub mod tabs;
mod tail;
pub mod time;
mod token_cache;

use std::future::Future;
use std::sync::atomic::Ordering;

/// The direct event stream path's request-head parser and its limits, for the fuzz
/// targets in `fuzz/`. Not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::push::direct::{parse_head, MAX_HEAD, MAX_HEADERS};
}

pub use api::{app, openapi};
pub use config::{Connections, ServerConfig, StaleTokens};
pub use state::{ensure_signing_key, AppState};

/// Raises this process's soft limit of open files to its hard limit (every event
/// stream holds a socket); returns the new soft limit.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// The default `max_connections`: 90 % of this process's soft limit of open
/// files, leaving the rest to the store, the over-capacity answers and logs.
pub fn default_max_connections() -> usize {
    let soft = rlimit::Resource::NOFILE
        .get()
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    usize::try_from(soft / 10 * 9).unwrap_or(usize::MAX).max(1)
}

/// How many connections the kernel may queue before they are accepted (capped by
/// `net.core.somaxconn`). tokio's default of 1024 overflows when thousands of event
/// streams reconnect at once, e.g. after a restart; an overflow costs the client a
/// retransmission (a second or more).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener for [`run`] on the first address `addr` resolves to, with
/// [`LISTEN_BACKLOG`].
pub async fn bind(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let addr = tokio::net::lookup_host(addr).await?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )
    })?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `state` on `listener` until `shutdown` completes, then drains.
/// `/readyz` turns 503 as soon as shutdown starts; the listener closes; every
/// event stream ends (SSE bodies finish, WebSockets close with 1001) so clients
/// reconnect elsewhere; requests in flight get `shutdown_timeout` to finish,
/// then every connection left is dropped and this returns.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = app(state.clone());
    run_router(listener, state, router, shutdown).await
}

/// [`run`], serving `router` instead of [`app`]`(state)`: for a binary that puts
/// routes of its own around the API (the demo web apps do).
pub async fn run_router(
    listener: tokio::net::TcpListener,
    state: AppState,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let background = tokio::spawn(state.clone().run_background(stop_rx.clone()));
    let signal_state = state.clone();
    let limits = state.config.connections;
    let max_connections = limits
        .max_connections
        .unwrap_or_else(default_max_connections);
    let deadline = serve::serve(listener, router, limits, max_connections, async move {
        shutdown.await;
        signal_state.shutting_down.store(true, Ordering::Relaxed);
        let _ = stop_tx.send(true);
        signal_state.streams_stop.send_replace(true);
        signal_state.hub.close_all();
    })
    .await;
    // WebSockets left hyper's connections at the upgrade; they close on their
    // own (1001), and are waited for until the same deadline, so their close
    // frames are written before the process ends.
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    if !state.open_streams.wait_all_closed(left).await {
        tracing::warn!(
            open = state.open_streams.total(),
            "event streams still open at the shutdown deadline"
        );
    }
    background.abort();
    Ok(())
}
