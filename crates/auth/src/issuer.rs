//! External issuers: their configuration and the verification keys built from it.
//!
//! A key is always stored together with the algorithms it may verify, derived from
//! the key's own type. The token's `alg` only selects among those; it can never
//! widen them. That is the whole defence against algorithm confusion.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::error::ConfigError;
use crate::jwks::RemoteJwks;

/// How an external identity provider's tokens are verified.
#[derive(Clone, PartialEq, Eq)]
pub enum IssuerKey {
    /// A shared secret (at least 32 bytes) for HS256; no other algorithm is accepted.
    Hs256Secret(String),
    /// The text of one PEM public key: `PUBLIC KEY` (SPKI: RSA, EC P-256/P-384 or
    /// Ed25519) or `RSA PUBLIC KEY` (PKCS#1). Private keys and certificates are refused.
    PublicKeyPem(String),
    /// An `http(s)` URL serving a JWK Set; keys are fetched on first use and cached by
    /// `kid`, and tokens from this issuer must carry a `kid`.
    JwksUrl(String),
}

impl std::fmt::Debug for IssuerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IssuerKey::Hs256Secret(_) => f.write_str("Hs256Secret(<redacted>)"),
            IssuerKey::PublicKeyPem(pem) => f.debug_tuple("PublicKeyPem").field(pem).finish(),
            IssuerKey::JwksUrl(url) => f.debug_tuple("JwksUrl").field(url).finish(),
        }
    }
}

/// An identity provider whose tokens permsync accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIssuer {
    /// The exact `iss` its tokens carry; it selects this issuer.
    pub iss: String,
    /// The `aud` its tokens must carry (as the string or one element of the array).
    pub aud: String,
    /// Where its verification key comes from.
    pub key: IssuerKey,
}

/// A verification key with the algorithms it may be used with.
#[derive(Clone)]
pub(crate) struct VerifyKey {
    pub key: DecodingKey,
    pub algs: &'static [Algorithm],
}

pub(crate) const RSA_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
pub(crate) const ES256_ALGS: &[Algorithm] = &[Algorithm::ES256];
pub(crate) const ES384_ALGS: &[Algorithm] = &[Algorithm::ES384];
pub(crate) const EDDSA_ALGS: &[Algorithm] = &[Algorithm::EdDSA];
const HS256_ALGS: &[Algorithm] = &[Algorithm::HS256];

/// RFC 7518 §3.2: an HMAC key must be at least as long as the hash output.
const MIN_HS256_SECRET_BYTES: usize = 32;

/// A configured external issuer, ready to verify.
pub(crate) struct Issuer {
    pub aud: String,
    pub keys: IssuerKeys,
}

pub(crate) enum IssuerKeys {
    Static(VerifyKey),
    Remote(RemoteJwks),
}

impl Issuer {
    pub(crate) fn from_config(
        config: &ExternalIssuer,
        http: &reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let iss = &config.iss;
        if config.iss.is_empty() {
            return Err(ConfigError::EmptyField {
                iss: iss.clone(),
                what: "iss",
            });
        }
        if config.aud.is_empty() {
            return Err(ConfigError::EmptyField {
                iss: iss.clone(),
                what: "aud",
            });
        }
        let keys = match &config.key {
            IssuerKey::Hs256Secret(secret) => {
                if secret.len() < MIN_HS256_SECRET_BYTES {
                    return Err(ConfigError::WeakSecret {
                        iss: iss.clone(),
                        len: secret.len(),
                    });
                }
                IssuerKeys::Static(VerifyKey {
                    key: DecodingKey::from_secret(secret.as_bytes()),
                    algs: HS256_ALGS,
                })
            }
            IssuerKey::PublicKeyPem(pem) => {
                IssuerKeys::Static(parse_public_pem(pem).map_err(|reason| {
                    ConfigError::InvalidPem {
                        iss: iss.clone(),
                        reason,
                    }
                })?)
            }
            IssuerKey::JwksUrl(url) => IssuerKeys::Remote(RemoteJwks::new(iss, url, http.clone())?),
        };
        Ok(Issuer {
            aud: config.aud.clone(),
            keys,
        })
    }
}

