//! Single-use stream tickets, for `EventSource` and WebSocket clients that cannot
//! set an `Authorization` header: `POST /v1/me/events/ticket` trades a Bearer token
//! for a short-lived ticket, redeemed once as `?ticket=` on an event stream.
//!
//! A ticket carries the caller's user, session and token expiry, so a stream opened
//! with it ends with the session, and with `token_expired` when the token would
//! have. Only a hash of each ticket is kept, so the table is no list of live
//! credentials and lookups do not compare secrets byte by byte. The table is
//! bounded: expired tickets are purged, each user may hold a few at once, and the
//! whole table has a cap. Tickets live in this node's memory: a ticket is redeemed
//! on the node that issued it (a load balancer with several nodes needs affinity
//! between the two requests, or clients that send the Bearer header instead).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use permsync_auth::{random_token, sha256_hex};
use permsync_core::UserId;
use serde::Serialize;
use tokio::time::Instant;
use utoipa::ToSchema;

use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::Caller;
use crate::state::AppState;

/// Unredeemed tickets one user may hold at once.
pub const MAX_TICKETS_PER_USER: usize = 32;
/// Unredeemed tickets the whole server holds at most.
pub const MAX_TICKETS: usize = 200_000;
/// Expired tickets are swept at most this often (the sweep walks the table).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct Ticket {
    user: UserId,
    sid: Option<String>,
    /// The access token's `exp` (Unix seconds).
    exp: i64,
    valid_until: Instant,
}

struct Table {
    by_hash: HashMap<String, Ticket>,
    per_user: HashMap<UserId, usize>,
    last_sweep: Instant,
}

impl Table {
    fn forget(&mut self, user: &UserId) {
        if let Some(n) = self.per_user.get_mut(user.as_str()) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(user.as_str());
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        let per_user = &mut self.per_user;
        self.by_hash.retain(|_, t| {
            let keep = t.valid_until > now;
            if !keep {
                if let Some(n) = per_user.get_mut(t.user.as_str()) {
                    *n -= 1;
                }
            }
            keep
        });
        per_user.retain(|_, n| *n > 0);
        self.last_sweep = now;
    }
}

pub struct Tickets {
    ttl: Duration,
    table: Mutex<Table>,
}

impl Tickets {
    pub fn new(ttl: Duration) -> Self {
        Tickets {
            ttl: ttl.max(Duration::from_secs(1)),
            table: Mutex::new(Table {
                by_hash: HashMap::new(),
                per_user: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new ticket for `caller`, or 429 when the user (or the server) holds too many.
    pub fn issue(&self, caller: &Caller) -> Result<String, ApiError> {
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(table.last_sweep) >= SWEEP_EVERY || table.by_hash.len() >= MAX_TICKETS
        {
            table.sweep(now);
        }
        let held = table
            .per_user
            .get(caller.user.as_str())
            .copied()
            .unwrap_or(0);
        if held >= MAX_TICKETS_PER_USER || table.by_hash.len() >= MAX_TICKETS {
            return Err(ApiError::rate_limited(self.ttl.as_secs()));
        }
        let ticket = random_token();
        table.by_hash.insert(
            sha256_hex(&ticket),
            Ticket {
                user: caller.user.clone(),
                sid: caller.sid.clone(),
                exp: caller.exp,
                valid_until: now + self.ttl,
            },
        );
        *table.per_user.entry(caller.user.clone()).or_insert(0) += 1;
        Ok(ticket)
    }

    /// The caller a ticket stands for; `None` if it is unknown, used or expired.
    /// Either way the ticket is gone afterwards.
    pub fn redeem(&self, ticket: &str) -> Option<Caller> {
        let hash = sha256_hex(ticket);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let t = table.by_hash.remove(&hash)?;
        table.forget(&t.user);
        (t.valid_until > Instant::now()).then_some(Caller {
            user: t.user,
            sid: t.sid,
            exp: t.exp,
        })
    }

    /// Unredeemed tickets held now (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_hash
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Serialize, ToSchema)]
pub struct StreamTicket {
    /// Pass as `?ticket=` to `/v1/me/events` or `/v1/me/ws`, once.
    pub ticket: String,
    /// Seconds the ticket stays redeemable.
    pub expires_in: u64,
}

/// A single-use ticket to open one event stream without an `Authorization` header.
#[utoipa::path(post, path = "/v1/me/events/ticket", tag = "me",
    responses(
        (status = 200, body = StreamTicket),
        (status = 401, body = crate::api::error::Problem),
        (status = 429, body = crate::api::error::Problem),
    ),
    security(("bearer" = [])))]
pub async fn create_ticket(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<StreamTicket>> {
    let ticket = state.tickets.issue(&caller)?;
    Ok(Json(StreamTicket {
        ticket,
        expires_in: state.tickets.ttl().as_secs(),
    }))
}
