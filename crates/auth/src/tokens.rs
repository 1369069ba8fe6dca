//! Signing permsync's own access tokens and verifying every bearer token it is shown.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ring::signature::Ed25519KeyPair;
use serde_json::{Map, Value};

use crate::claims::{AccessClaims, Verified};
use crate::error::{ConfigError, TokenError, TokenErrorKind};
use crate::issuer::{ExternalIssuer, Issuer, IssuerKeys, VerifyKey, EDDSA_ALGS};
use crate::keys::{ed25519_public_jwk, load_key_pair, KeyMaterial};

/// Tokens longer than this are refused before any parsing (PROTOCOL §3).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Tolerated clock difference for `exp` and `nbf`, in seconds (PROTOCOL §3).
pub const CLOCK_LEEWAY_SECS: i64 = 30;

/// Minimum time between two fetches of one issuer's JWKS triggered by unknown `kid`s.
pub const JWKS_REFETCH_INTERVAL_SECS: i64 = 30;

/// Whole-request timeout of a JWKS fetch: a slow provider delays the first requests
/// with a new `kid`, never all of them indefinitely.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// permsync's own keys, swapped whole on rotation.
struct OwnKeys {
    signer_kid: String,
    signer: Ed25519KeyPair,
    /// Pre-encoded header of every token the signer makes.
    signer_header_b64: String,
    verifiers: HashMap<String, Arc<VerifyKey>>,
    jwks: Value,
}

impl OwnKeys {
    fn new(keys: &[KeyMaterial]) -> Result<Self, ConfigError> {
        let mut verifiers = HashMap::new();
        let mut published = Vec::new();
        let mut signer = None;
        for key in keys {
            let pair = load_key_pair(key).map_err(|reason| ConfigError::InvalidOwnKey {
                kid: key.kid.clone(),
                reason,
            })?;
            let verify_key = VerifyKey {
                key: DecodingKey::from_ed_der(&key.public),
                algs: EDDSA_ALGS,
            };
            if verifiers
                .insert(key.kid.clone(), Arc::new(verify_key))
                .is_some()
            {
                return Err(ConfigError::DuplicateKid(key.kid.clone()));
            }
            published.push(ed25519_public_jwk(&key.kid, &key.public));
            if !key.retired {
                // The list runs oldest to newest, so the last active key wins.
                signer = Some((key.kid.clone(), pair));
            }
        }
        let (signer_kid, signer) = signer.ok_or(ConfigError::NoActiveKey)?;
        let header = serde_json::json!({ "alg": "EdDSA", "typ": "JWT", "kid": signer_kid });
        Ok(OwnKeys {
            signer_header_b64: URL_SAFE_NO_PAD.encode(header.to_string()),
            signer_kid,
            signer,
            verifiers,
            jwks: serde_json::json!({ "keys": published }),
        })
    }
}

