//! Administration: users, grants, bindings, roles, sessions, invalidation and the
//! audit log. Admins may do everything; delegates change grants and bindings only
//! within what they hold (see `permsync_core::authorize_change`), and read users
//! and roles to find what they hand out (`permsync_core::read_access`).

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::State;
use axum::http::StatusCode;
use permsync_core::{
    authorize_change, builtin, may_list, read_access, AdminAction, Permission, ReadAccess,
    RoleName, Scope, Timestamp, UserId,
};
use permsync_store::{Added, NewBinding, NewGrant};
use serde::Deserialize;
use utoipa::IntoParams;

use super::dto;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, Caller};
use super::needs;
use crate::state::AppState;
use crate::time::parse_rfc3339;

use axum::Json;

/// Largest page of a listing.
pub const MAX_LIMIT: u32 = 1000;
pub const MAX_ROLE_PERMISSIONS: usize = 1000;
pub const MAX_DESCRIPTION: usize = 1024;
pub const MAX_INVALIDATE: usize = 10_000;

impl AppState {
    fn holds_any(&self, caller: &Caller, permissions: &[&str]) -> bool {
        let now = self.now();
        let index = self.index();
        permissions
            .iter()
            .any(|p| index.can(caller.user.as_str(), p, None, now))
    }

    fn require_any(&self, caller: &Caller, permissions: &[&str]) -> ApiResult<()> {
        if self.holds_any(caller, permissions) {
            Ok(())
        } else {
            Err(needs(&permissions.join(" or ")))
        }
    }

    /// Lists of users and roles: admins, auditors and delegates at any scope.
    fn require_listing(&self, caller: &Caller) -> ApiResult<()> {
        if may_list(&self.index(), caller.user.as_str(), self.now()) {
            Ok(())
        } else {
            Err(needs("permsync:admin, permsync:audit or permsync:delegate"))
        }
    }

    fn require_delegation(
        &self,
        caller: &Caller,
        target: &UserId,
        action: AdminAction<'_>,
    ) -> ApiResult<()> {
        authorize_change(
            &self.index(),
            caller.user.as_str(),
            target.as_str(),
            action,
            self.now(),
        )
        .map_err(|d| ApiError::forbidden(d.0))
    }

    fn require_existing_user(&self, user: &UserId) -> ApiResult<()> {
        if self.index().user_exists(user.as_str()) {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("user {user} not found")))
        }
    }
}

fn parse_optional_scope(s: Option<&str>) -> ApiResult<Option<Scope>> {
    s.map(Scope::parse).transpose().map_err(Into::into)
}

fn parse_expiry(s: Option<&str>, now: Timestamp) -> ApiResult<Option<Timestamp>> {
    let Some(s) = s else { return Ok(None) };
    let t = parse_rfc3339(s)
        .ok_or_else(|| ApiError::invalid(format!("expires_at {s:?} is not an RFC 3339 time")))?;
    if t <= now {
        return Err(ApiError::invalid("expires_at must be in the future"));
    }
    Ok(Some(t))
}

fn check_limit(limit: Option<u32>) -> ApiResult<u32> {
    match limit.unwrap_or(100) {
        0 => Err(ApiError::invalid("limit must be at least 1")),
        l if l > MAX_LIMIT => Err(ApiError::invalid(format!(
            "limit must be at most {MAX_LIMIT}"
        ))),
        l => Ok(l),
    }
}

