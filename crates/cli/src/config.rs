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
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
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
    })
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
