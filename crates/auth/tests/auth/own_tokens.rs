//! permsync's own tokens: signing, claims, rotation and the checks specific to own keys.

use jsonwebtoken::{Algorithm, EncodingKey};
use permsync_auth::{generate_ed25519, AccessClaims, ConfigError, TokenErrorKind, Tokens};
use serde_json::{json, Value};

use crate::common::*;

fn own_claims(tokens: &Tokens) -> AccessClaims {
    tokens.access_claims("alice", "session-1", 42, NOW, 300, None)
}

fn payload_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap()
}

fn header_of(token: &str) -> Value {
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn signed_token_verifies_with_all_claims() {
    let key = generate_ed25519();
    let tokens = tokens_with(vec![key.clone()], vec![]);
    let claims = own_claims(&tokens);
    let token = tokens.sign(&claims);

    let verified = tokens.verify(&token, NOW).await.unwrap();
    assert_eq!(verified.iss, OWN_ISS);
    assert_eq!(verified.sub, "alice");
    assert_eq!(verified.sid.as_deref(), Some("session-1"));
    assert_eq!(verified.prev, Some(42));
    assert_eq!(verified.exp, NOW + 300);
    assert_eq!(verified.iat, Some(NOW));
    assert_eq!(verified.jti.as_deref(), Some(claims.jti.as_str()));
    assert!(verified.own);

    assert_eq!(
        header_of(&token),
        json!({ "alg": "EdDSA", "typ": "JWT", "kid": key.kid })
    );
}

#[tokio::test]
async fn access_claims_use_own_issuer_audience_and_fresh_jti() {
    let tokens = tokens_with(vec![generate_ed25519()], vec![]);
    let a = own_claims(&tokens);
    let b = own_claims(&tokens);
    assert_eq!(a.iss, OWN_ISS);
    assert_eq!(a.aud, OWN_AUD);
    assert_eq!((a.iat, a.exp), (NOW, NOW + 300));
    assert_ne!(a.jti, b.jti);
    assert_eq!(tokens.own_issuer(), OWN_ISS);
    assert_eq!(tokens.own_audience(), OWN_AUD);
}

#[tokio::test]
async fn perms_are_embedded_only_when_given() {
    let tokens = tokens_with(vec![generate_ed25519()], vec![]);
    let without = tokens.sign(&own_claims(&tokens));
    assert!(payload_of(&without).get("perms").is_none());

    let perms = vec![
        "invoice:approve".to_owned(),
        "doc:edit@project/7".to_owned(),
    ];
    let claims = tokens.access_claims("alice", "s", 1, NOW, 300, Some(perms.clone()));
    let with = tokens.sign(&claims);
    assert_eq!(payload_of(&with)["perms"], json!(perms));
    assert!(tokens.verify(&with, NOW).await.is_ok());
}

#[tokio::test]
async fn jwks_publishes_every_key_including_retired_ones() {
    let mut old = generate_ed25519();
    old.retired = true;
    let new = generate_ed25519();
    let tokens = tokens_with(vec![old.clone(), new.clone()], vec![]);
    let jwks = tokens.jwks();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for (jwk, key) in keys.iter().zip([&old, &new]) {
        assert_eq!(
            jwk,
            &json!({
                "kty": "OKP", "crv": "Ed25519", "x": b64(&key.public),
                "kid": key.kid, "alg": "EdDSA", "use": "sig",
            })
        );
    }
    // Nothing private leaks into the published set.
    assert!(!jwks.to_string().contains("\"d\""));
}

#[tokio::test]
async fn newest_non_retired_key_signs_and_all_keys_verify() {
    let first = generate_ed25519();
    let second = generate_ed25519();
    let mut third = generate_ed25519();
    third.retired = true;

    let before = tokens_with(vec![first.clone()], vec![]);
    let old_token = before.sign(&own_claims(&before));

    let after = tokens_with(vec![first.clone(), second.clone(), third.clone()], vec![]);
    assert_eq!(after.active_kid(), second.kid);
    let new_token = after.sign(&own_claims(&after));
    assert_eq!(header_of(&new_token)["kid"], json!(second.kid));

    // Tokens of the previous key keep verifying after the rotation...
    assert!(after.verify(&old_token, NOW).await.unwrap().own);
    assert!(after.verify(&new_token, NOW).await.is_ok());
    // ...and so do tokens of a retired key.
    let retired_token = sign_ed25519_raw(
        &third,
        &json!({ "alg": "EdDSA", "kid": third.kid }),
        &serde_json::to_value(own_claims(&after)).unwrap(),
    );
    assert!(after.verify(&retired_token, NOW).await.is_ok());
}

#[tokio::test]
async fn replacing_keys_drops_removed_ones() {
    let old = generate_ed25519();
    let new = generate_ed25519();
    let tokens = tokens_with(vec![old.clone()], vec![]);
    let old_token = tokens.sign(&own_claims(&tokens));

    let mut retired = old.clone();
    retired.retired = true;
    tokens.replace_own_keys(vec![retired, new.clone()]).unwrap();
    assert_eq!(tokens.active_kid(), new.kid);
    assert!(tokens.verify(&old_token, NOW).await.is_ok());

    // Once the caller drops the retired key, its tokens stop verifying.
    tokens.replace_own_keys(vec![new]).unwrap();
    rejects(&tokens, &old_token, TokenErrorKind::UnknownKey).await;
}

#[test]
fn bad_own_key_configuration_is_refused() {
    let new = |keys| Tokens::new(keys, OWN_ISS.to_owned(), OWN_AUD.to_owned(), vec![]);

    assert!(matches!(new(vec![]), Err(ConfigError::NoActiveKey)));
    let mut retired = generate_ed25519();
    retired.retired = true;
    assert!(matches!(new(vec![retired]), Err(ConfigError::NoActiveKey)));

    let key = generate_ed25519();
    assert!(matches!(
        new(vec![key.clone(), key.clone()]),
        Err(ConfigError::DuplicateKid(_))
    ));

    let mut mismatched = generate_ed25519();
    mismatched.public = generate_ed25519().public;
    assert!(matches!(
        new(vec![mismatched]),
        Err(ConfigError::InvalidOwnKey { .. })
    ));

    let mut garbage = generate_ed25519();
    garbage.private_der = b"not a key".to_vec();
    let error = new(vec![garbage.clone()]).unwrap_err();
    assert!(error.to_string().contains(&garbage.kid), "{error}");

    assert!(matches!(
        Tokens::new(
            vec![generate_ed25519()],
            String::new(),
            OWN_AUD.to_owned(),
            vec![]
        ),
        Err(ConfigError::EmptyField { .. })
    ));
}

#[tokio::test]
async fn expiry_has_thirty_seconds_of_leeway_against_the_given_clock() {
    let tokens = tokens_with(vec![generate_ed25519()], vec![]);
    let token = tokens.sign(&own_claims(&tokens)); // exp = NOW + 300
    assert!(tokens.verify(&token, NOW + 300).await.is_ok());
    assert!(tokens.verify(&token, NOW + 330).await.is_ok());
    rejects_at(&tokens, &token, NOW + 331, TokenErrorKind::Expired).await;
    // The system clock is irrelevant: a token from 2023 is valid "in 2023".
    assert!(tokens.verify(&token, NOW - 1000).await.is_ok());
}

#[tokio::test]
async fn missing_or_non_numeric_exp_is_rejected() {
    let key = generate_ed25519();
    let tokens = tokens_with(vec![key.clone()], vec![]);
    let header = json!({ "alg": "EdDSA", "kid": key.kid });
    let mut claims = serde_json::to_value(own_claims(&tokens)).unwrap();

    claims.as_object_mut().unwrap().remove("exp");
    rejects(
        &tokens,
        &sign_ed25519_raw(&key, &header, &claims),
        TokenErrorKind::MissingExp,
    )
    .await;

    claims["exp"] = json!("1700000300");
    rejects(
        &tokens,
        &sign_ed25519_raw(&key, &header, &claims),
        TokenErrorKind::MissingExp,
    )
    .await;

    claims["exp"] = Value::Null;
    rejects(
        &tokens,
        &sign_ed25519_raw(&key, &header, &claims),
        TokenErrorKind::MissingExp,
    )
    .await;
}

#[tokio::test]
async fn wrong_audience_is_rejected_and_an_audience_list_is_accepted() {
    let key = generate_ed25519();
    let tokens = tokens_with(vec![key.clone()], vec![]);
    let mut claims = own_claims(&tokens);
    claims.aud = "someone-else".to_owned();
    rejects(
        &tokens,
        &tokens.sign(&claims),
        TokenErrorKind::WrongAudience,
    )
    .await;

    let header = json!({ "alg": "EdDSA", "kid": key.kid });
    let mut value = serde_json::to_value(own_claims(&tokens)).unwrap();
    value["aud"] = json!(["other", OWN_AUD]);
    assert!(tokens
        .verify(&sign_ed25519_raw(&key, &header, &value), NOW)
        .await
        .is_ok());
    value["aud"] = json!(["other"]);
    rejects(
        &tokens,
        &sign_ed25519_raw(&key, &header, &value),
        TokenErrorKind::WrongAudience,
    )
    .await;
    value.as_object_mut().unwrap().remove("aud");
    rejects(
        &tokens,
        &sign_ed25519_raw(&key, &header, &value),
        TokenErrorKind::WrongAudience,
    )
    .await;
}

#[tokio::test]
async fn wrong_or_missing_issuer_is_rejected() {
    let key = generate_ed25519();
    let tokens = tokens_with(vec![key.clone()], vec![]);
    let mut claims = own_claims(&tokens);
    claims.iss = "https://evil.test".to_owned();
    rejects(
        &tokens,
        &tokens.sign(&claims),
        TokenErrorKind::UnknownIssuer,
    )
    .await;

    let header = json!({ "alg": "EdDSA", "kid": key.kid });
    let mut value = serde_json::to_value(own_claims(&tokens)).unwrap();
    value.as_object_mut().unwrap().remove("iss");
    rejects(
        &tokens,
        &sign_ed25519_raw(&key, &header, &value),
        TokenErrorKind::UnknownIssuer,
    )
    .await;
    // An array `iss` does not select anyone, even if it contains the right value.
    value["iss"] = json!([OWN_ISS]);
    rejects(
        &tokens,
        &sign_ed25519_raw(&key, &header, &value),
        TokenErrorKind::UnknownIssuer,
    )
    .await;
}

#[tokio::test]
async fn missing_or_empty_subject_is_rejected() {
    let tokens = tokens_with(vec![generate_ed25519()], vec![]);
    let mut claims = own_claims(&tokens);
    claims.sub = String::new();
    rejects(
        &tokens,
        &tokens.sign(&claims),
        TokenErrorKind::MissingSubject,
    )
    .await;

    let key = generate_ed25519();
    let tokens = tokens_with(vec![key.clone()], vec![]);
    let header = json!({ "alg": "EdDSA", "kid": key.kid });
    let mut value = serde_json::to_value(own_claims(&tokens)).unwrap();
    value.as_object_mut().unwrap().remove("sub");
    rejects(
        &tokens,
        &sign_ed25519_raw(&key, &header, &value),
        TokenErrorKind::MissingSubject,
    )
    .await;
    value["sub"] = json!(7);
    rejects(
        &tokens,
        &sign_ed25519_raw(&key, &header, &value),
        TokenErrorKind::MissingSubject,
    )
    .await;
}

#[tokio::test]
async fn own_tokens_must_carry_sid_and_prev() {
    let key = generate_ed25519();
    let tokens = tokens_with(vec![key.clone()], vec![]);
    let header = json!({ "alg": "EdDSA", "kid": key.kid });
    for (claim, bad) in [
        ("sid", Value::Null),
        ("prev", json!(-1)),
        ("prev", json!("3")),
    ] {
        let mut value = serde_json::to_value(own_claims(&tokens)).unwrap();
        value.as_object_mut().unwrap().remove(claim);
        rejects(
            &tokens,
            &sign_ed25519_raw(&key, &header, &value),
            TokenErrorKind::BadClaim,
        )
        .await;
        value[claim] = bad;
        rejects(
            &tokens,
            &sign_ed25519_raw(&key, &header, &value),
            TokenErrorKind::BadClaim,
        )
        .await;
    }
}

#[tokio::test]
async fn unknown_or_missing_kid_is_rejected() {
    let key = generate_ed25519();
    let tokens = tokens_with(vec![key.clone()], vec![]);
    let claims = serde_json::to_value(own_claims(&tokens)).unwrap();
    let unknown = sign_ed25519_raw(&key, &json!({ "alg": "EdDSA", "kid": "nope" }), &claims);
    rejects(&tokens, &unknown, TokenErrorKind::UnknownKey).await;
    let missing = sign_ed25519_raw(&key, &json!({ "alg": "EdDSA" }), &claims);
    rejects(&tokens, &missing, TokenErrorKind::UnknownKey).await;
}

#[tokio::test]
async fn signature_by_another_key_under_our_kid_is_rejected() {
    let key = generate_ed25519();
    let attacker = generate_ed25519();
    let tokens = tokens_with(vec![key.clone()], vec![]);
    let claims = serde_json::to_value(own_claims(&tokens)).unwrap();
    let forged = sign_ed25519_raw(
        &attacker,
        &json!({ "alg": "EdDSA", "kid": key.kid }),
        &claims,
    );
    rejects(&tokens, &forged, TokenErrorKind::BadSignature).await;
}

#[tokio::test]
async fn tampered_payload_is_rejected() {
    let tokens = tokens_with(vec![generate_ed25519()], vec![]);
    let token = tokens.sign(&own_claims(&tokens));
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload = payload_of(&token);
    payload["sub"] = json!("admin");
    let tampered = format!("{}.{}.{}", parts[0], b64(payload.to_string()), parts[2]);
    rejects(&tokens, &tampered, TokenErrorKind::BadSignature).await;
}

#[tokio::test]
async fn only_eddsa_is_allowed_for_own_keys() {
    let key = generate_ed25519();
    let tokens = tokens_with(vec![key.clone()], vec![]);
    let claims = serde_json::to_value(own_claims(&tokens)).unwrap();

    // HMAC "signed" with our public key (raw, base64url and as published in the JWKS).
    for secret in [
        key.public.clone(),
        b64(&key.public).into_bytes(),
        tokens.jwks().to_string().into_bytes(),
    ] {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let token = sign(
                alg,
                &EncodingKey::from_secret(&secret),
                Some(&key.kid),
                &claims,
            );
            rejects(&tokens, &token, TokenErrorKind::AlgorithmNotAllowed).await;
        }
    }
    let token = sign(Algorithm::ES256, &ec_p256_key(), Some(&key.kid), &claims);
    rejects(&tokens, &token, TokenErrorKind::AlgorithmNotAllowed).await;
    let token = sign(Algorithm::RS256, &rsa_key(), Some(&key.kid), &claims);
    rejects(&tokens, &token, TokenErrorKind::AlgorithmNotAllowed).await;
}

