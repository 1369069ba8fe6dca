//! Extractors whose rejections speak problem+json, and the authenticated caller.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use bytes::Bytes;
use futures_util::future::{Either, FutureExt};
use permsync_core::UserId;
use serde::de::DeserializeOwned;

use super::error::{ApiError, Code};
use crate::config::StaleTokens;
use crate::sessions::Known;
use crate::state::AppState;

/// `axum::Json`, with rejections as problem+json.
///
/// Takes a shorter way for the usual request, `Content-Type: application/json`
/// and a body that deserializes: no media type parsing, and plain `serde_json`
/// rather than axum's path-tracking deserializer. Anything else goes axum's way,
/// so every rejection is axum's, word for word.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    // Not an `async fn`: the future returned holds only what its way needs, not the
    // request besides, and so keeps every handler's future (allocated per request)
    // smaller.
    fn from_request(
        req: Request,
        state: &S,
    ) -> impl Future<Output = Result<Self, ApiError>> + Send {
        let plain_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes() == b"application/json");
        if !plain_json {
            // Boxed: the rare way, with the larger future.
            return Either::Left(
                Box::pin(axum::Json::<T>::from_request(req, state))
                    .map(|r| r.map(|axum::Json(v)| ApiJson(v)).map_err(json_rejection)),
            );
        }
        // A combinator rather than an `async` block, which would hold the body's
        // future twice.
        Either::Right(Bytes::from_request(req, state).map(|body| {
            let bytes = body.map_err(|e| json_rejection(JsonRejection::from(e)))?;
            match serde_json::from_slice(&bytes) {
                Ok(v) => Ok(ApiJson(v)),
                // The same input fails the same way there, with axum's message.
                Err(_) => match axum::Json::<T>::from_bytes(&bytes) {
                    Ok(axum::Json(v)) => Ok(ApiJson(v)),
                    Err(rejection) => Err(json_rejection(rejection)),
                },
            }
        }))
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    let status = r.status();
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(Code::PayloadTooLarge, "the request body is over 64 KiB")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::invalid("expected a JSON body with Content-Type: application/json")
                .with_status(status)
        }
        _ => {
            // serde's message names the field and the problem, without internals.
            let detail = match &r {
                JsonRejection::JsonDataError(e) => format!("invalid JSON body: {}", source_text(e)),
                JsonRejection::JsonSyntaxError(e) => {
                    format!("malformed JSON body: {}", source_text(e))
                }
                _ => "unreadable request body".to_string(),
            };
            ApiError::invalid(detail)
        }
    }
}

fn source_text(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        msg = s.to_string();
        cur = s.source();
    }
    msg.chars().take(300).collect()
}

/// `axum::extract::Path`, with rejections as problem+json.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(ApiError::invalid(
                format!("bad path parameter: {}", e.body_text()),
            )),
            Err(e) => Err(ApiError::invalid(e.body_text())),
        }
    }
}

/// `axum::extract::Query`, with rejections as problem+json.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(ApiError::invalid(
                format!("bad query string: {}", source_text(&e)),
            )),
            Err(e) => Err(ApiError::invalid(e.body_text())),
        }
    }
}

/// Filled by [`Caller`] so the response can carry the caller's revision.
#[derive(Clone, Default)]
pub struct CallerSlot(pub Arc<OnceLock<UserId>>);

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: UserId,
    pub sid: Option<String>,
    /// When the presented access token expires (Unix seconds).
    pub exp: i64,
}

/// Reads a Bearer token from the Authorization header.
pub fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::token("missing bearer token"))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::token("malformed Authorization header"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::token("expected Authorization: Bearer <token>")),
    }
}

impl AppState {
    /// Verifies an access token and applies the session and staleness rules.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, ApiError> {
        let now_secs = self.now().0 / 1000;
        let trusted = match self.verified_tokens.get(token, now_secs) {
            Some(t) => t,
            None => {
                // Boxed: a miss is rare, and the verification's future is large;
                // inline, it would make every authenticated handler's future larger.
                let v = Box::pin(self.tokens.verify(token, now_secs))
                    .await
                    .map_err(|e| ApiError::token(e.description))?;
                self.verified_tokens.insert(token, v)
            }
        };
        let v = &trusted.verified;
        let user = trusted
            .user
            .clone()
            .ok_or_else(|| ApiError::token("sub is not a valid user id"))?;
        // Only permsync's own tokens carry a session (their verification requires
        // `sid`): they count while it is live, whoever holds the signing key.
        if let Some(sid) = &v.sid {
            let live = match self.sessions.known(sid, &user) {
                Known::Live => true,
                Known::Dead => false,
                // Boxed: a miss is rare (a session opened by another process).
                Known::Unknown => Box::pin(self.session_is_live(sid, &user)).await?,
            };
            if !live {
                return Err(ApiError::token("the session has ended or does not exist"));
            }
        }
        if self.config.stale_tokens == StaleTokens::Reject {
            if let Some(prev) = v.prev {
                if prev < self.revision(user.as_str()) {
                    return Err(ApiError::new(Code::StaleToken, "permissions changed"));
                }
            }
        }
        Ok(Caller {
            user,
            sid: v.sid.clone(),
            exp: v.exp,
        })
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        let caller = state.authenticate(token).await?;
        if let Some(slot) = parts.extensions.get::<CallerSlot>() {
            let _ = slot.0.set(caller.user.clone());
        }
        Ok(caller)
    }
}

/// The client's address, as seen on the connection.
pub fn client_ip(parts_ext: &axum::http::Extensions) -> IpAddr {
    parts_ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}
