//! The shared state of one server: the store, the in-memory index projected from
//! its changelog, token keys, metrics and limits.

use std::ops::Deref;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use permsync_auth::{KeyMaterial, Tokens};
use permsync_core::{Index, Timestamp};
use permsync_store::{SigningKey, Store};

use crate::config::ServerConfig;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::push::{Hub, OpenStreams, Tickets};
use crate::time::now;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Arc<dyn Store>,
    /// The projection of the changelog. A std lock: held only for in-memory work,
    /// never across an await.
    pub index: RwLock<Index>,
    pub tokens: Tokens,
    /// Tokens whose signature was checked recently.
    pub(crate) verified_tokens: crate::token_cache::VerifiedTokens,
    pub config: ServerConfig,
    pub metrics: Metrics,
    pub limits: Limits,
    pub hub: Hub,
    /// Sessions known live or ended: the session test of every permsync token.
    pub sessions: crate::sessions::Sessions,
    /// Slots for password hashing (login, user creation), bounding its memory.
    pub hashing: crate::limits::HashSlots,
    /// Serializes appliers of the changelog, so changes apply once and in order.
    pub(crate) applier: tokio::sync::Mutex<()>,
    pub shutting_down: AtomicBool,
    /// Single-use stream tickets of this node.
    pub tickets: Tickets,
    /// Open event streams, per user and in total.
    pub open_streams: OpenStreams,
    /// Turns true when shutdown begins: no stream opens after it, and the change
    /// streams watch it to end cleanly (event streams hear it from their slots).
    pub streams_stop: tokio::sync::watch::Sender<bool>,
    /// The `seq` of the last change applied; the change streams wait on it.
    pub applied_seq_watch: tokio::sync::watch::Sender<u64>,
    /// Open tabs per user and the revisions they applied (`POST /v1/me/ack`).
    pub tabs: crate::tabs::Tabs,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Loads the index from the store and makes sure a signing key exists.
    pub async fn open(store: Arc<dyn Store>, config: ServerConfig) -> anyhow::Result<AppState> {
        let keys = ensure_signing_key(store.as_ref()).await?;
        let tokens = Tokens::new(
            keys,
            config.issuer.clone(),
            config.audience.clone(),
            config.external_issuers.clone(),
        )
        .context("configuring token verification")?;
        let index = store
            .load()
            .await
            .context("loading permissions from the store")?
            .into_index();
        let applied_seq = index.applied_seq();
        let retention = session_retention(&config);
        let since = now().plus_millis(-(retention.as_millis() as i64));
        let ended = store
            .ended_sessions(since)
            .await
            .context("loading ended sessions")?;
        let metrics = Metrics::new();
        metrics.applied_seq.set(applied_seq as i64);
        let hub = Hub::new(crate::push::PushCounters::of(&metrics));
        let tickets = Tickets::new(config.stream_ticket_ttl);
        let open_streams = OpenStreams::new(config.max_streams_per_user);
        Ok(AppState(Arc::new(Inner {
            store,
            index: RwLock::new(index),
            tokens,
            verified_tokens: Default::default(),
            limits: Limits::new(&config),
            hashing: crate::limits::HashSlots::new(&config),
            config,
            metrics,
            hub,
            sessions: crate::sessions::Sessions::new(retention, ended),

            applier: tokio::sync::Mutex::new(()),
            shutting_down: AtomicBool::new(false),
            tickets,
            open_streams,
            streams_stop: tokio::sync::watch::Sender::new(false),
            applied_seq_watch: tokio::sync::watch::Sender::new(applied_seq),
            tabs: crate::tabs::Tabs::new(crate::tabs::TAB_TTL),
        })))
    }

    pub fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn revision(&self, user: &str) -> u64 {
        self.index().revision(user)
    }

    pub fn now(&self) -> Timestamp {
        now()
    }
}

/// How long after a session's end one of its access tokens may still verify:
/// their lifetime plus the verifier's clock leeway.
pub fn session_retention(config: &ServerConfig) -> std::time::Duration {
    config.access_token_ttl
        + std::time::Duration::from_secs(permsync_auth::CLOCK_LEEWAY_SECS.unsigned_abs())
}

/// Returns the store's signing keys, creating the first one if there is none.
pub async fn ensure_signing_key(store: &dyn Store) -> anyhow::Result<Vec<KeyMaterial>> {
    let mut keys = store.signing_keys().await.context("reading signing keys")?;
    if !keys.iter().any(|k| k.retired_at.is_none()) {
        let k = permsync_auth::generate_ed25519();
        let stored = SigningKey {
            kid: k.kid.clone(),
            algorithm: "EdDSA".into(),
            private_der: k.private_der.clone(),
            public: k.public.clone(),
            created_at: now(),
            retired_at: None,
        };
        store
            .add_signing_key(&stored)
            .await
            .context("storing a new signing key")?;
        keys = store.signing_keys().await.context("reading signing keys")?;
    }
    Ok(keys
        .into_iter()
        .map(|k| KeyMaterial {
            kid: k.kid,
            private_der: k.private_der,
            public: k.public,
            retired: k.retired_at.is_some(),
        })
        .collect())
}
