//! Abuse limits: a per-address rate limit on unauthenticated endpoints, counting
//! of failed logins per username and per address, and the bound on password
//! hashing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use permsync_auth::HashMemory;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::error::{ApiError, Code};
use crate::config::ServerConfig;

pub struct Limits {
    public: DefaultKeyedRateLimiter<IpAddr>,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
    failures_allowed: u32,
    failure_window: Duration,
}

impl Limits {
    pub fn new(config: &ServerConfig) -> Self {
        let rate = NonZeroU32::new(config.public_rate_per_sec.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = rate.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
        Limits {
            public: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            failures: Mutex::new(HashMap::new()),
            failures_allowed: config.login_failures_allowed.max(1),
            failure_window: config.login_failure_window,
        }
    }

    /// `Err(seconds to wait)` when this address has used its share.
    pub fn check_public(&self, addr: IpAddr) -> Result<(), u64> {
        self.public.check_key(&addr).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            wait.as_secs().max(1)
        })
    }

    /// Counts a login attempt as a failure of each of `keys` before the password
    /// is checked, so concurrent guesses cannot get past the limit while their
    /// hashes run; `Err(seconds to wait)` while any key has used its share. The
    /// attempt stays a failure unless [`LoginAttempt::succeeded`] or
    /// [`LoginAttempt::not_checked`] says otherwise.
    pub fn begin_login(&self, keys: &[&str]) -> Result<LoginAttempt<'_>, u64> {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.failure_window;
        for key in keys {
            if let Some((count, since)) = map.get(*key) {
                let elapsed = since.elapsed();
                if *count >= self.failures_allowed && elapsed < window {
                    return Err((window - elapsed).as_secs().max(1));
                }
            }
        }
        if map.len() > 100_000 {
            map.retain(|_, (_, since)| since.elapsed() < window);
        }
        let counted = keys
            .iter()
            .map(|key| {
                let entry = map.entry(key.to_string()).or_insert((0, Instant::now()));
                if entry.1.elapsed() >= window {
                    *entry = (0, Instant::now());
                }
                entry.0 += 1;
                (key.to_string(), entry.1)
            })
            .collect();
        Ok(LoginAttempt {
            limits: self,
            counted,
        })
    }

    /// Takes back the failures an attempt counted (those whose window is the
    /// same one), and forgets `clear` altogether.
    fn uncount(&self, counted: &[(String, Instant)], clear: Option<&str>) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for (key, since) in counted {
            if let Some(entry) = map.get_mut(key) {
                if entry.1 == *since {
                    entry.0 = entry.0.saturating_sub(1);
                }
            }
        }
        if let Some(key) = clear {
            map.remove(key);
        }
    }
}

/// A login attempt counted as a failure until told otherwise. Dropped without a
/// word (the client went away while its password was checked), it stays counted.
pub struct LoginAttempt<'a> {
    limits: &'a Limits,
    /// Each key counted, with the start of the window it was counted in.
    counted: Vec<(String, Instant)>,
}

impl LoginAttempt<'_> {
    /// The password was right: the attempt was no failure, and `key`'s earlier
    /// failures (the username's) are forgiven.
    pub fn succeeded(self, key: &str) {
        self.limits.uncount(&self.counted, Some(key));
    }

    /// The password was never checked (no hashing slot came free).
    pub fn not_checked(self) {
        self.limits.uncount(&self.counted, None);
    }
}

/// At most `max_concurrent_hashes` Argon2 computations at once: each needs a
/// 19 MiB work area, and more than two per core only queue for the CPU. A request
/// waits up to `hash_queue_timeout` for a slot, then gets 503. Each slot's work area
/// is kept and reused, so hashing never holds more than that many areas, however
/// many logins come (freed ones would stay with the allocator's per-thread arenas).
pub struct HashSlots {
    slots: Arc<Semaphore>,
    /// Work areas of slots not in use; at most one per slot exists.
    memory: Arc<Mutex<Vec<HashMemory>>>,
    wait: Duration,
}

impl HashSlots {
    pub fn new(config: &ServerConfig) -> Self {
        HashSlots {
            slots: Arc::new(Semaphore::new(config.max_concurrent_hashes.max(1))),
            memory: Arc::default(),
            wait: config.hash_queue_timeout,
        }
    }

    /// Runs `work` (a hash or a verification) in a slot's work area on the
    /// blocking pool, once a slot is free. The slot goes with the work, so a
    /// request given up by its client still holds it until the hash is done.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut HashMemory) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let slot = match tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => slot,
            // Timed out, or closed (never: the semaphore is not closed).
            _ => return Err(busy()),
        };
        let pool = self.memory.clone();
        tokio::task::spawn_blocking(move || {
            let _slot: OwnedSemaphorePermit = slot;
            let mut memory = pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop()
                .unwrap_or_default();
            let out = work(&mut memory);
            // Given back before the slot is released, so areas never outnumber slots.
            pool.lock().unwrap_or_else(|e| e.into_inner()).push(memory);
            out
        })
        .await
        .map_err(ApiError::internal)
    }
}

/// 503 with `Retry-After: 1`: every hashing slot stayed busy.
fn busy() -> ApiError {
    ApiError {
        retry_after: Some(1),
        ..ApiError::new(
            Code::Unavailable,
            "too many password checks at once; retry shortly",
        )
    }
}
