//! The changelog tail: the one code path that applies committed changes, whoever
//! made them (this node's handlers, the command line, another node), to the index
//! and the hub, in `seq` order with no gaps. Also the expiry of time-bound holdings.

use permsync_core::ChangeKind;

use crate::state::AppState;

/// How many changes are read from the store per round trip.
const BATCH: u32 = 1000;
/// How often ended sessions are forgotten, in memory and in the store.
const SESSION_PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

impl AppState {
    /// Applies every change committed before the call and not applied yet (and
    /// maybe some committed since). Handlers call it after their own commit, so
    /// they answer with their change applied (read-your-writes).
    pub async fn catch_up(&self) -> Result<u64, permsync_store::StoreError> {
        let _one_applier = self.applier.lock().await;
        loop {
            let after = self.index().applied_seq();
            let changes = self.store.changes_after(after, BATCH).await?;
            if changes.is_empty() {
                return Ok(after);
            }
            for change in &changes {
                let affected = {
                    let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
                    index.apply(change)
                };
                if let ChangeKind::SessionsEnded {
                    user,
                    sessions,
                    reason,
                } = &change.kind
                {
                    let at = std::time::Instant::now();
                    self.sessions
                        .ended(sessions.iter().map(|sid| (sid.clone(), at)));
                    self.hub.end_sessions(user, sessions, *reason);
                }
                if !affected.is_empty() {
                    self.hub.publish(&affected, change.seq, change.at);
                }
                self.metrics.changes_applied.inc();
                self.metrics.applied_seq.set(change.seq as i64);
            }
            if let Some(last) = changes.last() {
                self.applied_seq_watch.send_replace(last.seq);
            }
            // A short batch held every change committed before it was read, the
            // caller's own among them: answer now instead of asking again. The
            // extra round trip would also put the caller behind every stream task
            // this batch woke, delaying its answer by the whole fan-out.
            if changes.len() < BATCH as usize {
                return Ok(self.index().applied_seq());
            }
        }
    }

    /// Follows the changelog for other writers' changes and expires due
    /// holdings, until shutdown: at once when the store signals a commit, else
    /// every `tail_interval` (the signal is a hint; the poll catches what it
    /// misses). Expiries that passed while the server was down are handled on
    /// the first round.
    pub async fn run_background(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.tail_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut commits = self.store.commit_signal();
        let mut prune = tokio::time::interval(SESSION_PRUNE_INTERVAL);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let commit_signal = async {
                match commits.as_mut() {
                    Some(signal) => signal.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tick.tick() => {}
                _ = prune.tick() => {
                    self.prune_sessions().await;
                    continue;
                }
                alive = commit_signal => {
                    if !alive {
                        commits = None;
                    }
                }
                _ = shutdown.changed() => return,
            }
            if let Err(e) = self.catch_up().await {
                tracing::warn!(error = %e, "reading the changelog failed; retrying");
                continue;
            }
            let now = self.now();
            let due = self.index().next_expiry().is_some_and(|t| t <= now);
            if due {
                match self.store.expire_due(now).await {
                    Ok(changes) if !changes.is_empty() => {
                        tracing::info!(count = changes.len(), "expired grants and bindings");
                        if let Err(e) = self.catch_up().await {
                            tracing::warn!(error = %e, "reading the changelog failed; retrying");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "expiring grants failed; retrying"),
                }
            }
        }
    }

    /// Forgets what no token can need any more: ended sessions in memory once
    /// their access tokens have all expired, and in the store the sessions (and
    /// their refresh tokens) that ended or ran out that long ago, and sealed
    /// successors past the refresh grace window. Every node of a database may do
    /// it; the store's part is idempotent.
    async fn prune_sessions(&self) {
        let forgotten = self.sessions.prune(std::time::Instant::now());
        let now = self.now();
        let retention = crate::state::session_retention(&self.config);
        let before = now.plus_millis(-(retention.as_millis() as i64));
        let sealed_before = now.plus_millis(-(self.config.refresh_reuse_grace.as_millis() as i64));
        match self.store.prune_sessions(before, sealed_before).await {
            Ok(pruned) if pruned > 0 || forgotten > 0 => {
                tracing::debug!(pruned, forgotten, "pruned finished sessions");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning sessions failed; retrying later"),
        }
    }
}
