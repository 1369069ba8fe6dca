//! Issuers configured by JWKS URL, against a real HTTP server on loopback.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey};
use permsync_auth::{generate_ed25519, IssuerKey, TokenErrorKind, Tokens};
use serde_json::json;

use crate::common::*;

const ISS: &str = "https://jwks.idp.test";

fn jwks_tokens(url: &str) -> Tokens {
    tokens_with(
        vec![generate_ed25519()],
        vec![issuer(ISS, IssuerKey::JwksUrl(url.to_owned()))],
    )
}

fn standard_keys() -> Vec<serde_json::Value> {
    vec![
        with(jwk("rsa"), json!({ "kid": "rsa-1", "use": "sig" })),
        with(jwk("ec_p256"), json!({ "kid": "ec-1", "alg": "ES256" })),
        with(jwk("ec_p384"), json!({ "kid": "ec-2" })),
        with(jwk("ed25519"), json!({ "kid": "ed-1" })),
    ]
}

#[tokio::test]
async fn rsa_ec_and_okp_keys_verify_and_are_fetched_once() {
    let server = JwksServer::start(standard_keys()).await;
    let tokens = jwks_tokens(&server.url);
    let cases: Vec<(&str, Algorithm, EncodingKey)> = vec![
        ("rsa-1", Algorithm::RS256, rsa_key()),
        ("rsa-1", Algorithm::PS384, rsa_key()),
        ("ec-1", Algorithm::ES256, ec_p256_key()),
        ("ec-2", Algorithm::ES384, ec_p384_key()),
        ("ed-1", Algorithm::EdDSA, ed_key()),
    ];
    for (kid, alg, key) in cases {
        let token = sign(alg, &key, Some(kid), &claims(ISS, AUD));
        let verified = tokens
            .verify(&token, NOW)
            .await
            .unwrap_or_else(|e| panic!("{kid} {alg:?}: {e}"));
        assert_eq!((verified.iss.as_str(), verified.own), (ISS, false));
    }
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn only_algorithms_compatible_with_each_jwk_are_accepted() {
    let server = JwksServer::start(standard_keys()).await;
    let tokens = jwks_tokens(&server.url);
    let rsa_pem = fixture("rsa_public.pem");
    let rsa_n = jwk("rsa")["n"].as_str().unwrap().to_owned();
    let cases: Vec<(&str, Algorithm, EncodingKey)> = vec![
        // HMAC with the public key in every form an attacker might try.
        (
            "rsa-1",
            Algorithm::HS256,
            EncodingKey::from_secret(rsa_pem.as_bytes()),
        ),
        (
            "rsa-1",
            Algorithm::HS256,
            EncodingKey::from_secret(rsa_n.as_bytes()),
        ),
        (
            "rsa-1",
            Algorithm::HS256,
            EncodingKey::from_secret(jwk("rsa").to_string().as_bytes()),
        ),
        (
            "ec-1",
            Algorithm::HS256,
            EncodingKey::from_secret(fixture("ec_p256_public.pem").as_bytes()),
        ),
        (
            "ed-1",
            Algorithm::HS256,
            EncodingKey::from_secret(jwk("ed25519")["x"].as_str().unwrap().as_bytes()),
        ),
        // Other families and curves.
        ("rsa-1", Algorithm::ES256, ec_p256_key()),
        ("ec-1", Algorithm::RS256, rsa_key()),
        ("ec-1", Algorithm::ES384, ec_p384_key()),
        ("ec-2", Algorithm::ES256, ec_p256_key()),
        ("ed-1", Algorithm::RS256, rsa_key()),
    ];
    for (kid, alg, key) in cases {
        let token = sign(alg, &key, Some(kid), &claims(ISS, AUD));
        rejects(&tokens, &token, TokenErrorKind::AlgorithmNotAllowed).await;
    }
    // An algorithm mismatch on a known kid is not a reason to refetch.
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn a_declared_alg_narrows_the_key_to_that_algorithm() {
    let server = JwksServer::start(vec![with(
        jwk("rsa"),
        json!({ "kid": "rsa-1", "alg": "RS256" }),
    )])
    .await;
    let tokens = jwks_tokens(&server.url);
    let ok = sign(
        Algorithm::RS256,
        &rsa_key(),
        Some("rsa-1"),
        &claims(ISS, AUD),
    );
    assert!(tokens.verify(&ok, NOW).await.is_ok());
    let other = sign(
        Algorithm::PS256,
        &rsa_key(),
        Some("rsa-1"),
        &claims(ISS, AUD),
    );
    rejects(&tokens, &other, TokenErrorKind::AlgorithmNotAllowed).await;
}

#[tokio::test]
async fn unknown_kid_refetches_at_most_once_per_thirty_seconds() {
    let server = JwksServer::start(standard_keys()).await;
    let tokens = jwks_tokens(&server.url);
    let good = sign(
        Algorithm::RS256,
        &rsa_key(),
        Some("rsa-1"),
        &claims(ISS, AUD),
    );
    assert!(tokens.verify(&good, NOW).await.is_ok());
    assert_eq!(server.fetches(), 1);

    // A flood of random key ids within the interval costs the provider nothing.
    for i in 0..50 {
        let token = sign(
            Algorithm::RS256,
            &rsa_key(),
            Some(&format!("random-{i}")),
            &claims(ISS, AUD),
        );
        rejects_at(
            &tokens,
            &token,
            NOW + 1 + i % 29,
            TokenErrorKind::UnknownKey,
        )
        .await;
    }
    assert_eq!(server.fetches(), 1);

    // The provider rotates: the new kid is picked up by the first request after the
    // interval, and known kids never trigger a fetch.
    let mut rotated = standard_keys();
    rotated.push(with(jwk("rsa_other"), json!({ "kid": "rsa-2" })));
    server.set_keys(rotated);
    let new_token = sign(
        Algorithm::RS256,
        &rsa_other_key(),
        Some("rsa-2"),
        &claims(ISS, AUD),
    );
    rejects_at(&tokens, &new_token, NOW + 29, TokenErrorKind::UnknownKey).await;
    assert_eq!(server.fetches(), 1);
    assert!(tokens.verify(&new_token, NOW + 30).await.is_ok());
    assert_eq!(server.fetches(), 2);
    assert!(tokens.verify(&good, NOW + 31).await.is_ok());
    assert!(tokens.verify(&new_token, NOW + 31).await.is_ok());
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn keys_removed_from_the_jwks_stop_verifying_after_a_refetch() {
    let server = JwksServer::start(standard_keys()).await;
    let tokens = jwks_tokens(&server.url);
    let old = sign(
        Algorithm::RS256,
        &rsa_key(),
        Some("rsa-1"),
        &claims(ISS, AUD),
    );
    assert!(tokens.verify(&old, NOW).await.is_ok());

    server.set_keys(vec![with(jwk("rsa_other"), json!({ "kid": "rsa-2" }))]);
    let new = sign(
        Algorithm::RS256,
        &rsa_other_key(),
        Some("rsa-2"),
        &claims(ISS, AUD),
    );
    assert!(tokens.verify(&new, NOW + 60).await.is_ok());
    rejects_at(&tokens, &old, NOW + 61, TokenErrorKind::UnknownKey).await;
}

#[tokio::test]
async fn concurrent_unknown_kids_share_one_fetch() {
    let server = JwksServer::start(standard_keys()).await;
    let tokens = Arc::new(jwks_tokens(&server.url));
    let mut requests = Vec::new();
    for i in 0..20 {
        let tokens = Arc::clone(&tokens);
        requests.push(tokio::spawn(async move {
            let token = sign(
                Algorithm::RS256,
                &rsa_key(),
                Some(&format!("kid-{i}")),
                &claims(ISS, AUD),
            );
            tokens.verify(&token, NOW).await
        }));
    }
    for request in requests {
        assert_eq!(
            request.await.unwrap().unwrap_err().kind,
            TokenErrorKind::UnknownKey
        );
    }
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn tokens_without_kid_are_rejected_for_jwks_issuers() {
    let server = JwksServer::start(standard_keys()).await;
    let tokens = jwks_tokens(&server.url);
    let token = sign(Algorithm::RS256, &rsa_key(), None, &claims(ISS, AUD));
    rejects(&tokens, &token, TokenErrorKind::UnknownKey).await;
    assert_eq!(server.fetches(), 0);
}

#[tokio::test]
async fn symmetric_and_encryption_keys_in_the_jwks_are_ignored() {
    let secret = b"a-shared-secret-of-at-least-32-bytes!!";
    let server = JwksServer::start(vec![
        json!({ "kty": "oct", "kid": "sym", "k": b64(secret) }),
        with(jwk("rsa"), json!({ "kid": "enc", "use": "enc" })),
        with(jwk("rsa"), json!({ "kid": "oaep", "alg": "RSA-OAEP" })),
        json!({ "kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA" }),
        json!({ "kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB" }),
        // No kid: unusable, since tokens name their key.
        jwk("ec_p256"),
        with(jwk("ed25519"), json!({ "kid": "ed-1" })),
    ])
    .await;
    let tokens = jwks_tokens(&server.url);
    let token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret),
        Some("sym"),
        &claims(ISS, AUD),
    );
    rejects(&tokens, &token, TokenErrorKind::UnknownKey).await;
    for kid in ["enc", "oaep", "broken"] {
        let token = sign(Algorithm::RS256, &rsa_key(), Some(kid), &claims(ISS, AUD));
        rejects_at(&tokens, &token, NOW + 1, TokenErrorKind::UnknownKey).await;
    }
    // The usable key in the same document still works.
    let token = sign(Algorithm::EdDSA, &ed_key(), Some("ed-1"), &claims(ISS, AUD));
    assert!(tokens.verify(&token, NOW + 2).await.is_ok());
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn an_unreachable_or_failing_provider_is_not_hammered() {
    let server = JwksServer::start(vec![]).await;
    server.set_response(500, "oops");
    let tokens = jwks_tokens(&server.url);
    let mut long_lived = claims(ISS, AUD);
    long_lived["exp"] = json!(NOW + 10_000);
    let token = sign(Algorithm::RS256, &rsa_key(), Some("rsa-1"), &long_lived);
    rejects(&tokens, &token, TokenErrorKind::KeysUnavailable).await;
    rejects_at(&tokens, &token, NOW + 10, TokenErrorKind::KeysUnavailable).await;
    assert_eq!(server.fetches(), 1);

    for (i, body) in ["not json", "{\"no\":\"keys\"}", "[]"]
        .into_iter()
        .enumerate()
    {
        server.set_response(200, body);
        let now = NOW + 100 * (i as i64 + 1);
        rejects_at(&tokens, &token, now, TokenErrorKind::KeysUnavailable).await;
    }
    assert_eq!(server.fetches(), 4);

    // Once the provider recovers, the next allowed fetch succeeds.
    server.set_keys(standard_keys());
    assert!(tokens.verify(&token, NOW + 400).await.is_ok());
    assert_eq!(server.fetches(), 5);

    // When it disappears, the cached keys stay in use and unknown kids stay unknown.
    let url = server.url.clone();
    drop(server);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(tokens.verify(&token, NOW + 1000).await.is_ok());
    let unknown = sign(Algorithm::RS256, &rsa_key(), Some("rsa-9"), &long_lived);
    rejects_at(&tokens, &unknown, NOW + 1000, TokenErrorKind::UnknownKey).await;

    // A provider never reached leaves nothing to verify with.
    let never_reached = jwks_tokens(&url);
    rejects(&never_reached, &token, TokenErrorKind::KeysUnavailable).await;
}

#[tokio::test]
async fn prefetch_warms_the_cache() {
    let server = JwksServer::start(standard_keys()).await;
    let tokens = jwks_tokens(&server.url);
    tokens.prefetch_jwks(NOW).await;
    assert_eq!(server.fetches(), 1);
    let token = sign(
        Algorithm::ES256,
        &ec_p256_key(),
        Some("ec-1"),
        &claims(ISS, AUD),
    );
    assert!(tokens.verify(&token, NOW).await.is_ok());
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn jku_x5u_and_jwk_headers_are_never_fetched_or_trusted() {
    let server = JwksServer::start(standard_keys()).await;
    // The attacker publishes their own key under the victim's kid.
    let attacker = JwksServer::start(vec![with(jwk("rsa_other"), json!({ "kid": "rsa-1" }))]).await;
    let tokens = jwks_tokens(&server.url);

    let headers = [
        json!({ "alg": "RS256", "kid": "rsa-1", "jku": attacker.url }),
        json!({ "alg": "RS256", "kid": "rsa-1", "x5u": attacker.url }),
        json!({ "alg": "RS256", "kid": "rsa-1", "jwk": with(jwk("rsa_other"), json!({ "kid": "rsa-1" })) }),
        json!({ "alg": "RS256", "kid": "attacker", "jku": attacker.url }),
    ];
    for header in headers {
        let mut typed: jsonwebtoken::Header = serde_json::from_value(header.clone()).unwrap();
        typed.typ = None;
        let token = jsonwebtoken::encode(&typed, &claims(ISS, AUD), &rsa_other_key()).unwrap();
        let error = tokens.verify(&token, NOW + 100).await.unwrap_err();
        assert!(
            matches!(
                error.kind,
                TokenErrorKind::BadSignature | TokenErrorKind::UnknownKey
            ),
            "{header}: {error:?}"
        );
    }
    assert_eq!(attacker.fetches(), 0);
}
