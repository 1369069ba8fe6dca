//! The accept loop. hyper serves every connection, except one whose first bytes
//! are an event stream request (`GET /v1/me/events`): [`crate::push::direct`]
//! serves that one, through the same router, and writes the stream's body straight
//! to the socket (see there why).
//!
//! Shutdown: once `shutdown` completes the loop stops accepting, every hyper
//! connection shuts down gracefully (idle ones at once, busy ones after their
//! response), and [`serve`] returns when every connection has ended.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::push::direct;

/// Serves `router` on `listener` until `shutdown` completes and every connection
/// has ended. Handlers see the peer's address as `ConnectInfo<SocketAddr>`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    // Connections watch `signal` to start their graceful shutdown, and each holds a
    // clone of `closed` until it ends.
    let (signal_tx, signal_rx) = watch::channel(());
    let (closed_tx, closed_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (router, signal, closed) = (router.clone(), signal_rx.clone(), closed_rx.clone());
        tokio::spawn(async move {
            connection(stream, remote, router, signal).await;
            drop(closed);
        });
    }
    drop(listener);
    signal_tx.send_replace(());
    drop(closed_rx);
    closed_tx.closed().await;
}

async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    router: Router,
    mut signal: watch::Receiver<()>,
) {
    // A connection that has sent nothing when shutdown starts is simply closed.
    let event_stream = tokio::select! {
        is = direct::is_event_stream(&stream) => is,
        _ = signal.changed() => return,
    };
    if event_stream {
        direct::serve(stream, remote, router, signal).await;
        return;
    }
    let service =
        TowerToHyperService::new(router.map_request(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(remote));
            req.map(Body::new)
        }));
    let builder = Builder::new(TokioExecutor::new());
    let mut conn = pin!(builder.serve_connection_with_upgrades(TokioIo::new(stream), service));
    let mut signalled = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = signal.changed(), if !signalled => {
                signalled = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// After a failed accept: a peer that went away is nothing; anything else (most
/// likely out of open files) is logged, then the loop pauses so that closing
/// connections can free some, rather than spinning.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
