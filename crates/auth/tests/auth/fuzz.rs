//! Property tests: arbitrary input and mutated genuine tokens never verify, never panic.

use std::sync::OnceLock;

use jsonwebtoken::Algorithm;
use permsync_auth::{generate_ed25519, IssuerKey, Tokens};
use proptest::prelude::*;

use crate::common::*;

const RSA_ISS: &str = "https://rsa.idp.test";

struct Setup {
    runtime: tokio::runtime::Runtime,
    tokens: Tokens,
    /// Genuine tokens that verify at [`NOW`]: own EdDSA, HS256 and RS256.
    valid: Vec<String>,
}

/// Built once: key generation and runtime start-up would dominate otherwise. No
/// JWKS issuer here, so verification never touches the network.
fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let tokens = tokens_with(
            vec![generate_ed25519()],
            vec![
                hs_issuer(),
                issuer(RSA_ISS, IssuerKey::PublicKeyPem(fixture("rsa_public.pem"))),
            ],
        );
        let valid = vec![
            tokens.sign(&tokens.access_claims("alice", "s", 3, NOW, 300, Some(vec!["a:b".into()]))),
            sign(Algorithm::HS256, &hs_key(), None, &claims(HS_ISS, AUD)),
            sign(
                Algorithm::RS256,
                &rsa_key(),
                Some("k"),
                &claims(RSA_ISS, AUD),
            ),
        ];
        for token in &valid {
            assert!(
                runtime.block_on(tokens.verify(token, NOW)).is_ok(),
                "{token}"
            );
        }
        Setup {
            runtime,
            tokens,
            valid,
        }
    })
}

fn assert_rejected(token: &str) {
    let setup = setup();
    let result = setup.runtime.block_on(setup.tokens.verify(token, NOW));
    assert!(result.is_err(), "verified: {token}");
}

#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, char),
    Delete(usize),
    Insert(usize, char),
    Truncate(usize),
    SwapSegments(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop_oneof![
        proptest::char::range('A', 'Z'),
        proptest::char::range('a', 'z'),
        proptest::char::range('0', '9'),
        Just('-'),
        Just('_'),
        Just('.'),
        Just('='),
        Just('+'),
        Just('/'),
        any::<char>(),
    ];
    prop_oneof![
        (any::<usize>(), interesting.clone()).prop_map(|(i, c)| Mutation::Replace(i, c)),
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), interesting).prop_map(|(i, c)| Mutation::Insert(i, c)),
        any::<usize>().prop_map(Mutation::Truncate),
        (0usize..3, 0usize..3).prop_map(|(a, b)| Mutation::SwapSegments(a, b)),
    ]
}

/// Applies `m` to `token`, or `None` when it would leave the token unchanged.
fn apply(token: &str, m: &Mutation) -> Option<String> {
    let mut chars: Vec<char> = token.chars().collect();
    let len = chars.len();
    if len == 0 && !matches!(m, Mutation::Insert(..)) {
        return None;
    }
    match *m {
        Mutation::Replace(i, c) => {
            let i = i % len;
            if chars[i] == c {
                return None;
            }
            chars[i] = c;
        }
        Mutation::Delete(i) => {
            chars.remove(i % len);
        }
        Mutation::Insert(i, c) => chars.insert(i % (len + 1), c),
        Mutation::Truncate(i) => chars.truncate(i % len),
        Mutation::SwapSegments(a, b) => {
            let mut segments: Vec<&str> = token.split('.').collect();
            if segments.len() != 3 || segments[a] == segments[b] {
                return None;
            }
            segments.swap(a, b);
            return Some(segments.join("."));
        }
    }
    Some(chars.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_verify(token in any::<String>()) {
        assert_rejected(&token);
    }

    #[test]
    fn arbitrary_bytes_never_verify(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        assert_rejected(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_three_segment_tokens_never_verify(
        header in "[A-Za-z0-9_-]{0,80}",
        payload in "[A-Za-z0-9_-]{0,200}",
        signature in "[A-Za-z0-9_-]{0,90}",
    ) {
        assert_rejected(&format!("{header}.{payload}.{signature}"));
    }

    #[test]
    fn arbitrary_json_in_a_token_never_verifies(
        header in json_object(),
        payload in json_object(),
        signature in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        assert_rejected(&format!("{}.{}.{}", b64(&header), b64(&payload), b64(&signature)));
    }

    #[test]
    fn mutated_genuine_tokens_never_verify(
        which in 0usize..3,
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let original = &setup().valid[which];
        let mut token = original.clone();
        for m in &mutations {
            if let Some(mutated) = apply(&token, m) {
                token = mutated;
            }
        }
        prop_assume!(token != *original);
        assert_rejected(&token);
    }
}

/// Small JSON objects with the claim and header names that matter, and junk values.
fn json_object() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("alg"),
        Just("kid"),
        Just("typ"),
        Just("iss"),
        Just("aud"),
        Just("sub"),
        Just("exp"),
        Just("nbf"),
        Just("jku"),
        Just("jwk"),
        Just("crit"),
        Just("x"),
    ];
    let value = prop_oneof![
        Just("\"none\"".to_owned()),
        Just("\"HS256\"".to_owned()),
        Just("\"EdDSA\"".to_owned()),
        Just("\"RS256\"".to_owned()),
        Just(format!("\"{OWN_ISS}\"")),
        Just(format!("\"{HS_ISS}\"")),
        Just(format!("\"{AUD}\"")),
        Just(NOW.to_string()),
        Just("null".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        "[a-z]{0,8}".prop_map(|s| format!("\"{s}\"")),
    ];
    proptest::collection::vec((key, value), 0..8).prop_map(|pairs| {
        let members: Vec<String> = pairs
            .into_iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("{{{}}}", members.join(","))
    })
}
