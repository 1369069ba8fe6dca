//! External issuers with a configured key: HS256 secrets and PEM public keys.

use jsonwebtoken::{Algorithm, EncodingKey};
use permsync_auth::{generate_ed25519, ConfigError, IssuerKey, TokenErrorKind, Tokens};
use serde_json::json;

use crate::common::*;

const RSA_ISS: &str = "https://rsa.idp.test";
const RSA1_ISS: &str = "https://rsa-pkcs1.idp.test";
const EC_ISS: &str = "https://ec.idp.test";
const EC384_ISS: &str = "https://ec384.idp.test";
const ED_ISS: &str = "https://ed.idp.test";

fn all_static() -> Tokens {
    tokens_with(
        vec![generate_ed25519()],
        vec![
            hs_issuer(),
            issuer(RSA_ISS, IssuerKey::PublicKeyPem(fixture("rsa_public.pem"))),
            issuer(
                RSA1_ISS,
                IssuerKey::PublicKeyPem(fixture("rsa_public_pkcs1.pem")),
            ),
            issuer(
                EC_ISS,
                IssuerKey::PublicKeyPem(fixture("ec_p256_public.pem")),
            ),
            issuer(
                EC384_ISS,
                IssuerKey::PublicKeyPem(fixture("ec_p384_public.pem")),
            ),
            issuer(
                ED_ISS,
                IssuerKey::PublicKeyPem(fixture("ed25519_public.pem")),
            ),
        ],
    )
}

#[tokio::test]
async fn each_key_type_verifies_its_own_algorithms() {
    let tokens = all_static();
    let cases: Vec<(&str, Algorithm, EncodingKey)> = vec![
        (HS_ISS, Algorithm::HS256, hs_key()),
        (RSA_ISS, Algorithm::RS256, rsa_key()),
        (RSA_ISS, Algorithm::RS384, rsa_key()),
        (RSA_ISS, Algorithm::RS512, rsa_key()),
        (RSA_ISS, Algorithm::PS256, rsa_key()),
        (RSA_ISS, Algorithm::PS512, rsa_key()),
        (RSA1_ISS, Algorithm::RS256, rsa_key()),
        (EC_ISS, Algorithm::ES256, ec_p256_key()),
        (EC384_ISS, Algorithm::ES384, ec_p384_key()),
        (ED_ISS, Algorithm::EdDSA, ed_key()),
    ];
    for (iss, alg, key) in cases {
        let token = sign(alg, &key, Some("any-kid"), &claims(iss, AUD));
        let verified = tokens
            .verify(&token, NOW)
            .await
            .unwrap_or_else(|e| panic!("{iss} {alg:?}: {e}"));
        assert_eq!(verified.iss, iss);
        assert_eq!(verified.sub, "alice");
        assert_eq!(verified.exp, NOW + 300);
        assert!(!verified.own);
    }
}

#[tokio::test]
async fn hs256_signed_with_a_public_key_as_secret_is_rejected() {
    let tokens = all_static();
    for (iss, pem) in [
        (RSA_ISS, "rsa_public.pem"),
        (RSA1_ISS, "rsa_public_pkcs1.pem"),
        (EC_ISS, "ec_p256_public.pem"),
        (ED_ISS, "ed25519_public.pem"),
    ] {
        let pem = fixture(pem);
        for secret in [pem.as_bytes(), pem.trim_end().as_bytes()] {
            let token = sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(secret),
                None,
                &claims(iss, AUD),
            );
            rejects(&tokens, &token, TokenErrorKind::AlgorithmNotAllowed).await;
        }
    }
}

