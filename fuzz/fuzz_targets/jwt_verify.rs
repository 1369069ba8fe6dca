//! `Tokens::verify`, the real verification every request's bearer token gets, against
//! a configured set: permsync's own Ed25519 key and five external issuers (an HS256
//! secret, RSA, EC P-256 and Ed25519 public keys, and a JWKS served on loopback).
//!
//! Inputs are arbitrary text, or header and payload bytes signed for real, or
//! structured headers and claims signed for real by one of eight keys (one of them
//! configured nowhere), so the fuzzer reaches every claim rule. A token that
//! verifies must meet every rule of PROTOCOL §3 as checked here from the raw payload,
//! and a token signed with one issuer's key verifies only as that issuer, only with
//! an algorithm that issuer's key allows, and never with a signature other than the
//! real one.

#![no_main]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use permsync_auth::{
    generate_ed25519, ExternalIssuer, IssuerKey, TokenErrorKind, Tokens, Verified,
    CLOCK_LEEWAY_SECS, MAX_TOKEN_BYTES,
};
use serde_json::{json, Map, Value};

/// The fixed "now" of every verification, Unix seconds.
const NOW: i64 = 1_700_000_000;
const OWN_ISS: &str = "https://permsync.fuzz";
const OWN_AUD: &str = "permsync";
const HS_ISS: &str = "https://hs.idp.fuzz";
const RSA_ISS: &str = "https://rsa.idp.fuzz";
const EC_ISS: &str = "https://ec.idp.fuzz";
const ED_ISS: &str = "https://ed.idp.fuzz";
const JWKS_ISS: &str = "https://jwks.idp.fuzz";
const AUD: &str = "permsync-api";
const HS_SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";
const OTHER_SECRET: &str = "another-secret-nobody-configured-here";

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../crates/auth/tests/fixtures/", $name))
    };
}

struct Setup {
    runtime: tokio::runtime::Runtime,
    tokens: Tokens,
    own_key: EncodingKey,
    own_kid: String,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let own = generate_ed25519();
        let issuer = |iss: &str, key| ExternalIssuer {
            iss: iss.into(),
            aud: AUD.into(),
            key,
        };
        let tokens = Tokens::new(
            vec![own.clone()],
            OWN_ISS.into(),
            OWN_AUD.into(),
            vec![
                issuer(HS_ISS, IssuerKey::Hs256Secret(HS_SECRET.into())),
                issuer(
                    RSA_ISS,
                    IssuerKey::PublicKeyPem(fixture!("rsa_public.pem").into()),
                ),
                issuer(
                    EC_ISS,
                    IssuerKey::PublicKeyPem(fixture!("ec_p256_public.pem").into()),
                ),
                issuer(
                    ED_ISS,
                    IssuerKey::PublicKeyPem(fixture!("ed25519_public.pem").into()),
                ),
                issuer(JWKS_ISS, IssuerKey::JwksUrl(serve_jwks())),
            ],
        )
        .expect("the fuzzing key set is valid");
        // Fetched once at NOW: verifying at NOW never refetches (the refetch interval
        // has not passed), so no input costs network I/O.
        runtime.block_on(tokens.prefetch_jwks(NOW));
        let own_key = EncodingKey::from_ed_der(&own.private_der);
        let setup = Setup {
            runtime,
            tokens,
            own_key,
            own_kid: own.kid,
        };
        // The key set works: a genuine token of every issuer verifies.
        for signer in Signer::ALL {
            let Some(iss) = signer.issuer() else { continue };
            let mut claims =
                json!({"iss": iss, "aud": aud_of(iss), "sub": "alice", "exp": NOW + 60});
            if iss == OWN_ISS {
                claims["sid"] = json!("s");
                claims["prev"] = json!(1);
            }
            let alg = signer.default_alg();
            let header = json!({"alg": format!("{alg:?}"), "kid": signer.kid(&setup)});
            let token = sign(
                &setup,
                signer,
                alg,
                header.to_string().as_bytes(),
                claims.to_string().as_bytes(),
            );
            let verified = setup.runtime.block_on(setup.tokens.verify(&token, NOW));
            assert!(verified.is_ok(), "{signer:?}: {verified:?}");
        }
        setup
    })
}