/// Signs permsync's own access tokens and verifies bearer tokens from permsync or any
/// configured external issuer.
///
/// Cheap to share behind an `Arc`: verification takes `&self`, and the only mutable
/// state (JWKS caches, the own key set) sits behind internal locks.
pub struct Tokens {
    own_issuer: String,
    own_audience: String,
    own: RwLock<Arc<OwnKeys>>,
    external: HashMap<String, Issuer>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut external: Vec<&String> = self.external.keys().collect();
        external.sort();
        f.debug_struct("Tokens")
            .field("own_issuer", &self.own_issuer)
            .field("own_audience", &self.own_audience)
            .field("active_kid", &self.active_kid())
            .field("external", &external)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Builds the verifier set.
    ///
    /// `own_keys` runs oldest to newest: the **last non-retired** key signs; every key
    /// listed, retired or not, verifies and is published. `own_issuer` and
    /// `own_audience` are the `iss` and `aud` of permsync's own tokens. Every
    /// external issuer's key is parsed here, so a bad PEM, a short HS256 secret, an
    /// invalid JWKS URL or a repeated `iss` fails at start-up with a message naming
    /// the issuer. JWKS URLs are not contacted until first needed (see
    /// [`Tokens::prefetch_jwks`]).
    pub fn new(
        own_keys: Vec<KeyMaterial>,
        own_issuer: String,
        own_audience: String,
        external: Vec<ExternalIssuer>,
    ) -> Result<Self, ConfigError> {
        if own_issuer.is_empty() {
            return Err(ConfigError::EmptyField {
                iss: own_issuer,
                what: "iss",
            });
        }
        if own_audience.is_empty() {
            return Err(ConfigError::EmptyField {
                iss: own_issuer,
                what: "aud",
            });
        }
        let own = OwnKeys::new(&own_keys)?;
        // One client shared by all JWKS issuers (one connection pool); cheap to build
        // even when no issuer uses it.
        let http = reqwest::Client::builder()
            .timeout(JWKS_FETCH_TIMEOUT)
            .connect_timeout(JWKS_FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("permsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::HttpClient(e.to_string()))?;
        let mut seen = HashSet::from([own_issuer.clone()]);
        let mut issuers = HashMap::new();
        for config in &external {
            if !seen.insert(config.iss.clone()) {
                return Err(ConfigError::DuplicateIssuer(config.iss.clone()));
            }
            issuers.insert(config.iss.clone(), Issuer::from_config(config, &http)?);
        }
        Ok(Tokens {
            own_issuer,
            own_audience,
            own: RwLock::new(Arc::new(own)),
            external: issuers,
        })
    }

    /// Replaces the own key set (rotation), with the same rules as [`Tokens::new`].
    /// Tokens being verified concurrently finish with the set they started with.
    pub fn replace_own_keys(&self, own_keys: Vec<KeyMaterial>) -> Result<(), ConfigError> {
        let own = OwnKeys::new(&own_keys)?;
        *self.own.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(own);
        Ok(())
    }

    /// The `iss` of permsync's own tokens.
    pub fn own_issuer(&self) -> &str {
        &self.own_issuer
    }

    /// The `aud` of permsync's own tokens.
    pub fn own_audience(&self) -> &str {
        &self.own_audience
    }

    /// The `kid` of the key that currently signs.
    pub fn active_kid(&self) -> String {
        self.own_keys().signer_kid.clone()
    }

    /// Claims for a new own access token: own `iss` and `aud`, `iat = now`,
    /// `exp = now + ttl_secs`, a fresh random `jti`.
    pub fn access_claims(
        &self,
        sub: &str,
        sid: &str,
        prev: u64,
        now_unix_secs: i64,
        ttl_secs: i64,
        perms: Option<Vec<String>>,
    ) -> AccessClaims {
        AccessClaims {
            iss: self.own_issuer.clone(),
            sub: sub.to_owned(),
            aud: self.own_audience.clone(),
            iat: now_unix_secs,
            exp: now_unix_secs.saturating_add(ttl_secs),
            jti: crate::random_token(),
            sid: sid.to_owned(),
            prev,
            perms,
        }
    }

    /// Signs `claims` as a compact JWS with EdDSA and the active key, whose id goes in
    /// the header's `kid`. The claims are signed as given: `iss` and `aud` must be
    /// [`Tokens::own_issuer`] and [`Tokens::own_audience`] for the token to verify.
    pub fn sign(&self, claims: &AccessClaims) -> String {
        let own = self.own_keys();
        // Serializing strings, integers and a list of strings cannot fail.
        let payload = serde_json::to_vec(claims).expect("access claims serialize to JSON");
        let mut token = String::with_capacity(own.signer_header_b64.len() + payload.len() * 2);
        token.push_str(&own.signer_header_b64);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let signature = own.signer.sign(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
        token
    }

    /// The JWK Set for `/.well-known/jwks.json`: every own public key, retired ones
    /// included, so tokens signed before a rotation stay checkable by third parties.
    pub fn jwks(&self) -> Value {
        self.own_keys().jwks.clone()
    }

    /// Fetches the JWKS of every URL-configured issuer now, so the first request
    /// does not wait for it. Failures are logged and retried on demand later.
    pub async fn prefetch_jwks(&self, now_unix_secs: i64) {
        for (iss, issuer) in &self.external {
            if let IssuerKeys::Remote(remote) = &issuer.keys {
                match remote.refresh(now_unix_secs).await {
                    Ok(count) => tracing::info!(%iss, keys = count, "fetched issuer JWKS"),
                    Err(reason) => tracing::warn!(%iss, %reason, "issuer JWKS fetch failed"),
                }
            }
        }
    }

    /// Verifies a bearer token at time `now_unix_secs` (PROTOCOL §3).
    ///
    /// The unverified payload's `iss` selects the issuer (own or external); the token
    /// must then verify with that issuer's key and an algorithm that key allows, and
    /// carry that issuer's `iss`, its `aud`, a numeric `exp` not passed and an `nbf` (if
    /// any) not in the future (both with [`CLOCK_LEEWAY_SECS`]), and a non-empty `sub`.
    /// Own tokens must also carry `sid` and `prev`. Never panics on any input; only a
    /// JWKS-backed issuer with an unknown `kid` awaits network I/O.
    pub async fn verify(&self, token: &str, now_unix_secs: i64) -> Result<Verified, TokenError> {
        match self.verify_inner(token, now_unix_secs).await {
            Ok(verified) => Ok(verified),
            Err(kind) => {
                tracing::debug!(reason = ?kind, "bearer token rejected");
                Err(kind.into())
            }
        }
    }

    async fn verify_inner(&self, token: &str, now: i64) -> Result<Verified, TokenErrorKind> {
        let unverified = crate::jwt::parse_unverified(token)?;
        let Some(Value::String(iss)) = unverified.payload.get("iss") else {
            return Err(TokenErrorKind::UnknownIssuer);
        };
        let alg = unverified.alg;

        if *iss == self.own_issuer {
            if alg != Algorithm::EdDSA {
                return Err(TokenErrorKind::AlgorithmNotAllowed);
            }
            let own = self.own_keys();
            let kid = unverified
                .kid
                .as_deref()
                .ok_or(TokenErrorKind::UnknownKey)?;
            let key = own.verifiers.get(kid).ok_or(TokenErrorKind::UnknownKey)?;
            let claims = verify_signature_and_claims(
                token,
                key,
                alg,
                &self.own_issuer,
                &self.own_audience,
                now,
            )?;
            let mut verified = verified_from(&self.own_issuer, &claims, true)?;
            verified.sid = Some(
                claims
                    .get("sid")
                    .and_then(Value::as_str)
                    .ok_or(TokenErrorKind::BadClaim)?
                    .to_owned(),
            );
            verified.prev = Some(
                claims
                    .get("prev")
                    .and_then(Value::as_u64)
                    .ok_or(TokenErrorKind::BadClaim)?,
            );
            return Ok(verified);
        }

        let issuer = self
            .external
            .get(iss)
            .ok_or(TokenErrorKind::UnknownIssuer)?;
        let fetched: Arc<VerifyKey>;
        let key = match &issuer.keys {
            // A single configured key: `kid` has nothing to choose, so it is ignored.
            IssuerKeys::Static(key) => key,
            IssuerKeys::Remote(remote) => {
                let kid = unverified
                    .kid
                    .as_deref()
                    .ok_or(TokenErrorKind::UnknownKey)?;
                fetched = remote.key(kid, alg, now).await?;
                &*fetched
            }
        };
        let claims = verify_signature_and_claims(token, key, alg, iss, &issuer.aud, now)?;
        verified_from(iss, &claims, false)
    }

    fn own_keys(&self) -> Arc<OwnKeys> {
        Arc::clone(&self.own.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Checks the signature with `key` (whose allow-list must contain `alg`), then the
/// registered claims against `now`. Returns the verified claims.
fn verify_signature_and_claims(
    token: &str,
    key: &VerifyKey,
    alg: Algorithm,
    iss: &str,
    aud: &str,
    now: i64,
) -> Result<Map<String, Value>, TokenErrorKind> {
    if !key.algs.contains(&alg) {
        return Err(TokenErrorKind::AlgorithmNotAllowed);
    }
    // `jsonwebtoken` checks the signature, the key family and the presence of the
    // registered claims. Its time checks read the system clock, so they are off and
    // done below against the caller's `now`.
    let mut validation = Validation::new(alg);
    validation.leeway = CLOCK_LEEWAY_SECS.unsigned_abs();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.set_issuer(&[iss]);
    validation.set_audience(&[aud]);
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
        .map_err(|e| map_jwt_error(e.kind()))?
        .claims;

    // Stricter than `jsonwebtoken`, which also accepts `iss` as an array.
    if claims.get("iss").and_then(Value::as_str) != Some(iss) {
        return Err(TokenErrorKind::WrongIssuer);
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(value)) => value == aud,
        Some(Value::Array(values)) => values.iter().any(|value| value.as_str() == Some(aud)),
        _ => false,
    };
    if !audience_ok {
        return Err(TokenErrorKind::WrongAudience);
    }
    let exp = claims
        .get("exp")
        .and_then(numeric_date)
        .ok_or(TokenErrorKind::MissingExp)?;
    if now > exp.saturating_add(CLOCK_LEEWAY_SECS) {
        return Err(TokenErrorKind::Expired);
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = numeric_date(nbf).ok_or(TokenErrorKind::BadClaim)?;
        if nbf > now.saturating_add(CLOCK_LEEWAY_SECS) {
            return Err(TokenErrorKind::NotYetValid);
        }
    }
    match claims.get("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => {}
        _ => return Err(TokenErrorKind::MissingSubject),
    }
    Ok(claims)
}

/// The fields common to own and external tokens, from already verified claims.
fn verified_from(
    iss: &str,
    claims: &Map<String, Value>,
    own: bool,
) -> Result<Verified, TokenErrorKind> {
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or(TokenErrorKind::MissingSubject)?;
    let exp = claims
        .get("exp")
        .and_then(numeric_date)
        .ok_or(TokenErrorKind::MissingExp)?;
    let iat = match claims.get("iat") {
        None => None,
        Some(value) => Some(numeric_date(value).ok_or(TokenErrorKind::BadClaim)?),
    };
    let jti = match claims.get("jti") {
        None => None,
        Some(Value::String(jti)) => Some(jti.clone()),
        Some(_) => return Err(TokenErrorKind::BadClaim),
    };
    Ok(Verified {
        iss: iss.to_owned(),
        sub: sub.to_owned(),
        sid: None,
        prev: None,
        exp,
        iat,
        jti,
        own,
    })
}

/// A JSON number as whole Unix seconds (RFC 7519 NumericDate allows fractions;
/// they are truncated, and out-of-range values saturate).
fn numeric_date(value: &Value) -> Option<i64> {
    if let Some(int) = value.as_i64() {
        return Some(int);
    }
    if value.as_u64().is_some() {
        return Some(i64::MAX);
    }
    value.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)
}

fn map_jwt_error(kind: &JwtErrorKind) -> TokenErrorKind {
    match kind {
        JwtErrorKind::InvalidSignature
        | JwtErrorKind::InvalidEcdsaKey
        | JwtErrorKind::InvalidRsaKey(_)
        | JwtErrorKind::InvalidKeyFormat => TokenErrorKind::BadSignature,
        JwtErrorKind::InvalidAlgorithm
        | JwtErrorKind::InvalidAlgorithmName
        | JwtErrorKind::MissingAlgorithm => TokenErrorKind::AlgorithmNotAllowed,
        JwtErrorKind::InvalidIssuer => TokenErrorKind::WrongIssuer,
        JwtErrorKind::InvalidAudience => TokenErrorKind::WrongAudience,
        JwtErrorKind::InvalidSubject => TokenErrorKind::MissingSubject,
        JwtErrorKind::ExpiredSignature => TokenErrorKind::Expired,
        JwtErrorKind::ImmatureSignature => TokenErrorKind::NotYetValid,
        JwtErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => TokenErrorKind::MissingExp,
            "sub" => TokenErrorKind::MissingSubject,
            "iss" => TokenErrorKind::WrongIssuer,
            "aud" => TokenErrorKind::WrongAudience,
            _ => TokenErrorKind::BadClaim,
        },
        _ => TokenErrorKind::Malformed,
    }
}