#[tokio::test]
async fn algorithm_outside_the_keys_family_or_curve_is_rejected() {
    let tokens = all_static();
    let cases: Vec<(&str, Algorithm, EncodingKey)> = vec![
        // An asymmetric token for a shared-secret issuer.
        (HS_ISS, Algorithm::RS256, rsa_key()),
        (HS_ISS, Algorithm::ES256, ec_p256_key()),
        // HS256 only, even with the right secret.
        (HS_ISS, Algorithm::HS384, hs_key()),
        (HS_ISS, Algorithm::HS512, hs_key()),
        (RSA_ISS, Algorithm::ES256, ec_p256_key()),
        (EC_ISS, Algorithm::ES384, ec_p384_key()),
        (EC384_ISS, Algorithm::ES256, ec_p256_key()),
        (EC_ISS, Algorithm::RS256, rsa_key()),
        (ED_ISS, Algorithm::ES256, ec_p256_key()),
    ];
    for (iss, alg, key) in cases {
        let token = sign(alg, &key, None, &claims(iss, AUD));
        rejects(&tokens, &token, TokenErrorKind::AlgorithmNotAllowed).await;
    }
}

#[tokio::test]
async fn signature_by_the_wrong_key_is_rejected() {
    let tokens = all_static();
    let token = sign(
        Algorithm::RS256,
        &rsa_other_key(),
        None,
        &claims(RSA_ISS, AUD),
    );
    rejects(&tokens, &token, TokenErrorKind::BadSignature).await;
    let wrong_secret = EncodingKey::from_secret(b"another-secret-that-is-32-bytes-long");
    let token = sign(Algorithm::HS256, &wrong_secret, None, &claims(HS_ISS, AUD));
    rejects(&tokens, &token, TokenErrorKind::BadSignature).await;
}

#[tokio::test]
async fn wrong_issuer_and_audience_are_rejected() {
    let tokens = all_static();
    let token = sign(
        Algorithm::HS256,
        &hs_key(),
        None,
        &claims("https://unknown.test", AUD),
    );
    rejects(&tokens, &token, TokenErrorKind::UnknownIssuer).await;
    // A trailing slash is a different issuer.
    let token = sign(
        Algorithm::HS256,
        &hs_key(),
        None,
        &claims(&format!("{HS_ISS}/"), AUD),
    );
    rejects(&tokens, &token, TokenErrorKind::UnknownIssuer).await;
    let token = sign(
        Algorithm::HS256,
        &hs_key(),
        None,
        &claims(HS_ISS, "other-api"),
    );
    rejects(&tokens, &token, TokenErrorKind::WrongAudience).await;
    // The own audience does not satisfy an external issuer's audience.
    let token = sign(Algorithm::HS256, &hs_key(), None, &claims(HS_ISS, OWN_AUD));
    rejects(&tokens, &token, TokenErrorKind::WrongAudience).await;
    // A token of the RSA issuer signed correctly but claiming the HS issuer.
    let token = sign(Algorithm::RS256, &rsa_key(), None, &claims(HS_ISS, AUD));
    rejects(&tokens, &token, TokenErrorKind::AlgorithmNotAllowed).await;
}

#[tokio::test]
async fn time_claims_use_the_given_clock_with_thirty_seconds_leeway() {
    let tokens = tokens_with(vec![generate_ed25519()], vec![hs_issuer()]);
    let mut body = claims(HS_ISS, AUD);
    body["nbf"] = json!(NOW + 30);
    let token = sign(Algorithm::HS256, &hs_key(), None, &body);
    assert!(tokens.verify(&token, NOW).await.is_ok());
    body["nbf"] = json!(NOW + 31);
    let token = sign(Algorithm::HS256, &hs_key(), None, &body);
    rejects(&tokens, &token, TokenErrorKind::NotYetValid).await;
    assert!(tokens.verify(&token, NOW + 1).await.is_ok());

    body["nbf"] = json!("soon");
    let token = sign(Algorithm::HS256, &hs_key(), None, &body);
    rejects(&tokens, &token, TokenErrorKind::BadClaim).await;

    let mut body = claims(HS_ISS, AUD);
    body["exp"] = json!(NOW - 30);
    let token = sign(Algorithm::HS256, &hs_key(), None, &body);
    assert!(tokens.verify(&token, NOW).await.is_ok());
    rejects_at(&tokens, &token, NOW + 1, TokenErrorKind::Expired).await;

    // RFC 7519 NumericDate may have a fraction.
    body["exp"] = json!(NOW as f64 + 10.5);
    let token = sign(Algorithm::HS256, &hs_key(), None, &body);
    assert_eq!(tokens.verify(&token, NOW).await.unwrap().exp, NOW + 10);

    body.as_object_mut().unwrap().remove("exp");
    let token = sign(Algorithm::HS256, &hs_key(), None, &body);
    rejects(&tokens, &token, TokenErrorKind::MissingExp).await;
}