/// Serves a JWK Set (EC P-384 `p384`, RSA `rsa2`) on a loopback port; returns its URL.
fn serve_jwks() -> String {
    let all: Value = serde_json::from_str(fixture!("public_jwks.json")).unwrap();
    let mut p384 = all["ec_p384"].clone();
    p384["kid"] = json!("p384");
    p384["use"] = json!("sig");
    let mut rsa2 = all["rsa_other"].clone();
    rsa2["kid"] = json!("rsa2");
    let body = json!({ "keys": [p384, rsa2] }).to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum Signer {
    Own,
    Hs,
    /// An HMAC secret no issuer has.
    OtherHs,
    Rsa,
    /// The JWKS issuer's RSA key.
    RsaOther,
    EcP256,
    /// The JWKS issuer's EC key.
    EcP384,
    Ed,
}

impl Signer {
    const ALL: [Signer; 8] = [
        Signer::Own,
        Signer::Hs,
        Signer::OtherHs,
        Signer::Rsa,
        Signer::RsaOther,
        Signer::EcP256,
        Signer::EcP384,
        Signer::Ed,
    ];

    /// The only issuer a token signed with this key may verify as.
    fn issuer(self) -> Option<&'static str> {
        match self {
            Signer::Own => Some(OWN_ISS),
            Signer::Hs => Some(HS_ISS),
            Signer::OtherHs => None,
            Signer::Rsa => Some(RSA_ISS),
            Signer::RsaOther | Signer::EcP384 => Some(JWKS_ISS),
            Signer::EcP256 => Some(EC_ISS),
            Signer::Ed => Some(ED_ISS),
        }
    }

    fn family(self) -> &'static [Algorithm] {
        use Algorithm::*;
        match self {
            Signer::Own | Signer::Ed => &[EdDSA],
            Signer::Hs | Signer::OtherHs => &[HS256, HS384, HS512],
            Signer::Rsa | Signer::RsaOther => &[RS256, RS384, RS512, PS256, PS384, PS512],
            Signer::EcP256 => &[ES256],
            Signer::EcP384 => &[ES384],
        }
    }

    fn default_alg(self) -> Algorithm {
        self.family()[0]
    }

    fn kid(self, setup: &Setup) -> &str {
        match self {
            Signer::Own => &setup.own_kid,
            Signer::RsaOther => "rsa2",
            Signer::EcP384 => "p384",
            _ => "k",
        }
    }

    fn key(self, setup: &Setup) -> EncodingKey {
        match self {
            Signer::Own => setup.own_key.clone(),
            Signer::Hs => EncodingKey::from_secret(HS_SECRET.as_bytes()),
            Signer::OtherHs => EncodingKey::from_secret(OTHER_SECRET.as_bytes()),
            Signer::Rsa => {
                EncodingKey::from_rsa_pem(fixture!("rsa_private.pem").as_bytes()).unwrap()
            }
            Signer::RsaOther => {
                EncodingKey::from_rsa_pem(fixture!("rsa_other_private.pem").as_bytes()).unwrap()
            }
            Signer::EcP256 => {
                EncodingKey::from_ec_pem(fixture!("ec_p256_private.pem").as_bytes()).unwrap()
            }
            Signer::EcP384 => {
                EncodingKey::from_ec_pem(fixture!("ec_p384_private.pem").as_bytes()).unwrap()
            }
            Signer::Ed => {
                EncodingKey::from_ed_pem(fixture!("ed25519_private.pem").as_bytes()).unwrap()
            }
        }
    }
}

/// The algorithms `iss` accepts for a token with this `kid`.
fn allowed(iss: &str, kid: Option<&str>) -> &'static [Algorithm] {
    use Algorithm::*;
    match (iss, kid) {
        (OWN_ISS | ED_ISS, _) => &[EdDSA],
        (HS_ISS, _) => &[HS256],
        (RSA_ISS, _) | (JWKS_ISS, Some("rsa2")) => &[RS256, RS384, RS512, PS256, PS384, PS512],
        (EC_ISS, _) => &[ES256],
        (JWKS_ISS, Some("p384")) => &[ES384],
        _ => &[],
    }
}

