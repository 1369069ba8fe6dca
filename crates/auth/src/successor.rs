//! Sealing a refresh token's successor so that only the holder of the rotated
//! token can read it back.
//!
//! When tabs refresh with one refresh token at the same moment, the first
//! presentation rotates it and the others, within a short grace window, must get
//! the same successor. The store keeps refresh tokens only as hashes, so it cannot
//! hand the successor back by itself, and storing it in the clear would make the
//! database reveal a live refresh token. Instead the successor is stored sealed
//! (AES-256-GCM) under a key derived (HKDF-SHA256) from the rotated token: whoever
//! presents that token can open it, and the database alone opens nothing.

use rand::rngs::OsRng;
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf::{Salt, HKDF_SHA256};

/// Fixed HKDF salt and info: keys derived here are for this use only.
const SALT: &[u8] = b"permsync refresh-token successor";
const INFO: &[u8] = b"aes-256-gcm v1";

fn key_of(presented: &str) -> LessSafeKey {
    let prk = Salt::new(HKDF_SHA256, SALT).extract(presented.as_bytes());
    let okm = prk
        .expand(&[INFO], &AES_256_GCM)
        .expect("32 bytes are within HKDF-SHA256's output limit");
    LessSafeKey::new(UnboundKey::from(okm))
}

/// Seals `successor` under a key derived from `presented`, the token it replaces:
/// a random nonce, then the ciphertext and its tag.
pub fn seal_successor(presented: &str, successor: &str) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let mut sealed = Vec::with_capacity(NONCE_LEN + successor.len() + AES_256_GCM.tag_len());
    sealed.extend_from_slice(&nonce);
    let mut body = successor.as_bytes().to_vec();
    key_of(presented)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut body)
        .expect("a refresh token is far below AES-GCM's length limit");
    sealed.extend_from_slice(&body);
    sealed
}

/// Opens what [`seal_successor`] sealed; `None` unless `presented` is the token it
/// was sealed for and `sealed` is intact.
pub fn open_successor(presented: &str, sealed: &[u8]) -> Option<String> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut body = body.to_vec();
    let plain = key_of(presented)
        .open_in_place(nonce, Aad::empty(), &mut body)
        .ok()?;
    String::from_utf8(plain.to_vec()).ok()
}
