//! The `permsync` binary: a thin command line over the server and the store.
//! Administrative subcommands write straight to the store; a server running on the
//! same database sees their changes through its changelog tail.

mod demo;
mod shop;
mod web;

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use permsync_config as config;
use permsync_core::{Permission, RoleName, Scope, Timestamp, UserId};
use permsync_server::time::{now, parse_rfc3339, rfc3339};
use permsync_store::{Added, NewBinding, NewGrant, NewSession, SqliteStore, Store};

/// Who the command line acts as in the audit log.
const ACTOR: &str = "cli";

#[derive(Parser)]
#[command(
    name = "permsync",
    version,
    about = "Live permissions for single-page apps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Db {
    /// Database URL.
    #[arg(long, env = "PERMSYNC_DB", global = true)]
    db: Option<String>,
}

#[derive(Args)]
struct Expiry {
    /// When it stops counting (RFC 3339).
    #[arg(long, conflicts_with = "for_")]
    expires: Option<String>,
    /// How long it counts from now, e.g. 10s, 15m, 2h, 7d.
    #[arg(long = "for", id = "for_")]
    for_: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve {
        /// TOML configuration file.
        #[arg(long, env = "PERMSYNC_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on (default 127.0.0.1:7080).
        #[arg(long, env = "PERMSYNC_ADDR")]
        addr: Option<String>,
        /// `allow` or `reject` access tokens issued before the latest permission change.
        #[arg(long, env = "PERMSYNC_STALE_TOKENS")]
        stale_tokens: Option<String>,
        /// Access token lifetime in seconds.
        #[arg(long, env = "PERMSYNC_ACCESS_TOKEN_TTL")]
        access_token_ttl: Option<u64>,
        /// Allowed CORS origin (repeatable; comma-separated in the variable).
        #[arg(
            long = "cors-origin",
            env = "PERMSYNC_CORS_ORIGINS",
            value_delimiter = ','
        )]
        cors_origins: Vec<String>,
        /// Put the effective permissions into access tokens as `perms`.
        #[arg(long)]
        embed_permissions: bool,
        /// Seed demo users, roles and grants (passwords are printed).
        #[arg(long)]
        demo: bool,
        #[command(flatten)]
        db: Db,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Grant a permission to a user.
    Grant {
        user: String,
        permission: String,
        #[arg(long)]
        scope: Option<String>,
        #[command(flatten)]
        expiry: Expiry,
        #[command(flatten)]
        db: Db,
    },
    /// Revoke a user's direct grant of a permission.
    Revoke {
        user: String,
        permission: String,
        #[arg(long)]
        scope: Option<String>,
        #[command(flatten)]
        db: Db,
    },
    /// Manage roles.
    Role {
        #[command(subcommand)]
        command: RoleCommand,
    },
    /// Bind a user to a role.
    Bind {
        user: String,
        role: String,
        #[arg(long)]
        scope: Option<String>,
        #[command(flatten)]
        expiry: Expiry,
        #[command(flatten)]
        db: Db,
    },
    /// Remove a user's binding to a role.
    Unbind {
        user: String,
        role: String,
        #[arg(long)]
        scope: Option<String>,
        #[command(flatten)]
        db: Db,
    },
    /// Show a user's revision, grants, bindings and effective permissions.
    Show {
        user: String,
        #[command(flatten)]
        db: Db,
    },
    /// Print an access token for a user, signed with the store's key.
    Token {
        user: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 300)]
        ttl: u64,
        #[command(flatten)]
        db: Db,
    },
    /// Raise and push users' revisions without changing their permissions.
    Invalidate {
        #[arg(required = true)]
        users: Vec<String>,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        db: Db,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user.
    Add {
        user: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        db: Db,
    },
}

