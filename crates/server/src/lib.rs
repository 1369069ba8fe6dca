//! permsync's HTTP server.
//!
//! [`app`] builds the whole router for a state, so tests drive it with `oneshot`;
//! [`run`] serves it on a listener the caller bound, until the caller's shutdown
//! future completes. Data walks one way: a handler authorizes with the core,
//! commits through the store, then applies the changelog (the same path that
//! applies other processes' changes) before answering.

pub mod api;
pub mod config;
mod limits;
pub mod metrics;
pub mod push;
pub mod state;
mod tail;
pub mod time;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

pub use api::{app, openapi};
pub use config::{ServerConfig, StaleTokens};
pub use state::{ensure_signing_key, AppState};

/// Serves `state` on `listener` until `shutdown` completes, then drains.
/// `/readyz` turns 503 as soon as shutdown starts.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let background = tokio::spawn(state.clone().run_background(stop_rx.clone()));
    let app = app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let signal_state = state.clone();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            signal_state.shutting_down.store(true, Ordering::Relaxed);
            let _ = stop_tx.send(true);
        })
        .await;
    background.abort();
    result
}
