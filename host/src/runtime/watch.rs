//! Deploys a consumer when its module file changes.
//!
//! Each watched file is polled (its size, modification time and inode) every
//! `[runtime] watch_interval_ms`. Polling, rather than inotify, also sees
//! atomic renames, symlink flips and files on network filesystems. A change
//! is acted on only once the file has stopped changing for one more interval,
//! and the bytes then go through the full deploy checks: a half-written file
//! does not compile and is refused, and the next change is tried again.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Consumer, Runtime, deploy};

/// What identifies one state of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    len: u64,
    modified_ns: i128,
    inode: u64,
}

/// The file's state now, or `None` if it cannot be read.
pub fn stamp(path: &Path) -> Option<Stamp> {
    let metadata = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: metadata.len(),
        modified_ns: i128::from(metadata.mtime()) * 1_000_000_000
            + i128::from(metadata.mtime_nsec()),
        inode: metadata.ino(),
    })
}

/// Starts a watcher for every consumer that has `watch` on; they stop at
/// `shutdown`.
pub fn spawn_watchers(
    runtime: &Arc<Runtime>,
    interval: Duration,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) {
    for consumer in runtime.consumers() {
        if consumer.config().watch {
            // The baseline is the file as it was when it was loaded, so a
            // change made while the server was starting is not missed.
            tasks.spawn(watch(
                runtime.clone(),
                consumer.clone(),
                interval,
                consumer.loaded_stamp,
                shutdown.clone(),
            ));
        }
    }
}

async fn watch(
    runtime: Arc<Runtime>,
    consumer: Arc<Consumer>,
    interval: Duration,
    mut seen: Option<Stamp>,
    shutdown: CancellationToken,
) {
    let path = consumer.config().module.clone();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let mut now = stamp(&path);
        if now == seen || now.is_none() {
            continue;
        }
        // Debounce: wait until the file holds still for one interval.
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            let again = stamp(&path);
            if again == now {
                break;
            }
            now = again;
        }
        seen = now;
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::warn!(consumer = consumer.name(), module = %path.display(), error = %err, "module file changed but cannot be read");
                continue;
            }
        };
        tracing::info!(consumer = consumer.name(), module = %path.display(), size = bytes.len(), "module file changed; deploying");
        let source = format!("file:{}", path.display());
        // The deploy logs its outcome; a refusal leaves the old version serving.
        let _ = deploy::deploy(&runtime, &consumer, bytes, source).await;
    }
}
