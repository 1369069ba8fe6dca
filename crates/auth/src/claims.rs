//! The claims permsync puts in its own access tokens, and what a verified token yields.

use serde::{Deserialize, Serialize};

/// The payload of an access token permsync issues (PROTOCOL §3).
///
/// [`crate::Tokens::access_claims`] fills `iss`, `aud`, `iat`, `exp` and `jti`
/// consistently; build the struct by hand only when a test needs odd values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// permsync's own issuer; must equal the `own_issuer` given to [`crate::Tokens::new`].
    pub iss: String,
    /// The user.
    pub sub: String,
    /// permsync's own audience; must equal the `own_audience` given to [`crate::Tokens::new`].
    pub aud: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
    /// The login session this token belongs to.
    pub sid: String,
    /// The user's revision when the token was issued.
    pub prev: u64,
    /// Effective permissions as `"perm"` / `"perm@scope"`, only with `--embed-permissions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perms: Option<Vec<String>>,
}

/// What the server learns from a token that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The issuer that vouched for the token (own or external).
    pub iss: String,
    /// The user.
    pub sub: String,
    /// permsync's login session; only for own tokens, because an external provider's
    /// `sid` names one of *its* sessions and must not be looked up in permsync's.
    pub sid: Option<String>,
    /// The user's revision at issue time; only for own tokens, for the same reason.
    pub prev: Option<u64>,
    /// Expiry, Unix seconds (event streams close when it passes).
    pub exp: i64,
    /// Issued at, Unix seconds, when present.
    pub iat: Option<i64>,
    /// `jti`, when present.
    pub jti: Option<String>,
    /// Whether permsync's own key signed the token.
    pub own: bool,
}
