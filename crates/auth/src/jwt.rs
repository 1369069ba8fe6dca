//! Structural checks of a compact JWS before any key is chosen: size, shape, header.
//!
//! Everything read here is attacker-controlled and unverified. It is used for two
//! things only: to refuse early what can never be valid, and to pick the issuer and
//! key id that will then verify the token in full.

use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::error::TokenErrorKind;
use crate::tokens::MAX_TOKEN_BYTES;

/// The parts of an unverified token needed to choose its verifier.
#[derive(Debug)]
pub struct Unverified {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub payload: Map<String, Value>,
}

/// Checks size and shape and decodes header and payload, without trusting either.
pub fn parse_unverified(token: &str) -> Result<Unverified, TokenErrorKind> {
    // Before any decoding, so an oversized token costs nothing but this comparison.
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenErrorKind::TooLarge);
    }
    let mut segments = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        // Also refuses the five-segment JWE form: permsync accepts signed tokens only.
        return Err(TokenErrorKind::Malformed);
    };
    if header.is_empty() || payload.is_empty() {
        return Err(TokenErrorKind::Malformed);
    }
    let header = decode_object(header)?;
    let payload = decode_object(payload)?;

    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg,
        Some(_) => return Err(TokenErrorKind::Malformed),
        None => return Err(TokenErrorKind::UnsupportedAlgorithm),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(TokenErrorKind::UnsupportedAlgorithm);
    }
    // Exact, case-sensitive names only (RFC 7518 §3.1): "hs256" is not HS256.
    let alg = Algorithm::from_str(alg).map_err(|_| TokenErrorKind::UnsupportedAlgorithm)?;
    // An empty signature is how unsecured tokens are written; whatever the header
    // claims, such a token is not signed.
    if signature.is_empty() {
        return Err(TokenErrorKind::Malformed);
    }

    // A critical extension we do not implement changes the token's meaning, so it
    // must not be skipped (RFC 7515 §4.1.11). `b64: false` (RFC 7797) arrives this way.
    if header.contains_key("crit") {
        return Err(TokenErrorKind::UnsupportedHeader);
    }

    let kid = match header.get("kid") {
        Some(Value::String(kid)) => Some(kid.clone()),
        None => None,
        Some(_) => return Err(TokenErrorKind::Malformed),
    };
    // `jku`, `x5u`, `jwk` and `x5c` are deliberately not read: keys come only from
    // configuration, never from the token that is to be checked with them.
    Ok(Unverified { alg, kid, payload })
}

fn decode_object(segment: &str) -> Result<Map<String, Value>, TokenErrorKind> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenErrorKind::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(TokenErrorKind::Malformed),
    }
}
