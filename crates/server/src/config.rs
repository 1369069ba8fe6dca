//! The server's settings, passed explicitly (never global). The binary builds them
//! from a TOML file, `PERMSYNC_*` variables and flags.

use std::time::Duration;

/// What to do with an access token issued before the user's latest permission change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StaleTokens {
    /// Accept it: revision headers and events keep the client fresh.
    #[default]
    Allow,
    /// Refuse it with 401 `stale_token`; the client refreshes and retries.
    Reject,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub stale_tokens: StaleTokens,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// `iss` of the tokens permsync issues.
    pub issuer: String,
    /// `aud` of the tokens permsync issues.
    pub audience: String,
    /// Put the effective permissions into access tokens as `perms`.
    pub embed_permissions: bool,
    /// Allowed CORS origins; empty disables CORS.
    pub cors_origins: Vec<String>,
    pub external_issuers: Vec<permsync_auth::ExternalIssuer>,
    /// How often the changelog is polled for changes made by other processes (a
    /// backstop: the store's commit signal wakes the tail at once) and due
    /// expiries are committed.
    pub tail_interval: Duration,
    /// Requests per second per client address on unauthenticated endpoints.
    pub public_rate_per_sec: u32,
    /// Failed logins per username or address before 429.
    pub login_failures_allowed: u32,
    pub login_failure_window: Duration,
    /// How often an idle event stream gets a `: keepalive` comment (SSE).
    pub stream_keepalive: Duration,
    /// How often a WebSocket gets a ping frame and a `{"type":"ping"}` message.
    pub ws_ping_interval: Duration,
    /// Open event streams (SSE, WebSocket, changes) allowed per user; one more is 429.
    pub max_streams_per_user: usize,
    /// How long a stream ticket (`POST /v1/me/events/ticket`) stays redeemable.
    pub stream_ticket_ttl: Duration,
    /// Password hashes and verifications (login, user creation) run at once; more
    /// wait for a slot. Each takes about 19 MiB while it runs.
    pub max_concurrent_hashes: usize,
    /// How long a request waits for a hashing slot before 503 `unavailable`.
    pub hash_queue_timeout: Duration,
    /// A rotated refresh token presented again within this of its rotation, while
    /// its successor is current, is tabs refreshing together, not a theft: it gets
    /// the same successor. Zero makes every such presentation reuse.
    pub refresh_reuse_grace: Duration,
    /// Time limits and the cap on connections (the `[connections]` table).
    pub connections: Connections,
}

/// Two hashing slots per core: Argon2 keeps a core busy, so more at once only
/// cost memory.
pub fn default_max_concurrent_hashes() -> usize {
    2 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How long a connection may take for each of its steps, how many may be open,
/// and how long shutdown waits (protocol §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connections {
    /// A request head must have arrived this long after the connection opened
    /// (its first request) or after its first byte (later requests).
    pub header_timeout: Duration,
    /// A keep-alive connection with no request in flight closes after this long.
    pub idle_timeout: Duration,
    /// A request body must have arrived this long after its head.
    pub body_timeout: Duration,
    /// Connections served at once; `None` is 90 % of the open-file soft limit,
    /// read when serving starts. Over it, `/healthz` still answers 200 and every
    /// other request 503.
    pub max_connections: Option<usize>,
    /// After shutdown begins, requests in flight get this long; then every
    /// connection left is dropped and [`crate::run`] returns.
    pub shutdown_timeout: Duration,
    /// A socket that accepts no byte of a pending write for this long is
    /// closed (reset): streams and ordinary answers alike.
    pub stream_write_timeout: Duration,
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            max_connections: None,
            shutdown_timeout: Duration::from_secs(10),
            stream_write_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            stale_tokens: StaleTokens::Allow,
            access_token_ttl: Duration::from_secs(300),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            issuer: "permsync".into(),
            audience: "permsync".into(),
            embed_permissions: false,
            cors_origins: Vec::new(),
            external_issuers: Vec::new(),
            tail_interval: Duration::from_millis(200),
            public_rate_per_sec: 50,
            login_failures_allowed: 10,
            login_failure_window: Duration::from_secs(300),
            stream_keepalive: Duration::from_secs(15),
            ws_ping_interval: Duration::from_secs(15),
            max_streams_per_user: 16,
            stream_ticket_ttl: Duration::from_secs(30),
            max_concurrent_hashes: default_max_concurrent_hashes(),
            hash_queue_timeout: Duration::from_secs(5),
            refresh_reuse_grace: Duration::from_secs(5),
            connections: Connections::default(),
        }
    }
}
