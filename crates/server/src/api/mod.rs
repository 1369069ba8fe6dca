//! The v1 HTTP API: routing, middleware, and the OpenAPI document generated from
//! the handlers' annotations.

pub mod dto;
pub mod error;
pub mod extract;

mod admin;
mod auth;
mod check;
mod me;
mod ops;
mod problems;
mod tabs;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;
use error::{ApiError, Code};
use extract::{client_ip, CallerSlot};

pub const PERMISSIONS_REVISION: HeaderName = HeaderName::from_static("permissions-revision");
/// Request bodies over this answer 413.
pub const BODY_LIMIT: usize = 64 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(title = "permsync", description = "Live permissions for single-page apps: the v1 API."),
    modifiers(&BearerAuth),
    components(schemas(error::Problem))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The authenticated routes, the public (rate-limited) routes, and the OpenAPI
/// document describing them.
fn routes() -> (Router<AppState>, Router<AppState>, utoipa::openapi::OpenApi) {
    let public = OpenApiRouter::new()
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout));
    let authenticated = OpenApiRouter::new()
        .routes(routes!(me::my_permissions))
        .routes(routes!(check::check))
        .routes(routes!(check::check_batch))
        .routes(routes!(admin::create_user, admin::list_users))
        .routes(routes!(admin::get_user, admin::delete_user))
        .routes(routes!(admin::add_grant))
        .routes(routes!(admin::remove_grant))
        .routes(routes!(admin::add_binding))
        .routes(routes!(admin::remove_binding))
        .routes(routes!(admin::revoke_sessions))
        .routes(routes!(admin::list_roles))
        .routes(routes!(admin::put_role, admin::delete_role))
        .routes(routes!(admin::invalidate))
        .routes(routes!(admin::list_changes))
        .routes(routes!(crate::push::sse::my_events))
        .routes(routes!(crate::push::ws::my_ws))
        .routes(routes!(crate::push::tickets::create_ticket))
        .routes(routes!(crate::push::changes::change_stream))
        .routes(routes!(tabs::ack))
        .routes(routes!(tabs::user_tabs));
    let (public, public_api) = public.split_for_parts();
    let (authenticated, mut api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(authenticated)
        .split_for_parts();
    api.merge(public_api);
    problems::document(&mut api);
    (authenticated, public.merge(ops::routes()), api)
}

/// The OpenAPI 3.1 document of the v1 API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().2
}

/// Builds the whole application for `state`.
pub fn app(state: AppState) -> Router {
    let (authenticated, public, api) = routes();
    let api = Arc::new(api.to_json().unwrap_or_default());
    let public = public
        .route(
            "/openapi.json",
            axum::routing::get(move || ops::openapi_json(api.clone())),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            rate_limit_public,
        ));
    let mut router = authenticated
        .merge(public)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::invalid("method not allowed on this endpoint")
                .with_status(StatusCode::METHOD_NOT_ALLOWED)
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            stamp_revision,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe));
    if let Some(cors) = cors(&state.config.cors_origins) {
        router = router.layer(cors);
    }
    router.with_state(state)
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let any = origins.iter().any(|o| o == "*");
    let origin = if any {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let layer = CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("x-requested-with"),
        ])
        .expose_headers([
            PERMISSIONS_REVISION,
            header::ETAG,
            header::RETRY_AFTER,
            header::WWW_AUTHENTICATE,
        ])
        .max_age(std::time::Duration::from_secs(600));
    Some(if any {
        layer
    } else {
        layer.allow_credentials(true)
    })
}

/// Stamps `Permissions-Revision` (the caller's revision as of the response) and
/// `Cache-Control: no-store` on every authenticated response.
async fn stamp_revision(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let slot = CallerSlot::default();
    req.extensions_mut().insert(slot.clone());
    let mut res = next.run(req).await;
    if let Some(user) = slot.0.get() {
        let revision = state.revision(user.as_str());
        let headers = res.headers_mut();
        headers.insert(PERMISSIONS_REVISION, HeaderValue::from(revision));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    // A standard method is a constant: cloning it does not allocate (a made-up one
    // does, and is counted as `other`).
    let method = req.method().clone();
    let res = next.run(req).await;
    state
        .metrics
        .request_seconds
        .observe(started.elapsed().as_secs_f64());
    if let Some(counter) = state
        .metrics
        .request_counter(&method, res.status().as_u16())
    {
        counter.inc();
    }
    res
}

async fn rate_limit_public(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match state.limits.check_public(client_ip(req.extensions())) {
        Ok(()) => next.run(req).await,
        Err(wait) => ApiError::rate_limited(wait).into_response(),
    }
}

/// Problem for a request without the permission an endpoint needs.
pub(crate) fn needs(permissions: &str) -> ApiError {
    ApiError::new(Code::Forbidden, format!("this needs {permissions}"))
}
