//! Tokens that are not well-formed signed JWTs, whatever their content.

use jsonwebtoken::Algorithm;
use permsync_auth::{generate_ed25519, TokenErrorKind, Tokens, MAX_TOKEN_BYTES};
use serde_json::json;

use crate::common::*;

fn setup() -> (Tokens, String) {
    let tokens = tokens_with(vec![generate_ed25519()], vec![hs_issuer()]);
    let token = tokens.sign(&tokens.access_claims("alice", "s", 1, NOW, 300, None));
    (tokens, token)
}

#[tokio::test]
async fn alg_none_is_rejected_in_any_spelling() {
    let (tokens, _) = setup();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({ "alg": alg, "typ": "JWT" });
        for payload in [claims(HS_ISS, AUD), claims(OWN_ISS, OWN_AUD)] {
            for signature in ["", "c2ln", "AAAA"] {
                let token = unsigned(&header, &payload, signature);
                rejects(&tokens, &token, TokenErrorKind::UnsupportedAlgorithm).await;
            }
        }
    }
}

#[tokio::test]
async fn missing_unknown_or_miscased_alg_is_rejected() {
    let (tokens, _) = setup();
    let payload = claims(HS_ISS, AUD);
    for header in [
        json!({ "typ": "JWT" }),
        json!({ "alg": "hs256" }),
        json!({ "alg": "HS1" }),
        json!({ "alg": "ES512" }),
        json!({ "alg": "" }),
    ] {
        rejects(
            &tokens,
            &unsigned(&header, &payload, "AAAA"),
            TokenErrorKind::UnsupportedAlgorithm,
        )
        .await;
    }
    rejects(
        &tokens,
        &unsigned(&json!({ "alg": 256 }), &payload, "AAAA"),
        TokenErrorKind::Malformed,
    )
    .await;
}

#[tokio::test]
async fn critical_header_extensions_are_rejected() {
    let (tokens, _) = setup();
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.typ = None;
    let mut header = serde_json::to_value(header).unwrap();
    header["crit"] = json!(["b64"]);
    header["b64"] = json!(false);
    // Correctly HMAC-signed over the encoded parts, so only `crit` can reject it.
    let message = format!(
        "{}.{}",
        b64(header.to_string()),
        b64(claims(HS_ISS, AUD).to_string())
    );
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, HS_SECRET.as_bytes()),
        message.as_bytes(),
    );
    let token = format!("{message}.{}", b64(tag.as_ref()));
    rejects(&tokens, &token, TokenErrorKind::UnsupportedHeader).await;
}

#[tokio::test]
async fn structurally_broken_tokens_are_malformed() {
    let (tokens, token) = setup();
    let parts: Vec<&str> = token.split('.').collect();
    let header = parts[0];
    let payload = parts[1];
    let not_json = b64("{not json");
    let array = b64("[1,2]");
    let cases = vec![
        String::new(),
        "abc".to_owned(),
        ".".to_owned(),
        "..".to_owned(),
        "...".to_owned(),
        format!("{header}.{payload}"),
        format!("{header}.{payload}."),
        format!("{token}.extra"),
        format!("{header}.{payload}.sig.iv.tag"),
        format!(".{payload}.{}", parts[2]),
        format!("{header}..{}", parts[2]),
        format!("!!!.{payload}.{}", parts[2]),
        format!("{header}.***.{}", parts[2]),
        format!("{not_json}.{payload}.{}", parts[2]),
        format!("{array}.{payload}.{}", parts[2]),
        format!("{header}.{not_json}.{}", parts[2]),
        format!("{header}.{array}.{}", parts[2]),
        format!("{header}.{}.{}", b64("\"a string\""), parts[2]),
        // Standard base64 padding is not base64url without padding.
        format!("{header}=.{payload}.{}", parts[2]),
        format!("{token} "),
        format!(" {token}"),
        format!("Bearer {token}"),
    ];
    for case in cases {
        rejects(&tokens, &case, TokenErrorKind::Malformed).await;
    }
}

#[tokio::test]
async fn truncated_tokens_never_verify() {
    let (tokens, token) = setup();
    for len in 0..token.len() {
        let truncated = &token[..len];
        let error = tokens.verify(truncated, NOW).await.unwrap_err();
        assert!(
            matches!(
                error.kind,
                TokenErrorKind::Malformed | TokenErrorKind::BadSignature
            ),
            "{len}: {error:?}"
        );
    }
}

#[tokio::test]
async fn tokens_over_eight_kib_are_rejected_before_parsing() {
    let (tokens, _) = setup();
    // A genuine, correctly signed token that is simply too big.
    let mut big = claims(HS_ISS, AUD);
    big["padding"] = json!("x".repeat(MAX_TOKEN_BYTES));
    let token = sign(Algorithm::HS256, &hs_key(), None, &big);
    assert!(token.len() > MAX_TOKEN_BYTES);
    rejects(&tokens, &token, TokenErrorKind::TooLarge).await;
    rejects(
        &tokens,
        &"a".repeat(MAX_TOKEN_BYTES + 1),
        TokenErrorKind::TooLarge,
    )
    .await;
    rejects(
        &tokens,
        &"a".repeat(10 * 1024 * 1024),
        TokenErrorKind::TooLarge,
    )
    .await;

    // Right at the limit, a valid token still verifies.
    let mut fits = claims(HS_ISS, AUD);
    fits["padding"] = json!("");
    let base = sign(Algorithm::HS256, &hs_key(), None, &fits).len();
    // Each 3 payload bytes become 4 characters.
    fits["padding"] = json!("x".repeat((MAX_TOKEN_BYTES - base) / 4 * 3));
    let token = sign(Algorithm::HS256, &hs_key(), None, &fits);
    assert!(
        token.len() <= MAX_TOKEN_BYTES && token.len() > MAX_TOKEN_BYTES - 8,
        "{}",
        token.len()
    );
    assert!(tokens.verify(&token, NOW).await.is_ok());
}

#[tokio::test]
async fn deeply_nested_json_is_rejected_without_overflowing_the_stack() {
    let (tokens, _) = setup();
    let nested = format!("{{\"iss\":{}1{}}}", "[".repeat(3000), "]".repeat(3000));
    let token = format!("{}.{}.AAAA", b64(r#"{"alg":"HS256"}"#), b64(nested));
    rejects(&tokens, &token, TokenErrorKind::Malformed).await;
}

#[test]
fn descriptions_are_short_and_safe_for_www_authenticate() {
    use TokenErrorKind::*;
    let all = [
        TooLarge,
        Malformed,
        UnsupportedAlgorithm,
        UnsupportedHeader,
        AlgorithmNotAllowed,
        UnknownIssuer,
        UnknownKey,
        KeysUnavailable,
        BadSignature,
        MissingExp,
        Expired,
        NotYetValid,
        WrongIssuer,
        WrongAudience,
        MissingSubject,
        BadClaim,
    ];
    let mut seen = std::collections::HashSet::new();
    for kind in all {
        let text = kind.description();
        assert!(!text.is_empty() && text.len() <= 40, "{text}");
        // RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E.
        assert!(text
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\'));
        assert!(seen.insert(text), "{text} used twice");
        let error = permsync_auth::TokenError::from(kind);
        assert_eq!(error.to_string(), text);
    }
}
