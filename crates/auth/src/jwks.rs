//! Keys of an external issuer published as a JWK Set at a URL: fetching, parsing and
//! caching by `kid`.
//!
//! The cache is refreshed only when a token names a `kid` it does not hold, and then
//! at most once per [`crate::JWKS_REFETCH_INTERVAL_SECS`] per issuer, so a flood of
//! tokens with random key ids costs the identity provider one request per interval.
//! Fetches are serialized per issuer: concurrent requests for the same new `kid` wait
//! for one fetch instead of each starting their own.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use crate::error::{ConfigError, TokenErrorKind};
use crate::issuer::{VerifyKey, EDDSA_ALGS, ES256_ALGS, ES384_ALGS, RSA_ALGS};
use crate::tokens::JWKS_REFETCH_INTERVAL_SECS;

/// A JWKS document larger than this is refused; real ones are a few KiB.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Keys by `kid`. A `kid` may map to several keys (e.g. the same RSA key published
/// once for RS256 and once for PS256); the token's `alg` picks among them.
type KeyMap = HashMap<String, Vec<Arc<VerifyKey>>>;

pub(crate) struct RemoteJwks {
    url: reqwest::Url,
    http: reqwest::Client,
    /// Read on every verification; replaced whole after a successful fetch. A std
    /// lock because it is never held across an `.await`.
    keys: RwLock<Arc<KeyMap>>,
    /// Held for the duration of a fetch; holds the time (Unix seconds, the caller's
    /// clock) of the last attempt, successful or not, so a failing provider is not
    /// retried faster than a working one.
    last_fetch: tokio::sync::Mutex<Option<i64>>,
}

enum Lookup {
    Found(Arc<VerifyKey>),
    AlgorithmNotAllowed,
    Absent,
}

impl RemoteJwks {
    pub(crate) fn new(iss: &str, url: &str, http: reqwest::Client) -> Result<Self, ConfigError> {
        let invalid = |reason: &str| ConfigError::InvalidJwksUrl {
            iss: iss.to_owned(),
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
        match parsed.scheme() {
            "https" => {}
            "http" => {
                if !is_loopback(&parsed) {
                    // Allowed for in-cluster providers, but whoever can tamper with
                    // this traffic can mint tokens, so make it visible.
                    tracing::warn!(%iss, %url, "JWKS is fetched over plain HTTP");
                }
            }
            _ => return Err(invalid("scheme must be https or http")),
        }
        Ok(RemoteJwks {
            url: parsed,
            http,
            keys: RwLock::new(Arc::new(HashMap::new())),
            last_fetch: tokio::sync::Mutex::new(None),
        })
    }

    /// The key for `kid` that may verify `alg`, fetching the JWKS if `kid` is new and
    /// the last fetch is old enough.
    pub(crate) async fn key(
        &self,
        kid: &str,
        alg: Algorithm,
        now: i64,
    ) -> Result<Arc<VerifyKey>, TokenErrorKind> {
        match self.lookup(kid, alg) {
            Lookup::Found(key) => return Ok(key),
            Lookup::AlgorithmNotAllowed => return Err(TokenErrorKind::AlgorithmNotAllowed),
            Lookup::Absent => {}
        }
        let mut last_fetch = self.last_fetch.lock().await;
        // Another request may have fetched while this one waited for the lock.
        match self.lookup(kid, alg) {
            Lookup::Found(key) => return Ok(key),
            Lookup::AlgorithmNotAllowed => return Err(TokenErrorKind::AlgorithmNotAllowed),
            Lookup::Absent => {}
        }
        // A clock that went backwards (`now < last`) counts as "long enough ago", so a
        // stepped clock cannot block refreshes for long.
        let recently =
            last_fetch.is_some_and(|last| now >= last && now - last < JWKS_REFETCH_INTERVAL_SECS);
        if recently {
            return Err(self.absent_kind());
        }
        *last_fetch = Some(now);
        match self.fetch().await {
            Ok(keys) => {
                tracing::debug!(url = %self.url, kids = keys.len(), "fetched JWKS");
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
            }
            Err(reason) => {
                tracing::warn!(url = %self.url, %reason, "JWKS fetch failed; keeping the previous keys");
            }
        }
        drop(last_fetch);
        match self.lookup(kid, alg) {
            Lookup::Found(key) => Ok(key),
            Lookup::AlgorithmNotAllowed => Err(TokenErrorKind::AlgorithmNotAllowed),
            Lookup::Absent => Err(self.absent_kind()),
        }
    }

    /// Fetches the JWKS now, regardless of the refetch interval (for a warm start).
    pub(crate) async fn refresh(&self, now: i64) -> Result<usize, String> {
        let mut last_fetch = self.last_fetch.lock().await;
        *last_fetch = Some(now);
        let keys = self.fetch().await?;
        let count = keys.values().map(Vec::len).sum();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(count)
    }

    fn lookup(&self, kid: &str, alg: Algorithm) -> Lookup {
        let keys = Arc::clone(&self.keys.read().unwrap_or_else(|e| e.into_inner()));
        match keys.get(kid) {
            None => Lookup::Absent,
            Some(candidates) => candidates
                .iter()
                .find(|key| key.algs.contains(&alg))
                .map_or(Lookup::AlgorithmNotAllowed, |key| {
                    Lookup::Found(Arc::clone(key))
                }),
        }
    }

    /// With no key at all the provider has never answered usefully: say so, rather
    /// than blaming the token's `kid`.
    fn absent_kind(&self) -> TokenErrorKind {
        if self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            TokenErrorKind::KeysUnavailable
        } else {
            TokenErrorKind::UnknownKey
        }
    }

