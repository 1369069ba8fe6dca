//! Shared fixtures: test keys, token builders, and a tiny JWKS server on loopback.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use permsync_auth::{ExternalIssuer, IssuerKey, KeyMaterial, TokenErrorKind, Tokens};
use ring::signature::Ed25519KeyPair;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The fixed "current time" of every test, in Unix seconds.
pub const NOW: i64 = 1_700_000_000;
pub const OWN_ISS: &str = "https://permsync.test";
pub const OWN_AUD: &str = "permsync";
pub const HS_ISS: &str = "https://hs.idp.test";
pub const HS_SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";
pub const AUD: &str = "permsync-api";

pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// One public JWK from `public_jwks.json`, e.g. `jwk("rsa")`.
pub fn jwk(name: &str) -> Value {
    let all: Value = serde_json::from_str(&fixture("public_jwks.json")).unwrap();
    all[name].clone()
}

/// Standard claims for an external token: valid at [`NOW`] for five minutes.
pub fn claims(iss: &str, aud: &str) -> Value {
    json!({ "iss": iss, "aud": aud, "sub": "alice", "iat": NOW, "exp": NOW + 300 })
}

pub fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

pub fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(fixture("rsa_private.pem").as_bytes()).unwrap()
}

pub fn rsa_other_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(fixture("rsa_other_private.pem").as_bytes()).unwrap()
}

pub fn ec_p256_key() -> EncodingKey {
    EncodingKey::from_ec_pem(fixture("ec_p256_private.pem").as_bytes()).unwrap()
}

pub fn ec_p384_key() -> EncodingKey {
    EncodingKey::from_ec_pem(fixture("ec_p384_private.pem").as_bytes()).unwrap()
}

pub fn ed_key() -> EncodingKey {
    EncodingKey::from_ed_pem(fixture("ed25519_private.pem").as_bytes()).unwrap()
}

pub fn hs_key() -> EncodingKey {
    EncodingKey::from_secret(HS_SECRET.as_bytes())
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs arbitrary header and payload JSON with an Ed25519 key, bypassing every
/// library check, to build tokens a well-behaved signer would never produce.
pub fn sign_ed25519_raw(key: &KeyMaterial, header: &Value, payload: &Value) -> String {
    let pair = Ed25519KeyPair::from_pkcs8(&key.private_der).unwrap();
    let message = format!("{}.{}", b64(header.to_string()), b64(payload.to_string()));
    let signature = pair.sign(message.as_bytes());
    format!("{message}.{}", b64(signature.as_ref()))
}

/// A token with the given header and payload and an arbitrary signature.
pub fn unsigned(header: &Value, payload: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string()),
        b64(payload.to_string())
    )
}

pub fn issuer(iss: &str, key: IssuerKey) -> ExternalIssuer {
    ExternalIssuer {
        iss: iss.to_owned(),
        aud: AUD.to_owned(),
        key,
    }
}

pub fn hs_issuer() -> ExternalIssuer {
    issuer(HS_ISS, IssuerKey::Hs256Secret(HS_SECRET.to_owned()))
}

pub fn tokens_with(keys: Vec<KeyMaterial>, external: Vec<ExternalIssuer>) -> Tokens {
    Tokens::new(keys, OWN_ISS.to_owned(), OWN_AUD.to_owned(), external).unwrap()
}

/// Verifies and expects a rejection of exactly `kind`.
pub async fn rejects(tokens: &Tokens, token: &str, kind: TokenErrorKind) {
    rejects_at(tokens, token, NOW, kind).await;
}

pub async fn rejects_at(tokens: &Tokens, token: &str, now: i64, kind: TokenErrorKind) {
    match tokens.verify(token, now).await {
        Ok(verified) => panic!("expected {kind:?}, but the token verified: {verified:?}"),
        Err(error) => {
            assert_eq!(error.kind, kind, "wrong rejection reason for {token}");
            assert_eq!(error.description, kind.description());
        }
    }
}

/// A JWKS endpoint on 127.0.0.1 that answers every request with the current body and
/// status, and counts the requests.
pub struct JwksServer {
    pub url: String,
    fetches: Arc<AtomicUsize>,
    response: Arc<Mutex<(u16, String)>>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(keys: Vec<Value>) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let fetches = Arc::new(AtomicUsize::new(0));
        let response = Arc::new(Mutex::new((200, json!({ "keys": keys }).to_string())));
        let accept_loop = tokio::spawn({
            let fetches = Arc::clone(&fetches);
            let response = Arc::clone(&response);
            async move {
                loop {
                    let Ok((mut socket, _)) = listener.accept().await else {
                        return;
                    };
                    let fetches = Arc::clone(&fetches);
                    let response = Arc::clone(&response);
                    tokio::spawn(async move {
                        // Read until the end of the request head; JWKS requests have no body.
                        let mut head = Vec::new();
                        let mut buffer = [0u8; 1024];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match socket.read(&mut buffer).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buffer[..n]),
                            }
                        }
                        fetches.fetch_add(1, Ordering::SeqCst);
                        let (status, body) = response.lock().unwrap().clone();
                        let reply = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = socket.write_all(reply.as_bytes()).await;
                        let _ = socket.shutdown().await;
                    });
                }
            }
        });
        JwksServer {
            url,
            fetches,
            response,
            accept_loop,
        }
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    pub fn set_keys(&self, keys: Vec<Value>) {
        *self.response.lock().unwrap() = (200, json!({ "keys": keys }).to_string());
    }

    pub fn set_response(&self, status: u16, body: &str) {
        *self.response.lock().unwrap() = (status, body.to_owned());
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

/// `jwk(name)` with a `kid` (and any other members) added.
pub fn with(mut jwk: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        jwk[k] = v.clone();
    }
    jwk
}
