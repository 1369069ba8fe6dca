//! permsync's token and password cryptography, with no storage and no HTTP server.
//!
//! The crate answers four questions for the server and the CLI:
//!
//! - **Which key signs permsync's own access tokens, and how are they checked?**
//!   [`KeyMaterial`] is an Ed25519 key pair the caller keeps in its database;
//!   [`Tokens`] signs with the newest non-retired one ([`Tokens::sign`]), verifies with
//!   all of them, and publishes them all at `/.well-known/jwks.json` ([`Tokens::jwks`]).
//! - **Is a bearer token from an external identity provider genuine?** Each
//!   [`ExternalIssuer`] names its required `iss` and `aud` and one kind of key: an
//!   HS256 secret, a PEM public key, or a JWKS URL fetched and cached here.
//! - **Does this password match this stored hash?** Argon2id PHC strings
//!   ([`hash_password`], [`verify_password`]).
//! - **What is a fresh unguessable opaque value?** [`random_token`] for refresh tokens,
//!   session ids, `jti` and stream tickets, and [`sha256_hex`] to store refresh tokens
//!   hashed; [`seal_successor`] keeps a rotated token's successor readable only by
//!   that token's holder (the refresh grace window).
//!
//! Design decisions worth knowing before changing anything:
//!
//! - **The issuer is chosen before anything is trusted, and only by `iss`.** The
//!   unverified payload's `iss` picks which configured issuer verifies; from then on
//!   only that issuer's keys and algorithms count. Header fields that name keys by
//!   themselves (`jku`, `x5u`, `jwk`, `x5c`) are never read, so a token cannot bring
//!   its own key.
//! - **Each key carries its own algorithm allow-list**, derived from the key type and
//!   never from the token. That is what stops the classic confusion attacks (`alg:
//!   none`, HS256 "signed" with an RSA public key as the HMAC secret).
//! - **Time is an argument.** [`Tokens::verify`] takes `now` in Unix seconds and
//!   checks `exp`/`nbf` itself with a 30 s leeway; nothing here reads the system clock
//!   for token validity, so tests and the server's expiry logic agree on one clock.
//! - **Rejections carry a short public description** ([`TokenError`]) fit for an RFC
//!   6750 `error_description`; internal detail goes to `tracing` at debug level.

mod claims;
mod error;
mod issuer;
mod jwks;
mod jwt;
mod keys;
mod opaque;
mod password;
mod successor;
mod tokens;

pub use claims::{AccessClaims, Verified};
pub use error::{ConfigError, TokenError, TokenErrorKind};
pub use issuer::{ExternalIssuer, IssuerKey};
pub use keys::{generate_ed25519, KeyMaterial};
pub use opaque::{random_token, sha256_hex};
pub use password::{
    hash_password, hash_password_in, verify_password, verify_password_in, HashMemory,
};
pub use successor::{open_successor, seal_successor};
pub use tokens::{Tokens, CLOCK_LEEWAY_SECS, JWKS_REFETCH_INTERVAL_SECS, MAX_TOKEN_BYTES};

/// The token decoding that runs before any key is chosen, for the fuzz targets in
/// `fuzz/`: every byte it reads is unverified. Not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::jwt::{parse_unverified, Unverified};
}
