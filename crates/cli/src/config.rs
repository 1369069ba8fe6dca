//! The `serve` configuration: a TOML file, overridden by `PERMSYNC_*` variables,
//! overridden by flags. Unknown keys in the file are errors that name the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use permsync_auth::{ExternalIssuer, IssuerKey};
use permsync_server::{ServerConfig, StaleTokens};
use serde::Deserialize;

pub const DEFAULT_ADDR: &str = "127.0.0.1:7080";
pub const DEFAULT_DB: &str = "sqlite://permsync.db";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub addr: Option<String>,
    pub db: Option<String>,
    /// `"allow"` or `"reject"`.
    pub stale_tokens: Option<String>,
    /// Seconds.
    pub access_token_ttl: Option<u64>,
    /// Seconds.
    pub refresh_token_ttl: Option<u64>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub embed_permissions: Option<bool>,
    pub cors: Option<CorsConfig>,
    pub streams: Option<StreamsConfig>,
    pub connections: Option<ConnectionsConfig>,
    pub login: Option<LoginConfig>,
    /// Serve even when the database files are readable or writable by group or
    /// others (they hold the private signing keys).
    pub allow_readable_store: Option<bool>,
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
}

/// The `[connections]` table: time limits and the cap on connections. Seconds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsConfig {
    /// A request head must arrive within it (the first one after the
    /// connection opens, a later one after its first byte).
    pub header_timeout: Option<u64>,
    /// A keep-alive connection with no request in flight closes after it.
    pub idle_timeout: Option<u64>,
    /// A request body must arrive within it.
    pub body_timeout: Option<u64>,
    /// Connections served at once (default: 90 % of the open-file limit).
    pub max_connections: Option<usize>,
    /// After SIGTERM, requests in flight get this long; then the process exits.
    pub shutdown_timeout: Option<u64>,
    /// A socket that accepts no bytes of a pending write this long is closed.
    pub stream_write_timeout: Option<u64>,
}

/// The `[login]` table: password hashing and refresh settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// Password hashes computed at once (default: 2 × available cores).
    pub max_concurrent_hashes: Option<usize>,
    /// Seconds a login waits for a hashing slot before 503.
    pub hash_queue_timeout: Option<u64>,
    /// Seconds after a rotation in which the rotated refresh token is a race, not reuse.
    pub refresh_reuse_grace: Option<u64>,
}

/// The `[streams]` table: event stream settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsConfig {
    /// Seconds between `: keepalive` comments on an SSE stream.
    pub keepalive: Option<u64>,
    /// Seconds between WebSocket pings.
    pub ws_ping_interval: Option<u64>,
    /// Open event streams allowed per user; one more is 429.
    pub max_per_user: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    #[serde(default)]
    pub origins: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    pub iss: String,
    pub aud: String,
    pub hs256_secret: Option<String>,
    pub public_key_pem_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
}

impl FileConfig {
    pub fn read(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        FileConfig::parse(&text).with_context(|| format!("config file {}", path.display()))
    }

    /// Parses the text of a configuration file.
    pub fn parse(text: &str) -> anyhow::Result<FileConfig> {
        toml::from_str(text).map_err(|e| {
            // toml's message names the unknown or mistyped key but not where it is,
            // and is empty for some syntax errors (a key without a value): say where,
            // on one line like every other error.
            let what = match e.message().trim() {
                "" => "invalid TOML".to_owned(),
                message => message.replace('\n', "; "),
            };
            match e.span() {
                Some(span) => {
                    let before = text.get(..span.start).unwrap_or(text);
                    let line = before.matches('\n').count() + 1;
                    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
                    // The line itself, which names the key a type error is about.
                    let source: String = text
                        .lines()
                        .nth(line - 1)
                        .unwrap_or("")
                        .trim()
                        .chars()
                        .take(80)
                        .collect();
                    anyhow::anyhow!("line {line}, column {column}: {what} (in `{source}`)")
                }
                None => anyhow::anyhow!("{what}"),
            }
        })
    }
}

