//! Noticing commits of other connections to the same database file, in this
//! process or another one on the host (the command line, a second server).
//!
//! SQLite tells no one about commits. In WAL mode, though, every commit appends
//! its pages to the `-wal` file with `write`, and a checkpoint writes the main
//! file; so a watch on the database's folder (inotify on Linux, FSEvents or
//! kqueue elsewhere, through the `notify` crate) sees every commit within
//! microseconds, at no cost while nothing is written. The folder rather than the
//! files, so a `-wal` file that is deleted and made anew is still watched.
//!
//! It is a hint only: an event may come without a new change (a checkpoint,
//! this process's own commit), and a lost one (a full event queue) is covered
//! by the tail's poll.

use std::path::Path;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::watch;

/// A watch on a database's files; signals while it lives.
pub(super) struct CommitWatch {
    signal: watch::Receiver<()>,
    _watcher: RecommendedWatcher,
}

impl CommitWatch {
    /// Watches the folder of `db`; `None` (and a warning) if the platform or
    /// its limits refuse, in which case tails rely on their poll alone.
    pub(super) fn start(db: &Path) -> Option<CommitWatch> {
        let name = db.file_name()?.to_os_string();
        let mut wal = name.clone();
        wal.push("-wal");
        let folder = match db.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let (tx, signal) = watch::channel(());
        let ours =
            move |file: Option<&std::ffi::OsStr>| file == Some(&*name) || file == Some(&*wal);
        let handler = move |event: notify::Result<notify::Event>| {
            let wake = match event {
                Ok(e) => e.paths.iter().any(|p| ours(p.file_name())),
                // An overflowing queue or a failing watch: some commit may be
                // among what was lost.
                Err(_) => true,
            };
            if wake {
                tx.send_replace(());
            }
        };
        let watched = notify::recommended_watcher(handler)
            .and_then(|mut w| w.watch(&folder, RecursiveMode::NonRecursive).map(|()| w));
        match watched {
            Ok(watcher) => Some(CommitWatch {
                signal,
                _watcher: watcher,
            }),
            Err(e) => {
                tracing::warn!(error = %e, folder = %folder.display(),
                    "cannot watch the database's folder; other writers' changes are seen at the next poll");
                None
            }
        }
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<()> {
        let mut signal = self.signal.clone();
        signal.mark_unchanged();
        signal
    }
}