/// Creates a user, optionally with a password for built-in login.
#[utoipa::path(post, path = "/v1/users", tag = "admin", request_body = dto::CreateUser,
    responses((status = 201, body = dto::CreatedUser), (status = 403, body = super::error::Problem), (status = 409, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<dto::CreateUser>,
) -> ApiResult<(StatusCode, Json<dto::CreatedUser>)> {
    state.require_any(&caller, &[builtin::ADMIN])?;
    let user = UserId::parse(&req.user)?;
    let hash = match req.password {
        Some(pw) if pw.is_empty() || pw.len() > 1024 => {
            return Err(ApiError::invalid("a password is 1 to 1024 bytes"));
        }
        // In the same bounded slots as login's checks: each hash holds ~19 MiB.
        Some(pw) => Some(
            state
                .hashing
                .run(move |memory| permsync_auth::hash_password_in(&pw, memory))
                .await?,
        ),
        None => None,
    };
    let change = state
        .store
        .create_user(caller.user.as_str(), &user, hash.as_deref(), state.now())
        .await?;
    state.catch_up().await?;
    let revision = state.revision(user.as_str());
    Ok((
        StatusCode::CREATED,
        Json(dto::CreatedUser {
            user: user.to_string(),
            revision,
            seq: change.seq,
        }),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListUsersQuery {
    /// Only users whose name starts with this.
    prefix: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Lists users by name, a page at a time.
#[utoipa::path(get, path = "/v1/users", tag = "admin", params(ListUsersQuery),
    responses((status = 200, body = dto::UserList), (status = 403, body = super::error::Problem)), security(("bearer" = [])))]
pub async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListUsersQuery>,
) -> ApiResult<Json<dto::UserList>> {
    state.require_listing(&caller)?;
    let limit = check_limit(q.limit)?;
    let prefix = q.prefix.unwrap_or_default();
    if prefix.len() > 128 {
        return Err(ApiError::invalid("prefix is longer than 128 characters"));
    }
    let page = state
        .store
        .list_users(&prefix, limit, q.cursor.as_deref())
        .await?;
    Ok(Json(dto::UserList {
        users: page
            .users
            .into_iter()
            .map(|(u, revision)| dto::UserSummary {
                user: u.to_string(),
                revision,
            })
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// A user's grants, bindings and effective permissions.
#[utoipa::path(get, path = "/v1/users/{user}", tag = "admin", params(("user" = String, Path)),
    responses((status = 200, body = dto::UserDetail), (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Json<dto::UserDetail>> {
    let user = UserId::parse(&user)?;
    let now = state.now();
    let access = read_access(&state.index(), caller.user.as_str(), user.as_str(), now);
    if access == ReadAccess::Denied {
        return Err(needs("permsync:admin, permsync:audit or permsync:delegate"));
    }
    state.require_existing_user(&user)?;
    let index = state.index();
    let shown = |scope: Option<&Scope>| access.shows(&index, caller.user.as_str(), scope, now);
    let mut snapshot = index.snapshot(&user, now);
    snapshot.permissions.retain(|p| shown(p.scope.as_ref()));
    let grants: Vec<_> = (index.grants(user.as_str()).iter())
        .filter(|g| shown(g.scope.as_ref()))
        .cloned()
        .collect();
    let bindings: Vec<_> = (index.bindings(user.as_str()).iter())
        .filter(|b| shown(b.scope.as_ref()))
        .cloned()
        .collect();
    Ok(Json(dto::UserDetail::new(&snapshot, &grants, &bindings)))
}

/// Deletes a user and everything they hold; ends their sessions.
#[utoipa::path(delete, path = "/v1/users/{user}", tag = "admin", params(("user" = String, Path)),
    responses((status = 200, body = dto::Seq), (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn delete_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Json<dto::Seq>> {
    state.require_any(&caller, &[builtin::ADMIN])?;
    let user = UserId::parse(&user)?;
    let changes = state
        .store
        .delete_user(caller.user.as_str(), &user, state.now())
        .await?;
    state.catch_up().await?;
    let seq = changes.iter().map(|c| c.seq).max().unwrap_or_default();
    Ok(Json(dto::Seq { seq }))
}

/// Grants a permission directly, optionally at a scope and until a time.
#[utoipa::path(post, path = "/v1/users/{user}/grants", tag = "admin", params(("user" = String, Path)), request_body = dto::NewGrant,
    responses((status = 201, body = dto::GrantCreated), (status = 200, body = dto::GrantCreated, description = "The same active grant existed"),
        (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn add_grant(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
    ApiJson(req): ApiJson<dto::NewGrant>,
) -> ApiResult<(StatusCode, Json<dto::GrantCreated>)> {
    let user = UserId::parse(&user)?;
    let permission = Permission::parse(&req.permission)?;
    let scope = parse_optional_scope(req.scope.as_deref())?;
    let now = state.now();
    let expires_at = parse_expiry(req.expires_at.as_deref(), now)?;
    state.require_delegation(
        &caller,
        &user,
        AdminAction::Grant {
            permission: &permission,
            scope: scope.as_ref(),
        },
    )?;
    state.require_existing_user(&user)?;
    let added = state
        .store
        .add_grant(
            caller.user.as_str(),
            NewGrant {
                user: user.clone(),
                permission,
                scope,
                expires_at,
            },
            now,
        )
        .await?;
    let (status, grant, seq) = match added {
        Added::Created(g, change) => {
            state.catch_up().await?;
            (StatusCode::CREATED, g, change.seq)
        }
        Added::Existing(g) => (StatusCode::OK, g.clone(), g.id),
    };
    let revision = state.revision(user.as_str());
    Ok((
        status,
        Json(dto::GrantCreated {
            grant: dto::Grant::from(&grant),
            seq,
            revision,
        }),
    ))
}

/// Removes a direct grant.
#[utoipa::path(delete, path = "/v1/users/{user}/grants/{id}", tag = "admin", params(("user" = String, Path), ("id" = u64, Path)),
    responses((status = 200, body = dto::Removed), (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn remove_grant(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((user, id)): ApiPath<(String, u64)>,
) -> ApiResult<Json<dto::Removed>> {
    let user = UserId::parse(&user)?;
    let grant = state
        .index()
        .grants(user.as_str())
        .iter()
        .find(|g| g.id == id)
        .cloned();
    let Some(grant) = grant else {
        return Err(ApiError::not_found(format!(
            "grant {id} of user {user} not found"
        )));
    };
    state.require_delegation(
        &caller,
        &user,
        AdminAction::Grant {
            permission: &grant.permission,
            scope: grant.scope.as_ref(),
        },
    )?;
    let change = state
        .store
        .remove_grant(caller.user.as_str(), &user, id, state.now())
        .await?;
    state.catch_up().await?;
    Ok(Json(dto::Removed {
        seq: change.seq,
        revision: state.revision(user.as_str()),
    }))
}

/// Binds a user to a role, optionally at a scope and until a time.
#[utoipa::path(post, path = "/v1/users/{user}/roles", tag = "admin", params(("user" = String, Path)), request_body = dto::NewBinding,
    responses((status = 201, body = dto::BindingCreated), (status = 200, body = dto::BindingCreated, description = "The same active binding existed"),
        (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn add_binding(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
    ApiJson(req): ApiJson<dto::NewBinding>,
) -> ApiResult<(StatusCode, Json<dto::BindingCreated>)> {
    let user = UserId::parse(&user)?;
    let role = RoleName::parse(&req.role)?;
    let scope = parse_optional_scope(req.scope.as_deref())?;
    let now = state.now();
    let expires_at = parse_expiry(req.expires_at.as_deref(), now)?;
    if !state.index().role_exists(role.as_str()) {
        return Err(ApiError::not_found(format!("role {role} not found")));
    }
    state.require_delegation(
        &caller,
        &user,
        AdminAction::Bind {
            role: &role,
            scope: scope.as_ref(),
        },
    )?;
    state.require_existing_user(&user)?;
    let added = state
        .store
        .add_binding(
            caller.user.as_str(),
            NewBinding {
                user: user.clone(),
                role,
                scope,
                expires_at,
            },
            now,
        )
        .await?;
    let (status, binding, seq) = match added {
        Added::Created(b, change) => {
            state.catch_up().await?;
            (StatusCode::CREATED, b, change.seq)
        }
        Added::Existing(b) => (StatusCode::OK, b.clone(), b.id),
    };
    let revision = state.revision(user.as_str());
    Ok((
        status,
        Json(dto::BindingCreated {
            binding: dto::Binding::from(&binding),
            seq,
            revision,
        }),
    ))
}

/// Removes a role binding.
#[utoipa::path(delete, path = "/v1/users/{user}/roles/{id}", tag = "admin", params(("user" = String, Path), ("id" = u64, Path)),
    responses((status = 200, body = dto::Removed), (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn remove_binding(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((user, id)): ApiPath<(String, u64)>,
) -> ApiResult<Json<dto::Removed>> {
    let user = UserId::parse(&user)?;
    let binding = state
        .index()
        .bindings(user.as_str())
        .iter()
        .find(|b| b.id == id)
        .cloned();
    let Some(binding) = binding else {
        return Err(ApiError::not_found(format!(
            "binding {id} of user {user} not found"
        )));
    };
    state.require_delegation(
        &caller,
        &user,
        AdminAction::Bind {
            role: &binding.role,
            scope: binding.scope.as_ref(),
        },
    )?;
    let change = state
        .store
        .remove_binding(caller.user.as_str(), &user, id, state.now())
        .await?;
    state.catch_up().await?;
    Ok(Json(dto::Removed {
        seq: change.seq,
        revision: state.revision(user.as_str()),
    }))
}

/// Ends every session of a user (admins, or the user themselves).
#[utoipa::path(post, path = "/v1/users/{user}/sessions/revoke", tag = "admin", params(("user" = String, Path)),
    responses((status = 200, body = dto::SessionsRevoked), (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem)), security(("bearer" = [])))]
pub async fn revoke_sessions(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Json<dto::SessionsRevoked>> {
    let user = UserId::parse(&user)?;
    if user != caller.user {
        state.require_any(&caller, &[builtin::ADMIN])?;
    }
    state.require_existing_user(&user)?;
    let change = state
        .store
        .revoke_sessions(caller.user.as_str(), &user, state.now())
        .await?;
    if change.is_some() {
        state.catch_up().await?;
    }
    Ok(Json(dto::SessionsRevoked {
        seq: change.map(|c| c.seq),
    }))
}

/// Every role with its permissions and member count.
#[utoipa::path(get, path = "/v1/roles", tag = "admin", responses((status = 200, body = dto::RoleList), (status = 403, body = super::error::Problem)), security(("bearer" = [])))]
pub async fn list_roles(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<dto::RoleList>> {
    state.require_listing(&caller)?;
    let roles = state
        .index()
        .roles()
        .into_iter()
        .map(|r| dto::Role {
            role: r.role.to_string(),
            description: r.description,
            permissions: r.permissions.iter().map(|p| p.to_string()).collect(),
            members: r.members,
        })
        .collect();
    Ok(Json(dto::RoleList { roles }))
}

/// Creates or replaces a role; every bound user's revision increases.
#[utoipa::path(put, path = "/v1/roles/{role}", tag = "admin", params(("role" = String, Path)), request_body = dto::PutRole,
    responses((status = 201, body = dto::RoleSaved), (status = 200, body = dto::RoleSaved), (status = 403, body = super::error::Problem)), security(("bearer" = [])))]
pub async fn put_role(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(role): ApiPath<String>,
    ApiJson(req): ApiJson<dto::PutRole>,
) -> ApiResult<(StatusCode, Json<dto::RoleSaved>)> {
    state.require_any(&caller, &[builtin::ADMIN])?;
    let role = RoleName::parse(&role)?;
    if req.permissions.len() > MAX_ROLE_PERMISSIONS {
        return Err(ApiError::invalid(format!(
            "a role holds at most {MAX_ROLE_PERMISSIONS} permissions"
        )));
    }
    let description = req.description.unwrap_or_default();
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(ApiError::invalid(format!(
            "description is longer than {MAX_DESCRIPTION} characters"
        )));
    }
    let mut permissions = req
        .permissions
        .iter()
        .map(|p| Permission::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = BTreeSet::new();
    permissions.retain(|p| seen.insert(p.clone()));
    let (change, created) = state
        .store
        .set_role(
            caller.user.as_str(),
            &role,
            &permissions,
            &description,
            state.now(),
        )
        .await?;
    state.catch_up().await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(dto::RoleSaved {
            role: role.to_string(),
            seq: change.seq,
        }),
    ))
}

/// Deletes a role and its bindings; bound users' revisions increase.
#[utoipa::path(delete, path = "/v1/roles/{role}", tag = "admin", params(("role" = String, Path)),
    responses((status = 200, body = dto::Seq), (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem)), security(("bearer" = [])))]
pub async fn delete_role(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(role): ApiPath<String>,
) -> ApiResult<Json<dto::Seq>> {
    state.require_any(&caller, &[builtin::ADMIN])?;
    let role = RoleName::parse(&role)?;
    let change = state
        .store
        .delete_role(caller.user.as_str(), &role, state.now())
        .await?;
    state.catch_up().await?;
    Ok(Json(dto::Seq { seq: change.seq }))
}

/// Raises and pushes the listed users' revisions without changing permsync's own
/// data, for apps that keep permissions in their own database.
#[utoipa::path(post, path = "/v1/invalidate", tag = "admin", request_body = dto::InvalidateRequest,
    responses((status = 200, body = dto::Invalidated), (status = 403, body = super::error::Problem)), security(("bearer" = [])))]
pub async fn invalidate(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<dto::InvalidateRequest>,
) -> ApiResult<Json<dto::Invalidated>> {
    state.require_any(&caller, &[builtin::ADMIN, builtin::INVALIDATE])?;
    if req.users.is_empty() || req.users.len() > MAX_INVALIDATE {
        return Err(ApiError::invalid(format!(
            "users lists 1 to {MAX_INVALIDATE} users"
        )));
    }
    if req
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_DESCRIPTION)
    {
        return Err(ApiError::invalid(format!(
            "reason is longer than {MAX_DESCRIPTION} characters"
        )));
    }
    let users: BTreeSet<UserId> = req
        .users
        .iter()
        .map(|u| UserId::parse(u))
        .collect::<Result<_, _>>()?;
    let users: Vec<UserId> = users.into_iter().collect();
    let change = state
        .store
        .invalidate(
            caller.user.as_str(),
            &users,
            req.reason.as_deref(),
            state.now(),
        )
        .await?;
    state.catch_up().await?;
    let index = state.index();
    let revisions: BTreeMap<String, u64> = users
        .iter()
        .map(|u| (u.to_string(), index.revision(u.as_str())))
        .collect();
    Ok(Json(dto::Invalidated {
        seq: change.seq,
        revisions,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ChangesQuery {
    /// Only changes with a larger `seq` (default 0).
    after: Option<u64>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
}

/// The audit log: committed changes in `seq` order.
#[utoipa::path(get, path = "/v1/changes", tag = "admin", params(ChangesQuery),
    responses((status = 200, body = dto::ChangeList), (status = 403, body = super::error::Problem)), security(("bearer" = [])))]
pub async fn list_changes(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ChangesQuery>,
) -> ApiResult<Json<dto::ChangeList>> {
    state.require_any(&caller, &[builtin::ADMIN, builtin::AUDIT])?;
    let limit = check_limit(q.limit)?;
    let after = q.after.unwrap_or(0);
    let changes = state.store.changes_after(after, limit).await?;
    let next_after = changes.last().map_or(after, |c| c.seq);
    Ok(Json(dto::ChangeList {
        changes: changes.iter().map(dto::ChangeRecord::from).collect(),
        next_after,
    }))
}