/// What flags and variables said; `None` where they were silent.
#[derive(Debug, Default)]
pub struct Overrides {
    pub addr: Option<String>,
    pub db: Option<String>,
    pub stale_tokens: Option<String>,
    pub access_token_ttl: Option<u64>,
    pub cors_origins: Option<Vec<String>>,
    pub embed_permissions: bool,
}

pub struct Resolved {
    pub addr: String,
    pub db: String,
    pub server: ServerConfig,
    pub allow_readable_store: bool,
}

pub fn resolve(file: FileConfig, over: Overrides) -> anyhow::Result<Resolved> {
    let stale_tokens = match over.stale_tokens.or(file.stale_tokens).as_deref() {
        None | Some("allow") => StaleTokens::Allow,
        Some("reject") => StaleTokens::Reject,
        Some(other) => bail!("stale_tokens must be \"allow\" or \"reject\", not {other:?}"),
    };
    let mut server = ServerConfig {
        stale_tokens,
        ..ServerConfig::default()
    };
    if let Some(ttl) = over.access_token_ttl.or(file.access_token_ttl) {
        if !(10..=86_400).contains(&ttl) {
            bail!("access_token_ttl must be between 10 and 86400 seconds");
        }
        server.access_token_ttl = Duration::from_secs(ttl);
    }
    if let Some(ttl) = file.refresh_token_ttl {
        server.refresh_token_ttl = Duration::from_secs(ttl.max(60));
    }
    if let Some(iss) = file.issuer {
        server.issuer = iss;
    }
    if let Some(aud) = file.audience {
        server.audience = aud;
    }
    server.embed_permissions = over.embed_permissions || file.embed_permissions.unwrap_or(false);
    server.cors_origins = over
        .cors_origins
        .unwrap_or_else(|| file.cors.map(|c| c.origins).unwrap_or_default());
    if let Some(streams) = file.streams {
        apply_streams(&mut server, streams)?;
    }
    if let Some(connections) = file.connections {
        apply_connections(&mut server, connections)?;
    }
    if let Some(login) = file.login {
        apply_login(&mut server, login)?;
    }
    for issuer in file.issuers {
        server.external_issuers.push(external_issuer(issuer)?);
    }
    Ok(Resolved {
        addr: over
            .addr
            .or(file.addr)
            .unwrap_or_else(|| DEFAULT_ADDR.to_string()),
        db: over
            .db
            .or(file.db)
            .unwrap_or_else(|| DEFAULT_DB.to_string()),
        server,
        allow_readable_store: file.allow_readable_store.unwrap_or(false),
    })
}

fn apply_login(server: &mut ServerConfig, c: LoginConfig) -> anyhow::Result<()> {
    if let Some(n) = c.max_concurrent_hashes {
        if !(1..=1024).contains(&n) {
            bail!("login.max_concurrent_hashes must be between 1 and 1024");
        }
        server.max_concurrent_hashes = n;
    }
    if let Some(secs) = c.hash_queue_timeout {
        if secs > 60 {
            bail!("login.hash_queue_timeout must be between 0 and 60 seconds");
        }
        server.hash_queue_timeout = Duration::from_secs(secs);
    }
    if let Some(secs) = c.refresh_reuse_grace {
        if secs > 60 {
            bail!("login.refresh_reuse_grace must be between 0 and 60 seconds");
        }
        server.refresh_reuse_grace = Duration::from_secs(secs);
    }
    Ok(())
}

/// The protocol promises a keepalive at least every 15 s, so that is the most.
const MAX_KEEPALIVE_SECS: u64 = 15;

fn apply_streams(server: &mut ServerConfig, c: StreamsConfig) -> anyhow::Result<()> {
    if let Some(secs) = c.keepalive {
        if !(1..=MAX_KEEPALIVE_SECS).contains(&secs) {
            bail!("streams.keepalive must be between 1 and {MAX_KEEPALIVE_SECS} seconds");
        }
        server.stream_keepalive = Duration::from_secs(secs);
    }
    if let Some(secs) = c.ws_ping_interval {
        if !(1..=60).contains(&secs) {
            bail!("streams.ws_ping_interval must be between 1 and 60 seconds");
        }
        server.ws_ping_interval = Duration::from_secs(secs);
    }
    if let Some(n) = c.max_per_user {
        if !(1..=1024).contains(&n) {
            bail!("streams.max_per_user must be between 1 and 1024");
        }
        server.max_streams_per_user = n;
    }
    Ok(())
}