fn aud_of(iss: &str) -> &'static str {
    if iss == OWN_ISS {
        OWN_AUD
    } else {
        AUD
    }
}

#[derive(Arbitrary, Debug)]
enum Input {
    /// Any text as the bearer token.
    Raw(String),
    /// Any header and payload bytes, signed for real.
    Signed {
        signer: Signer,
        header: Vec<u8>,
        payload: Vec<u8>,
    },
    /// A header and claims built from the names and values that matter.
    Built {
        signer: Signer,
        header: Header,
        claims: Claims,
        signature: Signature,
    },
}

#[derive(Arbitrary, Debug)]
enum Signature {
    Real,
    Empty,
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Header {
    alg: Option<AlgName>,
    kid: Option<Kid>,
    typ: Option<Json>,
    crit: Option<Json>,
    extra: Vec<(String, Json)>,
}

#[derive(Arbitrary, Debug)]
enum AlgName {
    Real(u8),
    None,
    NoneUpper,
    Lowercase(u8),
    Other(Json),
}

#[derive(Arbitrary, Debug)]
enum Kid {
    /// The signer's own key id.
    Signer,
    Own,
    P384,
    Rsa2,
    Other(Json),
}

#[derive(Arbitrary, Debug)]
struct Claims {
    iss: Option<Iss>,
    aud: Option<Aud>,
    sub: Option<Json>,
    exp: Option<Time>,
    nbf: Option<Time>,
    iat: Option<Time>,
    sid: Option<Json>,
    prev: Option<Json>,
    jti: Option<Json>,
    extra: Vec<(String, Json)>,
}

#[derive(Arbitrary, Debug)]
enum Iss {
    /// The issuer of the signer's key.
    Signer,
    Own,
    Hs,
    Rsa,
    Ec,
    Ed,
    Jwks,
    /// An issuer in an array, which RFC 7519 does not allow.
    InArray,
    Other(Json),
}

#[derive(Arbitrary, Debug)]
enum Aud {
    /// The audience of the token's issuer.
    Right,
    Own,
    External,
    List(Vec<Aud>),
    Other(Json),
}

#[derive(Arbitrary, Debug)]
enum Time {
    /// NOW plus this many seconds.
    Offset(i16),
    Float(f64),
    Other(Json),
}

#[derive(Arbitrary, Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => json!(b),
            Json::Int(i) => json!(i),
            Json::Uint(u) => json!(u),
            Json::Float(f) => json!(f),
            Json::Str(s) => json!(s),
            Json::Array(items) => Value::Array(items.iter().map(Json::value).collect()),
            Json::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.clone(), v.value()))
                    .collect(),
            ),
        }
    }
}

const ALGS: [Algorithm; 12] = {
    use Algorithm::*;
    [
        HS256, HS384, HS512, ES256, ES384, RS256, RS384, RS512, PS256, PS384, PS512, EdDSA,
    ]
};

fn header_json(h: &Header, signer: Signer, setup: &Setup) -> Value {
    let mut map = Map::new();
    for (k, v) in &h.extra {
        map.insert(k.clone(), v.value());
    }
    match &h.alg {
        None => {}
        Some(AlgName::Real(i)) => {
            map.insert(
                "alg".into(),
                json!(format!("{:?}", ALGS[*i as usize % ALGS.len()])),
            );
        }
        Some(AlgName::None) => {
            map.insert("alg".into(), json!("none"));
        }
        Some(AlgName::NoneUpper) => {
            map.insert("alg".into(), json!("NONE"));
        }
        Some(AlgName::Lowercase(i)) => {
            let name = format!("{:?}", ALGS[*i as usize % ALGS.len()]).to_lowercase();
            map.insert("alg".into(), json!(name));
        }
        Some(AlgName::Other(v)) => {
            map.insert("alg".into(), v.value());
        }
    }
    match &h.kid {
        None => {}
        Some(kid) => {
            let value = match kid {
                Kid::Signer => json!(signer.kid(setup)),
                Kid::Own => json!(setup.own_kid),
                Kid::P384 => json!("p384"),
                Kid::Rsa2 => json!("rsa2"),
                Kid::Other(v) => v.value(),
            };
            map.insert("kid".into(), value);
        }
    }
    if let Some(typ) = &h.typ {
        map.insert("typ".into(), typ.value());
    }
    if let Some(crit) = &h.crit {
        map.insert("crit".into(), crit.value());
    }
    Value::Object(map)
}

