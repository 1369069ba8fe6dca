//! A bounded cache of tokens that passed signature verification, so a client that
//! sends the same access token on every request pays for one signature check, not
//! one per request. Entries are keyed by the whole token (never a hash of it: a
//! collision must not let a forged token through), re-checked against `exp` with
//! the verifier's leeway, and kept at most a minute so key removals take effect.
//! Session and staleness rules are applied on every request, after the cache.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use permsync_auth::{Verified, CLOCK_LEEWAY_SECS};

/// How many tokens are kept; past this the cache starts over.
const CAPACITY: usize = 20_000;
/// How long a verification is trusted without checking the signature again.
const TRUST_FOR: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct VerifiedTokens {
    map: Mutex<HashMap<Box<str>, (Verified, Instant)>>,
}

impl VerifiedTokens {
    pub fn get(&self, token: &str, now_unix_secs: i64) -> Option<Verified> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let (v, at) = map.get(token)?;
        (at.elapsed() < TRUST_FOR && now_unix_secs <= v.exp + CLOCK_LEEWAY_SECS).then(|| v.clone())
    }

    pub fn insert(&self, token: &str, verified: &Verified) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CAPACITY {
            // Starting over is simpler than LRU and costs one verification per live token.
            map.clear();
        }
        map.insert(token.into(), (verified.clone(), Instant::now()));
    }
}