fn apply_connections(server: &mut ServerConfig, c: ConnectionsConfig) -> anyhow::Result<()> {
    let limits = &mut server.connections;
    let seconds = |value: Option<u64>, key: &str, most: u64| -> anyhow::Result<Option<Duration>> {
        match value {
            None => Ok(None),
            Some(secs) if (1..=most).contains(&secs) => Ok(Some(Duration::from_secs(secs))),
            Some(_) => bail!("connections.{key} must be between 1 and {most} seconds"),
        }
    };
    if let Some(d) = seconds(c.header_timeout, "header_timeout", 300)? {
        limits.header_timeout = d;
    }
    if let Some(d) = seconds(c.idle_timeout, "idle_timeout", 3600)? {
        limits.idle_timeout = d;
    }
    if let Some(d) = seconds(c.body_timeout, "body_timeout", 600)? {
        limits.body_timeout = d;
    }
    if let Some(d) = seconds(c.shutdown_timeout, "shutdown_timeout", 600)? {
        limits.shutdown_timeout = d;
    }
    if let Some(d) = seconds(c.stream_write_timeout, "stream_write_timeout", 600)? {
        limits.stream_write_timeout = d;
    }
    if let Some(n) = c.max_connections {
        if n == 0 {
            bail!("connections.max_connections must be at least 1");
        }
        limits.max_connections = Some(n);
    }
    Ok(())
}