fn claims_json(c: &Claims, signer: Signer) -> Value {
    let mut map = Map::new();
    for (k, v) in &c.extra {
        map.insert(k.clone(), v.value());
    }
    let iss = c.iss.as_ref().map(|iss| match iss {
        Iss::Signer => json!(signer.issuer().unwrap_or(HS_ISS)),
        Iss::Own => json!(OWN_ISS),
        Iss::Hs => json!(HS_ISS),
        Iss::Rsa => json!(RSA_ISS),
        Iss::Ec => json!(EC_ISS),
        Iss::Ed => json!(ED_ISS),
        Iss::Jwks => json!(JWKS_ISS),
        Iss::InArray => json!([signer.issuer().unwrap_or(HS_ISS)]),
        Iss::Other(v) => v.value(),
    });
    let iss_str = iss
        .as_ref()
        .and_then(Value::as_str)
        .unwrap_or(HS_ISS)
        .to_owned();
    fn aud(a: &Aud, iss: &str) -> Value {
        match a {
            Aud::Right => json!(aud_of(iss)),
            Aud::Own => json!(OWN_AUD),
            Aud::External => json!(AUD),
            Aud::List(items) => Value::Array(items.iter().map(|a| aud(a, iss)).collect()),
            Aud::Other(v) => v.value(),
        }
    }
    let time = |t: &Time| match t {
        Time::Offset(secs) => json!(NOW + i64::from(*secs)),
        Time::Float(f) => json!(f),
        Time::Other(v) => v.value(),
    };
    let fields = [
        ("iss", iss),
        ("aud", c.aud.as_ref().map(|a| aud(a, &iss_str))),
        ("sub", c.sub.as_ref().map(Json::value)),
        ("exp", c.exp.as_ref().map(time)),
        ("nbf", c.nbf.as_ref().map(time)),
        ("iat", c.iat.as_ref().map(time)),
        ("sid", c.sid.as_ref().map(Json::value)),
        ("prev", c.prev.as_ref().map(Json::value)),
        ("jti", c.jti.as_ref().map(Json::value)),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            map.insert(name.into(), value);
        }
    }
    Value::Object(map)
}

/// The algorithm a signer uses for a header: the header's own, when the key can make
/// it, else the key's usual one (so the header may lie about it).
fn signing_alg(signer: Signer, header: &[u8]) -> Algorithm {
    serde_json::from_slice::<Value>(header)
        .ok()
        .and_then(|h| h.get("alg")?.as_str().map(str::to_owned))
        .and_then(|name| {
            signer
                .family()
                .iter()
                .copied()
                .find(|a| format!("{a:?}") == name)
        })
        .unwrap_or(signer.default_alg())
}

fn sign(setup: &Setup, signer: Signer, alg: Algorithm, header: &[u8], payload: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &signer.key(setup), alg)
        .expect("every key signs with its own family");
    format!("{message}.{signature}")
}

