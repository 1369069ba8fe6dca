//! Operations endpoints: health, readiness, metrics, keys, the OpenAPI document.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::error::{ApiError, Code};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/.well-known/jwks.json", get(jwks))
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// Ready when the store answers and this node has applied every committed change.
async fn readyz(State(state): State<AppState>) -> Response {
    let unavailable = |detail: &str| ApiError::new(Code::Unavailable, detail).into_response();
    if state.shutting_down.load(Ordering::Relaxed) {
        return unavailable("shutting down");
    }
    let committed = match state.store.last_seq().await {
        Ok(seq) => seq,
        Err(_) => return unavailable("the store is unreachable"),
    };
    if state.index().applied_seq() < committed {
        match state.catch_up().await {
            Ok(applied) if applied >= committed => {}
            _ => return unavailable("catching up with the changelog"),
        }
    }
    axum::Json(serde_json::json!({"status": "ready", "applied_seq": state.index().applied_seq()}))
        .into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn jwks(State(state): State<AppState>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(state.tokens.jwks()),
    )
        .into_response()
}

pub async fn openapi_json(doc: Arc<String>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.as_str().to_owned(),
    )
        .into_response()
}
