//! Counting open event streams: at most `max_streams_per_user` per user (one more
//! is 429), a gauge per transport, and a total that shutdown waits on.
//!
//! A stream holds a [`StreamGuard`]; dropping it (the body ended, the socket
//! closed, the client went away) gives the place back, so no path can leak a count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use permsync_core::UserId;
use tokio::sync::watch;

use crate::api::error::{ApiError, Code};
use crate::metrics::TransportLabels;
use crate::state::AppState;

/// How long a client is asked to wait after hitting the per-user stream limit.
const RETRY_AFTER_SECS: u64 = 5;

/// The kind of an open stream, as labelled in `permsync_open_streams`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Sse,
    WebSocket,
    Changes,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::WebSocket => "ws",
            Transport::Changes => "changes",
        }
    }
}

pub struct OpenStreams {
    max_per_user: usize,
    /// Only users with at least one open stream have an entry.
    per_user: Mutex<HashMap<UserId, usize>>,
    /// Every open stream of this server; graceful shutdown waits for it to reach 0.
    total: watch::Sender<usize>,
}

impl OpenStreams {
    pub fn new(max_per_user: usize) -> Self {
        OpenStreams {
            max_per_user: max_per_user.max(1),
            per_user: Mutex::new(HashMap::new()),
            total: watch::Sender::new(0),
        }
    }

    /// Open streams of `user` now.
    pub fn of_user(&self, user: &str) -> usize {
        self.per_user
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user)
            .copied()
            .unwrap_or(0)
    }

    /// Open streams of the whole server now.
    pub fn total(&self) -> usize {
        *self.total.borrow()
    }

    /// Waits until every stream has closed, or `limit` passed; true if all closed.
    pub async fn wait_all_closed(&self, limit: Duration) -> bool {
        let mut total = self.total.subscribe();
        tokio::time::timeout(limit, total.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn release(&self, user: &UserId) {
        let mut per_user = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_user.get_mut(user.as_str()) {
            *n -= 1;
            if *n == 0 {
                per_user.remove(user.as_str());
            }
        }
        drop(per_user);
        self.total.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// One open stream's place in the count; gives it back on drop.
pub struct StreamGuard {
    state: AppState,
    user: UserId,
    transport: Transport,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.state.open_streams.release(&self.user);
        self.state
            .metrics
            .open_streams
            .get_or_create(&TransportLabels {
                transport: self.transport.label(),
            })
            .dec();
    }
}

impl AppState {
    /// Takes a place for a new stream of `user`: 503 once shutdown has begun (so
    /// the client reconnects to another node), 429 past the per-user limit.
    pub fn open_stream(
        &self,
        user: &UserId,
        transport: Transport,
    ) -> Result<StreamGuard, ApiError> {
        if *self.streams_stop.borrow() {
            return Err(ApiError::new(
                Code::Unavailable,
                "the server is shutting down; reconnect",
            ));
        }
        {
            let mut per_user = self
                .open_streams
                .per_user
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let n = per_user.entry(user.clone()).or_insert(0);
            if *n >= self.open_streams.max_per_user {
                return Err(ApiError {
                    detail: format!(
                        "at most {} open event streams per user",
                        self.open_streams.max_per_user
                    ),
                    ..ApiError::rate_limited(RETRY_AFTER_SECS)
                });
            }
            *n += 1;
        }
        self.open_streams.total.send_modify(|n| *n += 1);
        self.metrics
            .open_streams
            .get_or_create(&TransportLabels {
                transport: transport.label(),
            })
            .inc();
        Ok(StreamGuard {
            state: self.clone(),
            user: user.clone(),
            transport,
        })
    }
}
