//! Abuse limits: a per-address rate limit on unauthenticated endpoints, and
//! counting of failed logins per username and per address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

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

    /// `Err(seconds to wait)` while any of `keys` has too many recent failures.
    pub fn check_login(&self, keys: &[&str]) -> Result<(), u64> {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for key in keys {
            if let Some((count, since)) = map.get(*key) {
                let elapsed = since.elapsed();
                if *count >= self.failures_allowed && elapsed < self.failure_window {
                    return Err((self.failure_window - elapsed).as_secs().max(1));
                }
            }
        }
        Ok(())
    }

    pub fn record_login_failure(&self, keys: &[&str]) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            let window = self.failure_window;
            map.retain(|_, (_, since)| since.elapsed() < window);
        }
        for key in keys {
            let entry = map.entry(key.to_string()).or_insert((0, Instant::now()));
            if entry.1.elapsed() >= self.failure_window {
                *entry = (0, Instant::now());
            }
            entry.0 += 1;
        }
    }

    pub fn clear_login_failures(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}
