//! The caller's own permissions.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::dto::MyPermissions;
use super::error::ApiResult;
use super::extract::Caller;
use crate::state::AppState;

/// Whether an `If-None-Match` header names this ETag (or `*`).
fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

/// The caller's effective permissions at their current revision.
#[utoipa::path(get, path = "/v1/me/permissions", tag = "me",
    params(("If-None-Match" = Option<String>, Header, description = "An ETag seen before: 304 while the revision is the same")),
    responses(
        (status = 200, body = MyPermissions, headers(("ETag" = String), ("Permissions-Revision" = u64))),
        (status = 304, description = "Unchanged since the given ETag"),
        (status = 401, body = super::error::Problem),
    ),
    security(("bearer" = [])))]
pub async fn my_permissions(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let now = state.now();
    let snapshot = state.index().snapshot(&caller.user, now);
    let etag = format!("\"{}\"", snapshot.revision);
    let etag_value = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\""));
    if etag_matches(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }
    Ok((
        [(header::ETAG, etag_value)],
        axum::Json(MyPermissions::from(&snapshot)),
    )
        .into_response())
}