#[tokio::test]
async fn external_session_claims_are_not_passed_on_as_permsync_sessions() {
    let tokens = tokens_with(vec![generate_ed25519()], vec![hs_issuer()]);
    let mut body = claims(HS_ISS, AUD);
    body["sid"] = json!("idp-session");
    body["prev"] = json!(5);
    body["jti"] = json!("id-1");
    let token = sign(Algorithm::HS256, &hs_key(), None, &body);
    let verified = tokens.verify(&token, NOW).await.unwrap();
    assert_eq!((verified.sid, verified.prev), (None, None));
    assert_eq!(verified.jti.as_deref(), Some("id-1"));
    assert_eq!(verified.iat, Some(NOW));
}

#[tokio::test]
async fn missing_subject_is_rejected() {
    let tokens = tokens_with(vec![generate_ed25519()], vec![hs_issuer()]);
    let mut body = claims(HS_ISS, AUD);
    body.as_object_mut().unwrap().remove("sub");
    let token = sign(Algorithm::HS256, &hs_key(), None, &body);
    rejects(&tokens, &token, TokenErrorKind::MissingSubject).await;
}

fn config_error(external: permsync_auth::ExternalIssuer) -> ConfigError {
    Tokens::new(
        vec![generate_ed25519()],
        OWN_ISS.to_owned(),
        OWN_AUD.to_owned(),
        vec![external],
    )
    .unwrap_err()
}

#[test]
fn unusable_issuer_configuration_is_refused_with_the_issuer_named() {
    let pem = |text: &str| issuer("https://bad.test", IssuerKey::PublicKeyPem(text.to_owned()));
    for (external, expect) in [
        (pem(&fixture("rsa_private.pem")), "private key"),
        (pem(&fixture("ec_p256_private.pem")), "private key"),
        (pem(&fixture("rsa_cert.pem")), "certificate"),
        (pem("not a pem"), "not PEM"),
        (
            pem("-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n"),
            "base64",
        ),
        (
            pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
            "SubjectPublicKeyInfo",
        ),
        (
            pem(&(fixture("rsa_public.pem") + &fixture("ec_p256_public.pem"))),
            "exactly one",
        ),
        (
            issuer(
                "https://bad.test",
                IssuerKey::Hs256Secret("short".to_owned()),
            ),
            "32 bytes",
        ),
        (
            issuer(
                "https://bad.test",
                IssuerKey::JwksUrl("ftp://idp.test/jwks".to_owned()),
            ),
            "scheme",
        ),
        (
            issuer(
                "https://bad.test",
                IssuerKey::JwksUrl("not a url".to_owned()),
            ),
            "URL",
        ),
    ] {
        let error = config_error(external).to_string();
        assert!(error.contains("https://bad.test"), "{error}");
        assert!(error.contains(expect), "{error} should mention {expect}");
    }

    let mut no_aud = hs_issuer();
    no_aud.aud = String::new();
    assert!(matches!(
        config_error(no_aud),
        ConfigError::EmptyField { what: "aud", .. }
    ));
    let mut own_name = hs_issuer();
    own_name.iss = OWN_ISS.to_owned();
    assert!(matches!(
        config_error(own_name),
        ConfigError::DuplicateIssuer(_)
    ));
    assert!(matches!(
        Tokens::new(
            vec![generate_ed25519()],
            OWN_ISS.to_owned(),
            OWN_AUD.to_owned(),
            vec![hs_issuer(), hs_issuer()]
        ),
        Err(ConfigError::DuplicateIssuer(_))
    ));
}

#[test]
fn debug_output_hides_secrets() {
    let external = hs_issuer();
    assert!(!format!("{external:?}").contains(HS_SECRET));
    let tokens = all_static();
    assert!(!format!("{tokens:?}").contains(HS_SECRET));
}
