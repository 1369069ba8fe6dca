//! A bounded cache of tokens that passed signature verification, so a client that
//! sends the same access token on every request pays for one signature check, not
//! one per request. Entries are keyed by the whole token (never a hash of it: a
//! collision must not let a forged token through), re-checked against `exp` with
//! the verifier's leeway, and kept at most a minute so key removals take effect.
//! Session and staleness rules are applied on every request, after the cache.
//!
//! A hit costs no allocation: entries are shared ([`Arc`]) and carry the user id
//! parsed once, and the map hashes only the end of a token (see [`TokenHash`]).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use permsync_auth::{Verified, CLOCK_LEEWAY_SECS};
use permsync_core::UserId;

/// How many tokens are kept; past this the cache starts over.
const CAPACITY: usize = 20_000;
/// How long a verification is trusted without checking the signature again.
const TRUST_FOR: Duration = Duration::from_secs(60);

/// A token that passed signature verification.
pub struct Trusted {
    pub verified: Verified,
    /// `sub` as a user id; `None` when it is not a valid one.
    pub user: Option<UserId>,
}

/// Token → the verification and when it was made.
type Entries = HashMap<Box<str>, (Arc<Trusted>, Instant), TokenHash>;

#[derive(Default)]
pub struct VerifiedTokens {
    map: Mutex<Entries>,
}

impl VerifiedTokens {
    pub fn get(&self, token: &str, now_unix_secs: i64) -> Option<Arc<Trusted>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let (t, at) = map.get(token)?;
        (at.elapsed() < TRUST_FOR && now_unix_secs <= t.verified.exp + CLOCK_LEEWAY_SECS)
            .then(|| t.clone())
    }

    /// Remembers a verified token; returns the entry, for the caller to use.
    pub fn insert(&self, token: &str, verified: Verified) -> Arc<Trusted> {
        let trusted = Arc::new(Trusted {
            user: UserId::parse(&verified.sub).ok(),
            verified,
        });
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CAPACITY {
            // Starting over is simpler than LRU and costs one verification per live token.
            map.clear();
        }
        map.insert(token.into(), (trusted.clone(), Instant::now()));
        trusted
    }
}

/// How many bytes at the end of a token are hashed.
const HASHED_TAIL: usize = 32;

/// Hashes a token's length and its last [`HASHED_TAIL`] bytes, with a random key,
/// instead of all of it (access tokens run to hundreds of bytes). A JWT ends in
/// its signature, so tokens differ there. Lookups still compare whole tokens: a
/// shared tail costs a longer probe, never a wrong answer; and only tokens that
/// passed verification are ever stored, so nobody can fill the map with
/// colliding ones.
#[derive(Clone, Default)]
struct TokenHash(RandomState);

impl BuildHasher for TokenHash {
    type Hasher = TailHasher;

    fn build_hasher(&self) -> TailHasher {
        TailHasher(self.0.build_hasher())
    }
}

struct TailHasher(std::collections::hash_map::DefaultHasher);

impl Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write_usize(bytes.len());
        self.0
            .write(&bytes[bytes.len().saturating_sub(HASHED_TAIL)..]);
    }

    fn write_u8(&mut self, i: u8) {
        self.0.write_u8(i);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(sub: &str, exp: i64) -> Verified {
        Verified {
            iss: "permsync".into(),
            sub: sub.into(),
            sid: None,
            prev: None,
            exp,
            iat: None,
            jti: None,
            own: true,
        }
    }

    #[test]
    fn tokens_with_the_same_tail_stay_apart() {
        let cache = VerifiedTokens::default();
        let tail = "x".repeat(HASHED_TAIL * 2);
        let (a, b) = (format!("a{tail}"), format!("b{tail}"));
        cache.insert(&a, verified("alice", 100));
        assert!(cache.get(&b, 0).is_none());
        cache.insert(&b, verified("bob", 100));
        let got = |t: &str| cache.get(t, 0).map(|t| t.verified.sub.clone());
        assert_eq!(got(&a).as_deref(), Some("alice"));
        assert_eq!(got(&b).as_deref(), Some("bob"));
        assert_eq!(got("short").as_deref(), None);
    }

    #[test]
    fn expired_and_invalid_subjects() {
        let cache = VerifiedTokens::default();
        let t = cache.insert("tok", verified("not a user id", 100));
        assert!(t.user.is_none());
        assert!(cache.get("tok", 100 + CLOCK_LEEWAY_SECS).is_some());
        assert!(cache.get("tok", 101 + CLOCK_LEEWAY_SECS).is_none());
        let t = cache.insert("tok2", verified("alice", 100));
        assert_eq!(t.user.as_ref().map(|u| u.as_str()), Some("alice"));
    }
}