#[derive(Subcommand)]
enum RoleCommand {
    /// Create or replace a role with these permissions.
    Set {
        role: String,
        permissions: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        db: Db,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("permsync: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("permsync: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn open_store(db: &Db) -> anyhow::Result<Arc<dyn Store>> {
    let url = db
        .db
        .clone()
        .unwrap_or_else(|| config::DEFAULT_DB.to_string());
    open_store_url(&url).await
}

async fn open_store_url(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    if !url.starts_with("sqlite:") {
        bail!("unsupported database URL {url:?}: expected sqlite://PATH");
    }
    let store = SqliteStore::open(url)
        .await
        .with_context(|| format!("opening database {url}"))?;
    Ok(Arc::new(store))
}

fn parse_expiry(e: &Expiry, now: Timestamp) -> anyhow::Result<Option<Timestamp>> {
    let t = match (&e.expires, &e.for_) {
        (Some(s), _) => {
            parse_rfc3339(s).with_context(|| format!("--expires {s:?} is not an RFC 3339 time"))?
        }
        (None, Some(d)) => {
            let d = humantime::parse_duration(d)
                .with_context(|| format!("--for {d:?} is not a duration like 10s, 15m, 2h"))?;
            now.plus_millis(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        }
        (None, None) => return Ok(None),
    };
    if t <= now {
        bail!("the expiry must be in the future");
    }
    Ok(Some(t))
}

fn scope(s: &Option<String>) -> anyhow::Result<Option<Scope>> {
    Ok(s.as_deref().map(Scope::parse).transpose()?)
}

async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve {
            config,
            addr,
            stale_tokens,
            access_token_ttl,
            cors_origins,
            embed_permissions,
            demo,
            db,
        } => {
            let file = match &config {
                Some(path) => config::FileConfig::read(path)?,
                None => config::FileConfig::default(),
            };
            let over = config::Overrides {
                addr,
                db: db.db,
                stale_tokens,
                access_token_ttl,
                cors_origins: (!cors_origins.is_empty()).then_some(cors_origins),
                embed_permissions,
            };
            serve(config::resolve(file, over)?, demo).await
        }
        Command::User {
            command:
                UserCommand::Add {
                    user,
                    password_stdin,
                    db,
                },
        } => {
            let user = UserId::parse(&user)?;
            let hash = if password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .context("reading the password from standard input")?;
                let password = line.trim_end_matches(['\r', '\n']);
                if password.is_empty() {
                    bail!("the password on standard input is empty");
                }
                Some(permsync_auth::hash_password(password))
            } else {
                None
            };
            let store = open_store(&db).await?;
            let change = store
                .create_user(ACTOR, &user, hash.as_deref(), now())
                .await?;
            println!("created user {user} (revision {})", change.seq);
            Ok(())
        }
        Command::Grant {
            user,
            permission,
            scope: s,
            expiry,
            db,
        } => {
            let (user, permission, scope) = (
                UserId::parse(&user)?,
                Permission::parse(&permission)?,
                scope(&s)?,
            );
            let at = now();
            let expires_at = parse_expiry(&expiry, at)?;
            let store = open_store(&db).await?;
            match store
                .add_grant(
                    ACTOR,
                    NewGrant {
                        user: user.clone(),
                        permission,
                        scope,
                        expires_at,
                    },
                    at,
                )
                .await?
            {
                Added::Created(g, c) => println!(
                    "granted {} to {user} (grant {}, revision {})",
                    describe(&g.permission, &g.scope),
                    g.id,
                    c.seq
                ),
                Added::Existing(g) => println!(
                    "{user} already holds {} (grant {})",
                    describe(&g.permission, &g.scope),
                    g.id
                ),
            }
            Ok(())
        }
        Command::Revoke {
            user,
            permission,
            scope: s,
            db,
        } => {
            let (user, permission, scope) = (
                UserId::parse(&user)?,
                Permission::parse(&permission)?,
                scope(&s)?,
            );
            let store = open_store(&db).await?;
            let index = store.load().await?.into_index();
            let ids: Vec<u64> = index
                .grants(user.as_str())
                .iter()
                .filter(|g| g.permission == permission && g.scope == scope)
                .map(|g| g.id)
                .collect();
            if ids.is_empty() {
                bail!("{user} has no grant of {}", describe(&permission, &scope));
            }
            for id in ids {
                let c = store.remove_grant(ACTOR, &user, id, now()).await?;
                println!("revoked grant {id} of {user} (revision {})", c.seq);
            }
            Ok(())
        }
        Command::Role {
            command:
                RoleCommand::Set {
                    role,
                    permissions,
                    description,
                    db,
                },
        } => {
            let role = RoleName::parse(&role)?;
            let permissions = permissions
                .iter()
                .map(|p| Permission::parse(p))
                .collect::<Result<Vec<_>, _>>()?;
            let store = open_store(&db).await?;
            let (c, created) = store
                .set_role(
                    ACTOR,
                    &role,
                    &permissions,
                    description.as_deref().unwrap_or(""),
                    now(),
                )
                .await?;
            println!(
                "{} role {role} with {} permissions (seq {})",
                if created { "created" } else { "replaced" },
                permissions.len(),
                c.seq
            );
            Ok(())
        }
        Command::Bind {
            user,
            role,
            scope: s,
            expiry,
            db,
        } => {
            let (user, role, scope) = (UserId::parse(&user)?, RoleName::parse(&role)?, scope(&s)?);
            let at = now();
            let expires_at = parse_expiry(&expiry, at)?;
            let store = open_store(&db).await?;
            match store
                .add_binding(
                    ACTOR,
                    NewBinding {
                        user: user.clone(),
                        role,
                        scope,
                        expires_at,
                    },
                    at,
                )
                .await?
            {
                Added::Created(b, c) => println!(
                    "bound {user} to role {} (binding {}, revision {})",
                    b.role, b.id, c.seq
                ),
                Added::Existing(b) => println!(
                    "{user} is already bound to role {} (binding {})",
                    b.role, b.id
                ),
            }
            Ok(())
        }
        Command::Unbind {
            user,
            role,
            scope: s,
            db,
        } => {
            let (user, role, scope) = (UserId::parse(&user)?, RoleName::parse(&role)?, scope(&s)?);
            let store = open_store(&db).await?;
            let index = store.load().await?.into_index();
            let ids: Vec<u64> = index
                .bindings(user.as_str())
                .iter()
                .filter(|b| b.role == role && b.scope == scope)
                .map(|b| b.id)
                .collect();
            if ids.is_empty() {
                bail!(
                    "{user} is not bound to role {role}{}",
                    scope
                        .as_ref()
                        .map(|s| format!(" at {s}"))
                        .unwrap_or_default()
                );
            }
            for id in ids {
                let c = store.remove_binding(ACTOR, &user, id, now()).await?;
                println!("removed binding {id} of {user} (revision {})", c.seq);
            }
            Ok(())
        }
        Command::Show { user, db } => {
            let user = UserId::parse(&user)?;
            let store = open_store(&db).await?;
            let index = store.load().await?.into_index();
            if !index.user_exists(user.as_str()) {
                bail!("user {user} not found");
            }
            let snapshot = index.snapshot(&user, now());
            println!("user {user}\nrevision {}", snapshot.revision);
            println!("grants:");
            for g in index.grants(user.as_str()) {
                println!(
                    "  {:>6}  {}{}",
                    g.id,
                    describe(&g.permission, &g.scope),
                    until(g.expires_at)
                );
            }
            println!("roles:");
            for b in index.bindings(user.as_str()) {
                let at = b
                    .scope
                    .as_ref()
                    .map(|s| format!(" @ {s}"))
                    .unwrap_or_default();
                println!("  {:>6}  {}{at}{}", b.id, b.role, until(b.expires_at));
            }
            println!("effective permissions:");
            for p in &snapshot.permissions {
                println!(
                    "  {}{}",
                    describe(&p.permission, &p.scope),
                    until(p.expires_at)
                );
            }
            Ok(())
        }
        Command::Token { user, ttl, db } => {
            let user = UserId::parse(&user)?;
            if !(1..=86_400).contains(&ttl) {
                bail!("--ttl must be between 1 and 86400 seconds");
            }
            let store = open_store(&db).await?;
            let keys = permsync_server::ensure_signing_key(store.as_ref()).await?;
            let defaults = permsync_server::ServerConfig::default();
            let tokens = permsync_auth::Tokens::new(
                keys,
                defaults.issuer.clone(),
                defaults.audience.clone(),
                Vec::new(),
            )?;
            let index = store.load().await?.into_index();
            let at = now();
            let iat = at.0 / 1000;
            let exp = iat + ttl as i64;
            // A session of its own, like a login's, so the token counts only while
            // it is live: revoking the user's sessions ends it. Its refresh token
            // is never shown, so it ends at the token's expiry at the latest.
            let sid = permsync_auth::random_token();
            store
                .create_session(
                    NewSession {
                        id: sid.clone(),
                        user: user.clone(),
                        refresh_hash: permsync_auth::sha256_hex(&permsync_auth::random_token()),
                        refresh_expires_at: Timestamp(exp * 1000),
                    },
                    at,
                )
                .await
                .map_err(|e| match e {
                    permsync_store::StoreError::NotFound(_) => {
                        anyhow::anyhow!("user {user} not found")
                    }
                    other => other.into(),
                })?;
            let token = tokens.sign(&permsync_auth::AccessClaims {
                iss: defaults.issuer,
                sub: user.to_string(),
                aud: defaults.audience,
                iat,
                exp,
                jti: permsync_auth::random_token(),
                sid,
                prev: index.revision(user.as_str()),
                perms: None,
            });
            println!("{token}");
            Ok(())
        }
        Command::Invalidate { users, reason, db } => {
            let users = users
                .iter()
                .map(|u| UserId::parse(u))
                .collect::<Result<Vec<_>, _>>()?;
            let store = open_store(&db).await?;
            let c = store
                .invalidate(ACTOR, &users, reason.as_deref(), now())
                .await?;
            println!("invalidated {} users (revision {})", users.len(), c.seq);
            Ok(())
        }
    }
}

fn describe(p: &Permission, s: &Option<Scope>) -> String {
    match s {
        Some(s) => format!("{p} @ {s}"),
        None => p.to_string(),
    }
}

fn until(t: Option<Timestamp>) -> String {
    t.map(|t| format!(" (until {})", rfc3339(t)))
        .unwrap_or_default()
}

async fn serve(cfg: config::Resolved, demo: bool) -> anyhow::Result<()> {
    // Logs go to stderr; stdout carries what a user or a script reads.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    // Every event stream holds a socket: allow as many as the hard limit does.
    if let Err(e) = permsync_server::raise_open_files_limit() {
        tracing::warn!(error = %e, "could not raise the open files limit");
    }
    if !cfg.allow_readable_store {
        refuse_readable_store(&cfg.db)?;
    }
    let store = open_store_url(&cfg.db).await?;
    if demo {
        demo::seed(store.as_ref())
            .await
            .context("seeding demo data")?;
    }
    let state = permsync_server::AppState::open(store, cfg.server).await?;
    let listener = permsync_server::bind(&cfg.addr)
        .await
        .with_context(|| format!("listening on {}", cfg.addr))?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, db = %cfg.db, "permsync is serving");
    println!("permsync listening on http://{local}");
    if demo {
        // The demo's web apps and shop backend, around the API at the same address.
        println!("demo: the shop at http://{local}/, the admin console at http://{local}/admin");
        let router = web::router(state.clone());
        permsync_server::run_router(listener, state, router, shutdown_signal())
            .await
            .context("serving")?;
        return Ok(());
    }
    permsync_server::run(listener, state, shutdown_signal())
        .await
        .context("serving")?;
    Ok(())
}

/// Refuses a database whose files (the database, `-wal`, `-shm`) other users may
/// read or write: they hold the private signing keys, and anyone who reads them
/// can sign tokens for any user.
fn refuse_readable_store(url: &str) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Ok(files) = permsync_store::database_files(url) else {
            // An unparsable URL fails with a better message when opened.
            return Ok(());
        };
        let exposed: Vec<String> = files
            .iter()
            .filter_map(|file| {
                let mode = std::fs::metadata(file).ok()?.permissions().mode() & 0o777;
                (mode & 0o066 != 0).then(|| format!("{} (mode {mode:04o})", file.display()))
            })
            .collect();
        if !exposed.is_empty() {
            let first = files[0].display();
            bail!(
                "the database is readable or writable by other users: {}. It holds the \
                 private signing keys. Fix it with `chmod 600 {first}*` (the database and \
                 its -wal and -shm files), or set `allow_readable_store = true` in the \
                 configuration file to serve anyway",
                exposed.join(", ")
            );
        }
    }
    #[cfg(not(unix))]
    let _ = url;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
