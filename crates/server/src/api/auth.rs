//! Built-in identity: login, refresh with rotation and reuse detection (and a
//! grace window for tabs refreshing together), logout.

use std::time::Instant;

use axum::extract::State;
use axum::http::{header, Extensions, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use permsync_auth::{random_token, sha256_hex, AccessClaims};
use permsync_core::{SessionEnd, UserId};
use permsync_store::{NewSession, RefreshOutcome, Rotation};

use super::dto::{LoginRequest, RefreshRequest, TokenPair};
use super::error::{ApiError, ApiResult, Code};
use super::extract::{client_ip, ApiJson};
use crate::state::AppState;

impl AppState {
    /// Signs an access token for `user` in session `sid`, carrying the user's
    /// current revision as `prev`.
    pub fn issue_access_token(&self, user: &UserId, sid: &str) -> String {
        let now = self.now();
        let index = self.index();
        let perms = self.config.embed_permissions.then(|| {
            index
                .snapshot(user, now)
                .permissions
                .iter()
                .map(|p| match &p.scope {
                    Some(s) => format!("{}@{}", p.permission, s),
                    None => p.permission.to_string(),
                })
                .collect()
        });
        let iat = now.0 / 1000;
        self.tokens.sign(&AccessClaims {
            iss: self.config.issuer.clone(),
            sub: user.to_string(),
            aud: self.config.audience.clone(),
            iat,
            exp: iat + self.config.access_token_ttl.as_secs() as i64,
            jti: random_token(),
            sid: sid.to_string(),
            prev: index.revision(user.as_str()),
            perms,
        })
    }

    fn token_pair(&self, user: &UserId, sid: &str, refresh_token: String) -> TokenPair {
        TokenPair {
            access_token: self.issue_access_token(user, sid),
            token_type: "Bearer",
            expires_in: self.config.access_token_ttl.as_secs(),
            refresh_token,
        }
    }
}

fn bad_credentials() -> ApiError {
    ApiError::new(Code::InvalidRequest, "invalid username or password")
        .with_status(StatusCode::UNAUTHORIZED)
}

/// An answer carrying tokens: no cache may keep it (RFC 6749 §5.1).
type Tokens = ([(HeaderName, &'static str); 2], axum::Json<TokenPair>);

fn uncached(pair: TokenPair) -> Tokens {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        axum::Json(pair),
    )
}

/// Exchanges a username and password for an access token and a refresh token.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenPair), (status = 401, body = super::error::Problem),
        (status = 429, body = super::error::Problem), (status = 503, body = super::error::Problem)))]
pub async fn login(
    State(state): State<AppState>,
    ext: Extensions,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Tokens> {
    let ip = client_ip(&ext).to_string();
    let user_key = format!(
        "user:{}",
        req.username.chars().take(128).collect::<String>()
    );
    let keys = [user_key.as_str(), ip.as_str()];
    // Counted as a failure before the hash runs, so guesses made at the same
    // moment cannot all get past the limit.
    let attempt = state
        .limits
        .begin_login(&keys)
        .map_err(ApiError::rate_limited)?;
    let user = UserId::parse(&req.username).ok();
    let hash = match &user {
        Some(u) => state.store.password_hash(u).await?,
        None => None,
    };
    let password = req.password;
    // Argon2 is deliberately slow: keep it off the async workers, a bounded number
    // at a time. Unknown users go through a dummy verification, so both failures
    // take similar time.
    let ok = match state
        .hashing
        .run(move |memory| permsync_auth::verify_password_in(hash.as_deref(), &password, memory))
        .await
    {
        Ok(ok) => ok,
        Err(busy) => {
            attempt.not_checked();
            return Err(busy);
        }
    };
    let Some(user) = user.filter(|_| ok) else {
        return Err(bad_credentials());
    };
    attempt.succeeded(&user_key);
    let sid = random_token();
    let refresh = random_token();
    let now = state.now();
    let asked_at = Instant::now();
    state
        .store
        .create_session(
            NewSession {
                id: sid.clone(),
                user: user.clone(),
                refresh_hash: sha256_hex(&refresh),
                refresh_expires_at: now
                    .plus_millis(state.config.refresh_token_ttl.as_millis() as i64),
            },
            now,
        )
        .await?;
    state.session_opened(&sid, &user, asked_at);
    Ok(uncached(state.token_pair(&user, &sid, refresh)))
}

/// Rotates a refresh token: the old one stops working. Presenting a rotated one
/// again revokes the whole session, unless it comes within the grace window of
/// its rotation (tabs refreshing together), which gets the same new refresh token.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenPair), (status = 401, body = super::error::Problem)))]
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult<Tokens> {
    let now = state.now();
    let next = random_token();
    let sealed = permsync_auth::seal_successor(&req.refresh_token, &next);
    let asked_at = Instant::now();
    let outcome = state
        .store
        .rotate_refresh(
            Rotation {
                old_hash: &sha256_hex(&req.refresh_token),
                new_hash: &sha256_hex(&next),
                new_expires_at: now.plus_millis(state.config.refresh_token_ttl.as_millis() as i64),
                successor_sealed: &sealed,
                reuse_grace: state.config.refresh_reuse_grace,
            },
            now,
        )
        .await?;
    match outcome {
        RefreshOutcome::Rotated { session, user } => {
            state.session_opened(&session, &user, asked_at);
            Ok(uncached(state.token_pair(&user, &session, next)))
        }
        RefreshOutcome::Raced {
            session,
            user,
            successor_sealed,
        } => {
            // Only the holder of the presented token can open it; it was sealed
            // for exactly that token, so failing to open means a damaged row.
            let successor = permsync_auth::open_successor(&req.refresh_token, &successor_sealed)
                .ok_or_else(|| ApiError::internal("a sealed refresh successor did not open"))?;
            state.session_opened(&session, &user, asked_at);
            Ok(uncached(state.token_pair(&user, &session, successor)))
        }
        RefreshOutcome::Reused { .. } => {
            state.catch_up().await?;
            Err(ApiError::token(
                "refresh token reused; the session is revoked",
            ))
        }
        RefreshOutcome::Invalid => Err(ApiError::token("unknown or expired refresh token")),
    }
}

/// Ends the session of a refresh token; its open event streams are told and closed.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204, description = "The session is over (also when it already was)")))]
pub async fn logout(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult<Response> {
    let ended = state
        .store
        .end_session_by_refresh(
            &sha256_hex(&req.refresh_token),
            SessionEnd::LoggedOut,
            state.now(),
        )
        .await?;
    if ended.is_some() {
        state.catch_up().await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