/// Parses one PEM public key and derives its allowed algorithms from the key itself.
pub(crate) fn parse_public_pem(pem: &str) -> Result<VerifyKey, String> {
    let label = single_pem_label(pem)?;
    match label {
        "RSA PUBLIC KEY" => Ok(VerifyKey {
            key: DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| e.to_string())?,
            algs: RSA_ALGS,
        }),
        "PUBLIC KEY" => {
            let der = pem_body(pem)?;
            let (key, algs) = match spki_key_type(&der)? {
                SpkiKeyType::Rsa => (DecodingKey::from_rsa_pem(pem.as_bytes()), RSA_ALGS),
                SpkiKeyType::EcP256 => (DecodingKey::from_ec_pem(pem.as_bytes()), ES256_ALGS),
                SpkiKeyType::EcP384 => (DecodingKey::from_ec_pem(pem.as_bytes()), ES384_ALGS),
                SpkiKeyType::Ed25519 => (DecodingKey::from_ed_pem(pem.as_bytes()), EDDSA_ALGS),
            };
            Ok(VerifyKey {
                key: key.map_err(|e| format!("unreadable public key: {e}"))?,
                algs,
            })
        }
        "CERTIFICATE" => Err("a certificate is not accepted; configure its public key \
             (openssl x509 -pubkey -noout -in cert.pem)"
            .to_owned()),
        label if label.contains("PRIVATE KEY") => Err(format!(
            "the PEM holds a private key ({label}); configure the issuer's public key \
             (openssl pkey -pubout)"
        )),
        label => Err(format!(
            "unsupported PEM type {label:?}; expected PUBLIC KEY or RSA PUBLIC KEY"
        )),
    }
}

/// The label of the only PEM block in `pem`.
fn single_pem_label(pem: &str) -> Result<&str, String> {
    const BEGIN: &str = "-----BEGIN ";
    let mut blocks = pem.match_indices(BEGIN);
    let Some((start, _)) = blocks.next() else {
        return Err("not PEM text (no -----BEGIN line)".to_owned());
    };
    if blocks.next().is_some() {
        return Err("expected exactly one PEM block".to_owned());
    }
    let rest = &pem[start + BEGIN.len()..];
    let end = rest
        .find("-----")
        .ok_or_else(|| "unterminated -----BEGIN line".to_owned())?;
    Ok(&rest[..end])
}

/// The DER bytes of the only PEM block.
fn pem_body(pem: &str) -> Result<Vec<u8>, String> {
    let base64: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|line| !line.starts_with("-----BEGIN "))
        .skip(1)
        .take_while(|line| !line.starts_with("-----END "))
        .collect();
    STANDARD
        .decode(base64)
        .map_err(|_| "PEM body is not valid base64".to_owned())
}

#[derive(Debug, PartialEq, Eq)]
enum SpkiKeyType {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

// DER encodings (tag, length, value) of the object identifiers that matter here.
const OID_RSA_ENCRYPTION: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// Reads the algorithm identifier of a SubjectPublicKeyInfo:
/// `SEQUENCE { SEQUENCE { OID algorithm, parameters? }, BIT STRING key }`.
///
/// The curve of an EC key decides between ES256 and ES384, and `jsonwebtoken` does
/// not expose it, hence this small reader.
fn spki_key_type(der: &[u8]) -> Result<SpkiKeyType, String> {
    let malformed = || "malformed SubjectPublicKeyInfo".to_owned();
    let (outer, _) = der_element(der, 0x30).ok_or_else(malformed)?;
    let (algorithm, _) = der_element(outer, 0x30).ok_or_else(malformed)?;
    // Compared as whole elements (tag and length included), like the constants below.
    let (_, parameters) = der_element(algorithm, 0x06).ok_or_else(malformed)?;
    let oid = &algorithm[..algorithm.len() - parameters.len()];
    if oid == OID_RSA_ENCRYPTION {
        Ok(SpkiKeyType::Rsa)
    } else if oid == OID_ED25519 {
        Ok(SpkiKeyType::Ed25519)
    } else if oid == OID_EC_PUBLIC_KEY {
        if parameters == OID_P256 {
            Ok(SpkiKeyType::EcP256)
        } else if parameters == OID_P384 {
            Ok(SpkiKeyType::EcP384)
        } else {
            Err("unsupported elliptic curve; expected P-256 or P-384".to_owned())
        }
    } else {
        Err("unsupported public key algorithm; expected RSA, EC or Ed25519".to_owned())
    }
}

/// Reads one DER element with tag `tag` at the start of `input`; returns its value
/// and the bytes after it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len_byte, rest) = rest.split_first()?;
    let (len, rest) = if len_byte < 0x80 {
        (usize::from(len_byte), rest)
    } else {
        let count = usize::from(len_byte & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (len_bytes, rest) = rest.split_at(count);
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    Some(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_element_reads_short_and_long_lengths() {
        assert_eq!(
            der_element(&[0x30, 0x01, 0xaa, 0xbb], 0x30),
            Some((&[0xaa][..], &[0xbb][..]))
        );
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend(std::iter::repeat_n(7, 0x80));
        assert_eq!(
            der_element(&long, 0x04).map(|(v, r)| (v.len(), r.len())),
            Some((0x80, 0))
        );
        assert_eq!(der_element(&[0x30, 0x05, 0x00], 0x30), None);
        assert_eq!(der_element(&[0x31, 0x00], 0x30), None);
    }
}
