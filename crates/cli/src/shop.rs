//! The demo shop's own backend, under `/demo/api/` and only with `serve --demo`.
//!
//! It stands for an application's backend, not for permsync's API (which is all
//! under `/v1`): it authenticates the caller with a permsync access token, changes
//! permissions through the store like any writer, and answers with the caller's
//! new revision in `Permissions-Revision` (and the JSON body), so the shop's page
//! waits for exactly that revision (`waitForRevision`) instead of clearing caches.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use permsync_core::{Permission, RoleName, Scope};
use permsync_server::api::error::ApiError;
use permsync_server::api::extract::{ApiJson, Caller};
use permsync_server::api::PERMISSIONS_REVISION;
use permsync_server::AppState;
use permsync_store::{Added, NewBinding};
use serde::{Deserialize, Serialize};

/// Who the shop's changes are by, in the audit log.
const ACTOR: &str = "shop";

/// A plan the shop sells: buying it binds the buyer to `role` at `scope`.
pub struct Plan {
    pub name: &'static str,
    pub role: &'static str,
    pub scope: &'static str,
    pub permissions: &'static [&'static str],
    pub description: &'static str,
}

pub const PLANS: &[Plan] = &[Plan {
    name: "pro",
    role: "pro",
    scope: "org/acme",
    permissions: &["project:create", "shop:pro"],
    description: "Bought in the shop: the Pro plan (creates projects)",
}];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/demo/api/buy", post(buy))
        .route("/demo/api/invoices", post(create_invoice))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BuyRequest {
    plan: String,
}

#[derive(Serialize)]
struct Bought {
    plan: &'static str,
    role: &'static str,
    scope: &'static str,
    /// The buyer's revision that includes the plan.
    revision: u64,
    /// The change that bound the role; absent when the plan was held already.
    seq: Option<u64>,
}

/// Answers with the caller's revision in the body and the header.
fn with_revision(status: StatusCode, revision: u64, body: impl Serialize) -> Response {
    let headers = [
        (PERMISSIONS_REVISION, HeaderValue::from(revision)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    (status, headers, Json(body)).into_response()
}

async fn buy(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<BuyRequest>,
) -> Result<Response, ApiError> {
    let plan = PLANS
        .iter()
        .find(|p| p.name == req.plan)
        .ok_or_else(|| ApiError::not_found(format!("no plan {:?}", req.plan)))?;
    let role = RoleName::parse(plan.role)?;
    let now = state.now();
    if !state.index().role_exists(role.as_str()) {
        // Databases seeded before the shop sold plans get the role on first sale.
        let permissions = plan
            .permissions
            .iter()
            .map(|p| Permission::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        state
            .store
            .set_role(ACTOR, &role, &permissions, plan.description, now)
            .await?;
    }
    let binding = NewBinding {
        user: caller.user.clone(),
        role,
        scope: Some(Scope::parse(plan.scope)?),
        expires_at: None,
    };
    let seq = match state.store.add_binding(ACTOR, binding, now).await? {
        Added::Created(_, change) => Some(change.seq),
        Added::Existing(_) => None,
    };
    // Read-your-writes: the revision answered includes the binding.
    state.catch_up().await?;
    let revision = state.revision(caller.user.as_str());
    let status = if seq.is_some() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_revision(
        status,
        revision,
        Bought {
            plan: plan.name,
            role: plan.role,
            scope: plan.scope,
            revision,
            seq,
        },
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvoiceRequest {
    project: String,
    customer: String,
    amount: String,
    #[serde(default)]
    note: String,
}

#[derive(Serialize)]
struct InvoiceCreated {
    id: String,
    project: String,
    revision: u64,
}

/// Creates an invoice in a project: the backend enforces `invoice:create` at the
/// project's scope whatever the page showed.
async fn create_invoice(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<InvoiceRequest>,
) -> Result<Response, ApiError> {
    if req.project.is_empty()
        || req.project.len() > 64
        || !req.project.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(ApiError::invalid("project is 1 to 64 letters or digits"));
    }
    if req.customer.trim().is_empty()
        || req.customer.chars().count() > 200
        || req.note.chars().count() > 2000
    {
        return Err(ApiError::invalid(
            "customer is 1 to 200 characters, note at most 2000",
        ));
    }
    if req
        .amount
        .trim()
        .parse::<f64>()
        .map_or(true, |a| !a.is_finite() || a <= 0.0)
    {
        return Err(ApiError::invalid("amount is a positive number"));
    }
    let scope = format!("org/acme/project/{}", req.project);
    let now = state.now();
    if !state
        .index()
        .can(caller.user.as_str(), "invoice:create", Some(&scope), now)
    {
        return Err(ApiError::forbidden(format!(
            "this needs invoice:create at {scope}"
        )));
    }
    let revision = state.revision(caller.user.as_str());
    let id = format!("INV-{}", now.0 % 1_000_000);
    Ok(with_revision(
        StatusCode::CREATED,
        revision,
        InvoiceCreated {
            id,
            project: req.project,
            revision,
        },
    ))
}