fuzz_target!(|input: Input| {
    let setup = setup();
    // (the token, who really signed it and with which algorithm, whether its
    // signature is that real one)
    let (token, signed_by) = match &input {
        Input::Raw(text) => (text.clone(), None),
        Input::Signed {
            signer,
            header,
            payload,
        } => {
            let alg = signing_alg(*signer, header);
            (
                sign(setup, *signer, alg, header, payload),
                Some((*signer, alg)),
            )
        }
        Input::Built {
            signer,
            header,
            claims,
            signature,
        } => {
            let header = header_json(header, *signer, setup).to_string();
            let payload = claims_json(claims, *signer).to_string();
            let alg = signing_alg(*signer, header.as_bytes());
            let real = sign(setup, *signer, alg, header.as_bytes(), payload.as_bytes());
            match signature {
                Signature::Real => (real, Some((*signer, alg))),
                Signature::Empty => (real[..real.rfind('.').unwrap() + 1].to_owned(), None),
                Signature::Bytes(bytes) => {
                    let unsigned = &real[..real.rfind('.').unwrap() + 1];
                    let token = format!("{unsigned}{}", URL_SAFE_NO_PAD.encode(bytes));
                    // Only the real signature verifies; anything else is a forgery.
                    if token == real {
                        (token, Some((*signer, alg)))
                    } else {
                        (token, None)
                    }
                }
            }
        }
    };
    let result = setup.runtime.block_on(setup.tokens.verify(&token, NOW));
    match result {
        Err(e) => {
            if token.len() > MAX_TOKEN_BYTES {
                assert_eq!(e.kind, TokenErrorKind::TooLarge);
            }
            // It goes into a WWW-Authenticate header verbatim.
            assert!(e
                .description
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' || b == b' '));
        }
        Ok(verified) => {
            check_rules(&token, &verified);
            if matches!(input, Input::Raw(_)) {
                return;
            }
            let Some((signer, alg)) = signed_by else {
                panic!("a token with a made-up signature verified: {verified:?}");
            };
            assert_eq!(
                signer.issuer(),
                Some(verified.iss.as_str()),
                "verified as another issuer's"
            );
            let header = decode(&token, 0);
            let kid = header.get("kid").and_then(Value::as_str);
            assert!(
                allowed(&verified.iss, kid).contains(&alg),
                "{alg:?} for {}",
                verified.iss
            );
            assert_eq!(header["alg"].as_str(), Some(format!("{alg:?}").as_str()));
        }
    }
});

/// PROTOCOL §3, checked on the raw token of a token that verified.
fn check_rules(token: &str, v: &Verified) {
    assert!(token.len() <= MAX_TOKEN_BYTES);
    let header = decode(token, 0);
    let claims = decode(token, 1);
    let alg = header["alg"].as_str().expect("alg is a string");
    assert!(!alg.eq_ignore_ascii_case("none"));
    assert!(!header.contains_key("crit"));
    let iss = claims["iss"].as_str().expect("iss is a string");
    assert_eq!(iss, v.iss);
    assert!([OWN_ISS, HS_ISS, RSA_ISS, EC_ISS, ED_ISS, JWKS_ISS].contains(&iss));
    assert!(allowed(iss, header.get("kid").and_then(Value::as_str))
        .iter()
        .any(|a| format!("{a:?}") == alg));
    let want_aud = aud_of(iss);
    let aud_ok = match &claims["aud"] {
        Value::String(aud) => aud == want_aud,
        Value::Array(auds) => auds.iter().any(|a| a.as_str() == Some(want_aud)),
        _ => false,
    };
    assert!(aud_ok, "aud {:?} for {iss}", claims["aud"]);
    let exp = numeric(&claims["exp"]).expect("exp is numeric");
    assert_eq!(exp, v.exp);
    assert!(
        NOW <= exp.saturating_add(CLOCK_LEEWAY_SECS),
        "expired: {exp}"
    );
    if let Some(nbf) = claims.get("nbf") {
        let nbf = numeric(nbf).expect("nbf is numeric");
        assert!(nbf <= NOW + CLOCK_LEEWAY_SECS, "not yet valid: {nbf}");
    }
    let sub = claims["sub"].as_str().expect("sub is a string");
    assert!(!sub.is_empty());
    assert_eq!(sub, v.sub);
    assert_eq!(v.own, iss == OWN_ISS);
    if v.own {
        assert_eq!(v.sid.as_deref(), Some(claims["sid"].as_str().expect("sid")));
        assert_eq!(v.prev, Some(claims["prev"].as_u64().expect("prev")));
        assert_eq!(alg, "EdDSA");
    } else {
        assert_eq!((v.sid.as_ref(), v.prev), (None, None));
    }
}

fn decode(token: &str, segment: usize) -> Map<String, Value> {
    let part = token.split('.').nth(segment).unwrap();
    match serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap() {
        Value::Object(map) => map,
        other => panic!("segment {segment} is {other}"),
    }
}

/// A NumericDate as whole seconds, saturating (RFC 7519 allows fractions).
fn numeric(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|_| i64::MAX))
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        _ => None,
    }
}
