//! The decoding every bearer token gets before a key is chosen
//! (`parse_unverified`), on arbitrary text. Nothing over the size limit is decoded;
//! what is accepted is three segments with a signature, a JSON object header naming
//! a real algorithm (never `none`) without `crit`, and a JSON object payload, and the
//! `kid` and payload returned are exactly the token's.

#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use permsync_auth::fuzzing::parse_unverified;
use permsync_auth::{TokenErrorKind, MAX_TOKEN_BYTES};
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    let result = parse_unverified(&token);
    if token.len() > MAX_TOKEN_BYTES {
        assert_eq!(result.err(), Some(TokenErrorKind::TooLarge));
        return;
    }
    let Ok(unverified) = result else {
        return;
    };
    let segments: Vec<&str> = token.split('.').collect();
    assert_eq!(segments.len(), 3, "{token:?}");
    assert!(segments.iter().all(|s| !s.is_empty()), "{token:?}");
    let header = object(segments[0]).expect("an accepted header is a JSON object");
    let payload = object(segments[1]).expect("an accepted payload is a JSON object");
    let alg = header["alg"].as_str().expect("alg is a string");
    assert!(!alg.eq_ignore_ascii_case("none"));
    assert_eq!(
        format!("{:?}", unverified.alg),
        alg,
        "alg is matched exactly"
    );
    assert!(!header.contains_key("crit"));
    assert_eq!(
        unverified.kid.as_deref(),
        header.get("kid").and_then(Value::as_str)
    );
    assert_eq!(unverified.payload, payload);
});

fn object(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}