    async fn fetch(&self) -> Result<KeyMap, String> {
        let mut response = self
            .http
            .get(self.url.clone())
            .header(
                reqwest::header::ACCEPT,
                "application/json, application/jwk-set+json",
            )
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP status {}", response.status()));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
        {
            return Err("JWKS document too large".to_owned());
        }
        // Read in chunks so a lying or missing Content-Length cannot make us buffer
        // an unbounded body.
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err("JWKS document too large".to_owned());
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body)
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        // IPv6 hosts come bracketed, e.g. "[::1]".
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// Parses a JWK Set, keeping the signature keys that are usable and skipping the rest
/// (encryption keys, symmetric keys, unsupported curves, keys without `kid`), so one
/// odd key does not disable the provider's others.
pub(crate) fn parse_jwks(body: &[u8]) -> Result<KeyMap, String> {
    let document: Value =
        serde_json::from_slice(body).map_err(|_| "JWKS is not JSON".to_owned())?;
    let Some(keys) = document.get("keys").and_then(Value::as_array) else {
        return Err("JWKS has no \"keys\" array".to_owned());
    };
    let mut map = KeyMap::new();
    for jwk in keys {
        match parse_jwk(jwk) {
            Ok((kid, key)) => map.entry(kid).or_default().push(Arc::new(key)),
            Err(reason) => tracing::debug!(%reason, "skipping a JWKS key"),
        }
    }
    Ok(map)
}

fn parse_jwk(jwk: &Value) -> Result<(String, VerifyKey), String> {
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    let kid = text("kid").ok_or("no kid")?.to_owned();
    if let Some(usage) = text("use") {
        if usage != "sig" {
            return Err(format!("key {kid:?} is for {usage:?}, not signatures"));
        }
    }
    let declared_alg = text("alg");
    let field = |name: &str| text(name).ok_or_else(|| format!("key {kid:?} has no {name:?}"));
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        URL_SAFE_NO_PAD
            .decode(field(name)?)
            .map_err(|_| format!("key {kid:?}: {name:?} is not base64url"))
    };
    let (key, algs) = match text("kty") {
        Some("RSA") => {
            let (n, e) = (bytes("n")?, bytes("e")?);
            if n.is_empty() || e.is_empty() {
                return Err(format!("key {kid:?}: empty RSA parameter"));
            }
            (DecodingKey::from_rsa_raw_components(&n, &e), RSA_ALGS)
        }
        Some("EC") => {
            let (algs, coordinate_len) = match text("crv") {
                Some("P-256") => (ES256_ALGS, 32),
                Some("P-384") => (ES384_ALGS, 48),
                other => return Err(format!("key {kid:?}: unsupported curve {other:?}")),
            };
            let (x, y) = (bytes("x")?, bytes("y")?);
            if x.len() != coordinate_len || y.len() != coordinate_len {
                return Err(format!("key {kid:?}: wrong coordinate length"));
            }
            (
                DecodingKey::from_ec_components(field("x")?, field("y")?)
                    .map_err(|e| e.to_string())?,
                algs,
            )
        }
        Some("OKP") => {
            if text("crv") != Some("Ed25519") {
                return Err(format!("key {kid:?}: unsupported OKP curve"));
            }
            if bytes("x")?.len() != 32 {
                return Err(format!("key {kid:?}: wrong Ed25519 key length"));
            }
            (
                DecodingKey::from_ed_components(field("x")?).map_err(|e| e.to_string())?,
                EDDSA_ALGS,
            )
        }
        // Symmetric ("oct") keys are never taken from a URL: anyone who can read the
        // JWKS could then sign tokens.
        other => return Err(format!("key {kid:?}: unsupported key type {other:?}")),
    };
    // A declared `alg` narrows the key to that one algorithm; it must be one the key
    // type allows ("Ed25519" is the RFC 9864 name for EdDSA over Ed25519).
    let algs = match declared_alg {
        None => algs,
        Some(declared) => {
            let declared = if declared == "Ed25519" {
                "EdDSA"
            } else {
                declared
            };
            let position = algs
                .iter()
                .position(|alg| alg_name(*alg) == declared)
                .ok_or_else(|| {
                    format!("key {kid:?}: alg {declared:?} does not fit its key type")
                })?;
            &algs[position..=position]
        }
    };
    Ok((kid, VerifyKey { key, algs }))
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
    }
}
