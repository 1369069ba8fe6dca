//! Delivery acknowledgements, a permsync extension of the protocol: a client
//! reports the revision each of its tabs has applied (`POST /v1/me/ack`), and an
//! operator sees which tabs of a user are open and how long a change took to reach
//! each (`GET /v1/users/{user}/tabs`). See `crate::tabs` for the registry and
//! docs/protocol-notes.md for the contract.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use permsync_core::{builtin, UserId};

use super::dto;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, Caller};
use super::needs;
use crate::state::AppState;
use crate::tabs::{Ack, TabsFull};

/// Longest `label`, in characters.
pub const MAX_LABEL: usize = 128;
/// Longest `tab` id.
pub const MAX_TAB_ID: usize = 64;

fn valid_tab_id(id: &str) -> bool {
    (1..=MAX_TAB_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Reports the revision a tab of the caller has applied; keeps the tab listed for
/// another minute. `closed: true` forgets the tab.
#[utoipa::path(post, path = "/v1/me/ack", tag = "me", request_body = dto::AckRequest,
    responses(
        (status = 204, description = "Recorded", headers(("Permissions-Revision" = u64))),
        (status = 400, body = super::error::Problem, description = "A malformed tab id or label, or a revision above the caller's"),
        (status = 401, body = super::error::Problem),
        (status = 429, body = super::error::Problem, description = "This node lists as many tabs as it keeps"),
    ),
    security(("bearer" = [])))]
pub async fn ack(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<dto::AckRequest>,
) -> ApiResult<StatusCode> {
    if !valid_tab_id(&req.tab) {
        return Err(ApiError::invalid(format!(
            "tab is 1 to {MAX_TAB_ID} characters of A-Z, a-z, 0-9, _ and -"
        )));
    }
    if req.closed {
        state.tabs.close(&caller.user, &req.tab);
        return Ok(StatusCode::NO_CONTENT);
    }
    let label = match req.label {
        Some(l) if l.chars().count() > MAX_LABEL || l.chars().any(char::is_control) => {
            return Err(ApiError::invalid(format!(
                "label is at most {MAX_LABEL} characters, none a control character"
            )));
        }
        l => l.filter(|l| !l.is_empty()),
    };
    if req.revision > state.revision(caller.user.as_str()) {
        // The client may have heard of the revision from a node ahead of this one.
        state.catch_up().await?;
        if req.revision > state.revision(caller.user.as_str()) {
            return Err(ApiError::invalid(
                "revision is above the caller's current revision",
            ));
        }
    }
    let now = state.now();
    let ack = Ack {
        tab: req.tab,
        revision: req.revision,
        leader: req.leader,
        label,
    };
    match state.tabs.ack(&caller.user, ack, now) {
        Err(TabsFull) => return Err(ApiError::rate_limited(60)),
        Ok(Some(revision)) if revision > 0 => {
            // The changelog is gap-free, so the change after `revision - 1` is the
            // one that produced `revision`. A failed read only leaves the time out.
            match state.store.changes_after(revision - 1, 1).await {
                Ok(changes) => {
                    if let Some(change) = changes.first().filter(|c| c.seq == revision) {
                        state
                            .tabs
                            .set_committed_at(&caller.user, revision, change.at);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reading a commit time for an acknowledgement")
                }
            }
        }
        Ok(_) => {}
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The open tabs of a user on this node, with the revisions each applied and when.
#[utoipa::path(get, path = "/v1/users/{user}/tabs", tag = "admin", params(("user" = String, Path)),
    responses(
        (status = 200, body = dto::UserTabs),
        (status = 403, body = super::error::Problem),
        (status = 404, body = super::error::Problem),
    ),
    security(("bearer" = [])))]
pub async fn user_tabs(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Json<dto::UserTabs>> {
    let user = UserId::parse(&user)?;
    let now = state.now();
    let revision = {
        let index = state.index();
        if user != caller.user
            && ![builtin::ADMIN, builtin::AUDIT]
                .iter()
                .any(|p| index.can(caller.user.as_str(), p, None, now))
        {
            return Err(needs("permsync:admin or permsync:audit"));
        }
        if !index.user_exists(user.as_str()) {
            return Err(ApiError::not_found(format!("user {user} not found")));
        }
        index.revision(user.as_str())
    };
    let tabs = state
        .tabs
        .of_user(user.as_str(), now)
        .iter()
        .map(dto::TabInfo::new)
        .collect();
    Ok(Json(dto::UserTabs {
        user: user.to_string(),
        revision,
        tabs,
        ttl_seconds: state.tabs.ttl().as_secs(),
    }))
}
