//! The two failure types at this crate's boundary: bad configuration and rejected tokens.

use std::fmt;

/// Configuration that cannot work, found while building [`crate::Tokens`].
///
/// These are operator mistakes (a wrong PEM file, a short secret, no signing key), so
/// the messages name the offending issuer and say what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Every own key is retired (or none was given), so nothing could sign.
    #[error("no active signing key: at least one own key must not be retired")]
    NoActiveKey,
    /// An own key's bytes do not form an Ed25519 key pair.
    #[error("own signing key {kid:?} is not a valid Ed25519 PKCS#8 key pair: {reason}")]
    InvalidOwnKey { kid: String, reason: String },
    /// Two own keys share a `kid`, so tokens could not name their key unambiguously.
    #[error("own signing key id {0:?} appears more than once")]
    DuplicateKid(String),
    /// An issuer's `iss` or `aud` is empty.
    #[error("issuer {iss:?}: {what} must not be empty")]
    EmptyField { iss: String, what: &'static str },
    /// Two issuers (own or external) claim the same `iss`; the token's `iss` selects
    /// the verifying issuer, so it has to be unique.
    #[error("issuer {0:?} is configured more than once (own issuer included)")]
    DuplicateIssuer(String),
    /// An HS256 secret shorter than the 256-bit minimum of RFC 7518 §3.2.
    #[error("issuer {iss:?}: HS256 secret must be at least 32 bytes, got {len}")]
    WeakSecret { iss: String, len: usize },
    /// A PEM that is not a usable public key.
    #[error("issuer {iss:?}: {reason}")]
    InvalidPem { iss: String, reason: String },
    /// A JWKS URL that cannot be fetched from.
    #[error("issuer {iss:?}: invalid JWKS URL {url:?}: {reason}")]
    InvalidJwksUrl {
        iss: String,
        url: String,
        reason: String,
    },
    /// The HTTP client for JWKS fetching could not be built.
    #[error("cannot build the JWKS HTTP client: {0}")]
    HttpClient(String),
}

/// Why a token was rejected, for logs, metrics and tests.
///
/// Every kind maps to 401 `invalid_token` under PROTOCOL §3; the server may still
/// choose to treat [`TokenErrorKind::KeysUnavailable`] differently in its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenErrorKind {
    /// Longer than [`crate::MAX_TOKEN_BYTES`]; not parsed at all.
    TooLarge,
    /// Not three base64url segments of a JSON header and a JSON object payload.
    Malformed,
    /// `alg` is `none` (any case), missing, or not an algorithm permsync implements.
    UnsupportedAlgorithm,
    /// The header carries `crit`: extensions we do not implement must not be ignored
    /// (RFC 7515 §4.1.11).
    UnsupportedHeader,
    /// `alg` is real but not one the selected key may be used with.
    AlgorithmNotAllowed,
    /// The payload's `iss` is missing or names no configured issuer.
    UnknownIssuer,
    /// No key with the token's `kid` (or the token has none where one is needed).
    UnknownKey,
    /// The issuer's JWKS has never been fetched successfully, so no key is known.
    KeysUnavailable,
    /// The signature does not verify.
    BadSignature,
    /// No numeric `exp`.
    MissingExp,
    /// `exp` is more than the leeway in the past.
    Expired,
    /// `nbf` is more than the leeway in the future.
    NotYetValid,
    /// `iss` is not exactly the selected issuer's.
    WrongIssuer,
    /// `aud` does not contain the selected issuer's audience.
    WrongAudience,
    /// No non-empty string `sub`.
    MissingSubject,
    /// A claim permsync's own tokens always carry (`sid`, `prev`) is missing or mistyped,
    /// or a standard claim has the wrong type.
    BadClaim,
}

impl TokenErrorKind {
    /// The public, RFC 6750-safe description: short, ASCII, no quotes, no internals.
    pub fn description(self) -> &'static str {
        match self {
            TokenErrorKind::TooLarge => "token too large",
            TokenErrorKind::Malformed => "malformed token",
            TokenErrorKind::UnsupportedAlgorithm => "unsupported algorithm",
            TokenErrorKind::UnsupportedHeader => "unsupported token header",
            TokenErrorKind::AlgorithmNotAllowed => "algorithm not allowed",
            TokenErrorKind::UnknownIssuer => "untrusted issuer",
            TokenErrorKind::UnknownKey => "unknown key id",
            TokenErrorKind::KeysUnavailable => "issuer keys unavailable",
            TokenErrorKind::BadSignature => "invalid signature",
            TokenErrorKind::MissingExp => "token has no exp",
            TokenErrorKind::Expired => "token expired",
            TokenErrorKind::NotYetValid => "token not yet valid",
            TokenErrorKind::WrongIssuer => "wrong issuer",
            TokenErrorKind::WrongAudience => "wrong audience",
            TokenErrorKind::MissingSubject => "token has no sub",
            TokenErrorKind::BadClaim => "invalid claims",
        }
    }
}

/// A rejected token. `description` goes verbatim into `WWW-Authenticate:
/// Bearer error="invalid_token", error_description="…"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    /// Short, public text; never contains quotes, key material or parser output.
    pub description: String,
    /// The machine-readable reason.
    pub kind: TokenErrorKind,
}

impl From<TokenErrorKind> for TokenError {
    fn from(kind: TokenErrorKind) -> Self {
        TokenError {
            description: kind.description().to_owned(),
            kind,
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

impl std::error::Error for TokenError {}
