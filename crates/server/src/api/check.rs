//! Permission checks for backends.

use axum::extract::State;
use permsync_core::{builtin, Index, Permission, Scope, Timestamp, UserId};

use super::dto::{BatchCheckRequest, BatchCheckResult, CheckRequest, CheckResult};
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, Caller};
use super::needs;
use crate::state::AppState;

/// Most checks in one batch.
pub const MAX_BATCH: usize = 1000;

/// Validates a check's fields; returns the user it asks about.
fn parse_check(req: &CheckRequest) -> ApiResult<UserId> {
    let user = UserId::parse(&req.user)?;
    Permission::parse(&req.permission)?;
    if let Some(s) = &req.scope {
        Scope::parse(s)?;
    }
    Ok(user)
}

fn forbidden_other() -> ApiError {
    needs("permsync:check to check another user")
}

fn answer(index: &Index, user: &UserId, req: &CheckRequest, now: Timestamp) -> CheckResult {
    CheckResult {
        allowed: index.can(user.as_str(), &req.permission, req.scope.as_deref(), now),
        revision: index.revision(user.as_str()),
    }
}

fn check_one(
    state: &AppState,
    caller: &Caller,
    req: &CheckRequest,
    now: Timestamp,
    may_check_others: bool,
) -> ApiResult<CheckResult> {
    let user = parse_check(req)?;
    if user != caller.user && !may_check_others {
        return Err(forbidden_other());
    }
    Ok(answer(&state.index(), &user, req, now))
}

fn may_check_others(index: &Index, caller: &Caller, now: Timestamp) -> bool {
    index.can(caller.user.as_str(), builtin::CHECK, None, now)
        || index.can(caller.user.as_str(), builtin::ADMIN, None, now)
}

/// Whether a user may do a permission at a scope.
#[utoipa::path(post, path = "/v1/check", tag = "checks", request_body = CheckRequest,
    responses((status = 200, body = CheckResult), (status = 400, body = super::error::Problem), (status = 403, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn check(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CheckRequest>,
) -> ApiResult<axum::Json<CheckResult>> {
    let now = state.now();
    let user = parse_check(&req)?;
    // One read of the index answers both whether the caller may ask and the question.
    let index = state.index();
    if user != caller.user && !may_check_others(&index, &caller, now) {
        return Err(forbidden_other());
    }
    Ok(axum::Json(answer(&index, &user, &req, now)))
}

/// Up to 1000 checks, answered in order.
#[utoipa::path(post, path = "/v1/check/batch", tag = "checks", request_body = BatchCheckRequest,
    responses((status = 200, body = BatchCheckResult), (status = 400, body = super::error::Problem), (status = 403, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn check_batch(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<BatchCheckRequest>,
) -> ApiResult<axum::Json<BatchCheckResult>> {
    if req.checks.len() > MAX_BATCH {
        return Err(ApiError::invalid(format!(
            "at most {MAX_BATCH} checks per batch"
        )));
    }
    let now = state.now();
    let others = may_check_others(&state.index(), &caller, now);
    let results = req
        .checks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            check_one(&state, &caller, c, now, others).map_err(|mut e| {
                e.detail = format!("checks[{i}]: {}", e.detail);
                e
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(axum::Json(BatchCheckResult { results }))
}