fn external_issuer(c: IssuerConfig) -> anyhow::Result<ExternalIssuer> {
    let key = match (c.hs256_secret, c.public_key_pem_file, c.jwks_url) {
        (Some(secret), None, None) => {
            if secret.len() < 32 {
                bail!("issuer {}: hs256_secret must be at least 32 bytes", c.iss);
            }
            IssuerKey::Hs256Secret(secret)
        }
        (None, Some(path), None) => IssuerKey::PublicKeyPem(
            std::fs::read_to_string(&path)
                .with_context(|| format!("issuer {}: reading {}", c.iss, path.display()))?,
        ),
        (None, None, Some(url)) => IssuerKey::JwksUrl(url),
        _ => bail!(
            "issuer {}: set exactly one of hs256_secret, public_key_pem_file, jwks_url",
            c.iss
        ),
    };
    Ok(ExternalIssuer {
        iss: c.iss,
        aud: c.aud,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_toml(text: &str) -> anyhow::Result<Resolved> {
        resolve(FileConfig::parse(text)?, Overrides::default())
    }

    #[test]
    fn syntax_errors_say_where_even_when_toml_gives_no_message() {
        // toml's own message for a key without a value is empty.
        let err = FileConfig::parse("stale_tokens = \"allow\"\nissuer = ").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2, column 10: invalid TOML (in `issuer =`)"
        );
        let err = FileConfig::parse("[streams]\nkeepalive_secs = 5\n").unwrap_err();
        let err = err.to_string();
        assert!(
            err.starts_with("line 2, column 1: unknown field `keepalive_secs`"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        let err = FileConfig::parse("[x").unwrap_err().to_string();
        assert!(
            err.starts_with("line 1, column 3: ") && err.lines().count() == 1,
            "{err}"
        );
    }

    #[test]
    fn stream_settings_come_from_the_streams_table() {
        let r = resolve_toml("[streams]\nkeepalive = 5\nws_ping_interval = 20\nmax_per_user = 4\n")
            .unwrap();
        assert_eq!(r.server.stream_keepalive, Duration::from_secs(5));
        assert_eq!(r.server.ws_ping_interval, Duration::from_secs(20));
        assert_eq!(r.server.max_streams_per_user, 4);
        let defaults = resolve_toml("").unwrap().server;
        assert_eq!(defaults.stream_keepalive, Duration::from_secs(15));
        assert_eq!(defaults.max_streams_per_user, 16);
    }

    #[test]
    fn connection_limits_come_from_the_connections_table() {
        let r = resolve_toml(
            "[connections]\nheader_timeout = 3\nidle_timeout = 20\nbody_timeout = 7\n\
             max_connections = 500\nshutdown_timeout = 4\nstream_write_timeout = 9\n",
        )
        .unwrap();
        let c = r.server.connections;
        assert_eq!(c.header_timeout, Duration::from_secs(3));
        assert_eq!(c.idle_timeout, Duration::from_secs(20));
        assert_eq!(c.body_timeout, Duration::from_secs(7));
        assert_eq!(c.max_connections, Some(500));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(4));
        assert_eq!(c.stream_write_timeout, Duration::from_secs(9));
        let defaults = resolve_toml("").unwrap().server.connections;
        assert_eq!(defaults, permsync_server::Connections::default());
        assert_eq!(defaults.header_timeout, Duration::from_secs(10));
        assert_eq!(defaults.idle_timeout, Duration::from_secs(60));
        assert_eq!(defaults.body_timeout, Duration::from_secs(30));
        assert_eq!(defaults.max_connections, None);
        assert_eq!(defaults.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(defaults.stream_write_timeout, Duration::from_secs(30));
        for (toml, named) in [
            ("header_timeout = 0", "connections.header_timeout"),
            ("idle_timeout = 3601", "connections.idle_timeout"),
            ("body_timeout = 0", "connections.body_timeout"),
            ("shutdown_timeout = 0", "connections.shutdown_timeout"),
            (
                "stream_write_timeout = 601",
                "connections.stream_write_timeout",
            ),
            ("max_connections = 0", "connections.max_connections"),
            ("read_timeout = 5", "read_timeout"),
        ] {
            let err = match resolve_toml(&format!("[connections]\n{toml}\n")) {
                Ok(_) => panic!("{toml} was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(named), "{toml}: {err}");
        }
    }

    #[test]
    fn login_settings_come_from_the_login_table() {
        let r = resolve_toml(
            "allow_readable_store = true\n[login]\nmax_concurrent_hashes = 3\n\
             hash_queue_timeout = 2\nrefresh_reuse_grace = 0\n",
        )
        .unwrap();
        assert_eq!(r.server.max_concurrent_hashes, 3);
        assert_eq!(r.server.hash_queue_timeout, Duration::from_secs(2));
        assert_eq!(r.server.refresh_reuse_grace, Duration::ZERO);
        assert!(r.allow_readable_store);
        let defaults = resolve_toml("").unwrap();
        assert!(!defaults.allow_readable_store);
        assert_eq!(
            defaults.server.max_concurrent_hashes,
            permsync_server::config::default_max_concurrent_hashes()
        );
        assert_eq!(defaults.server.hash_queue_timeout, Duration::from_secs(5));
        assert_eq!(defaults.server.refresh_reuse_grace, Duration::from_secs(5));
        for (toml, named) in [
            ("max_concurrent_hashes = 0", "login.max_concurrent_hashes"),
            ("hash_queue_timeout = 61", "login.hash_queue_timeout"),
            ("refresh_reuse_grace = 61", "login.refresh_reuse_grace"),
            ("grace = 1", "grace"),
        ] {
            let err = match resolve_toml(&format!("[login]\n{toml}\n")) {
                Ok(_) => panic!("{toml} was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(named), "{toml}: {err}");
        }
    }

    #[test]
    fn stream_settings_out_of_range_are_named() {
        for (toml, named) in [
            ("keepalive = 0", "streams.keepalive"),
            ("keepalive = 16", "streams.keepalive"),
            ("ws_ping_interval = 0", "streams.ws_ping_interval"),
            ("ws_ping_interval = 61", "streams.ws_ping_interval"),
            ("max_per_user = 0", "streams.max_per_user"),
            ("max_per_user = 1025", "streams.max_per_user"),
            ("keepalive_secs = 5", "keepalive_secs"),
            ("max_per_user = -1", "max_per_user"),
        ] {
            let err = match resolve_toml(&format!("[streams]\n{toml}\n")) {
                Ok(_) => panic!("{toml} was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(named), "{toml}: {err}");
        }
    }
}