#[tokio::test]
async fn embedded_jwk_header_key_is_never_trusted() {
    let key = generate_ed25519();
    let attacker = generate_ed25519();
    let tokens = tokens_with(vec![key.clone()], vec![]);
    let claims = serde_json::to_value(own_claims(&tokens)).unwrap();
    let attacker_jwk = json!({ "kty": "OKP", "crv": "Ed25519", "x": b64(&attacker.public) });

    let with_our_kid = json!({ "alg": "EdDSA", "kid": key.kid, "jwk": attacker_jwk });
    rejects(
        &tokens,
        &sign_ed25519_raw(&attacker, &with_our_kid, &claims),
        TokenErrorKind::BadSignature,
    )
    .await;
    let with_their_kid = json!({ "alg": "EdDSA", "kid": attacker.kid, "jwk": attacker_jwk });
    rejects(
        &tokens,
        &sign_ed25519_raw(&attacker, &with_their_kid, &claims),
        TokenErrorKind::UnknownKey,
    )
    .await;
    let without_kid = json!({ "alg": "EdDSA", "jwk": attacker_jwk });
    rejects(
        &tokens,
        &sign_ed25519_raw(&attacker, &without_kid, &claims),
        TokenErrorKind::UnknownKey,
    )
    .await;
}

#[tokio::test]
async fn other_issuers_cannot_borrow_the_own_issuer_name() {
    // A token from an external issuer's key that claims permsync's `iss` is judged by
    // permsync's own keys, and fails there.
    let tokens = tokens_with(vec![generate_ed25519()], vec![hs_issuer()]);
    let token = sign(Algorithm::HS256, &hs_key(), None, &claims(OWN_ISS, OWN_AUD));
    rejects(&tokens, &token, TokenErrorKind::AlgorithmNotAllowed).await;
}
