//! Deploying a consumer version: compile, check, then activate atomically.
//!
//! A new module is compiled on a blocking thread (never on the reactor), then
//! checked: it must be a component of the `consumer` world (every export
//! present with its type, every import one the host provides) and it must
//! instantiate, once, under the consumer's sandbox. Only then does it become
//! current, in one atomic swap. Events already running finish on the old
//! version; every event that starts after the swap runs on the new one, on
//! each connection at its next event, with its scope, groups and state.
//! A module that fails a check is refused and the running version keeps
//! serving.

use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::session::Fault;
use super::{Consumer, LoadError, ModuleVersion, Runtime};

/// Why a deploy or rollback did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Not a component of the consumer world.
    #[error("{0}")]
    Invalid(#[from] LoadError),
    /// It compiled but could not be instantiated.
    #[error("the module does not instantiate: {0}")]
    Refused(Fault),
    /// A rollback with no earlier version kept.
    #[error("consumer {0:?} has no earlier version to roll back to")]
    NothingToRollBack(String),
}

/// What a deploy did.
pub struct Deployed {
    /// The version now current.
    pub version: Arc<ModuleVersion>,
    /// The version it replaced (the same one when the bytes were identical).
    pub previous: Arc<ModuleVersion>,
    /// The bytes were those of the current version: nothing changed.
    pub unchanged: bool,
    /// From the request to the swap.
    pub elapsed: std::time::Duration,
}

/// Compiles, checks and activates `bytes` as the new version of `consumer`.
/// `source` says where they came from (`admin:<address>`, `file:<path>`).
pub async fn deploy(
    runtime: &Runtime,
    consumer: &Arc<Consumer>,
    bytes: Vec<u8>,
    source: String,
) -> Result<Deployed, DeployError> {
    let started = Instant::now();
    let _one_at_a_time = consumer.deploying.lock().await;
    let current = consumer.current();
    if hex::encode(Sha256::digest(&bytes)) == current.sha256 {
        tracing::info!(consumer = consumer.name(), version = current.short(), %source, "deploy of the current version: nothing to do");
        return Ok(Deployed {
            version: current.clone(),
            previous: current,
            unchanged: true,
            elapsed: started.elapsed(),
        });
    }
    let metrics = &runtime.caps().metrics;
    let result = runtime
        .check(consumer.name(), consumer.config(), bytes, source.clone())
        .await;
    let version = match result {
        Ok(version) => version,
        Err(err) => {
            metrics.deploy_refusals.inc();
            tracing::warn!(consumer = consumer.name(), %source, error = %err, "deploy refused; the current version keeps serving");
            return Err(err);
        }
    };
    let previous = consumer.activate(version.clone(), runtime.keep_versions());
    let elapsed = started.elapsed();
    metrics.deploys.inc();
    tracing::info!(
        consumer = consumer.name(),
        from = previous.short(),
        to = version.short(),
        size = version.size,
        %source,
        elapsed_ms = elapsed.as_secs_f64() * 1e3,
        "deployed"
    );
    Ok(Deployed {
        version,
        previous,
        unchanged: false,
        elapsed,
    })
}

/// Makes the previous version current again.
pub async fn roll_back(
    runtime: &Runtime,
    consumer: &Arc<Consumer>,
    who: &str,
) -> Result<(Arc<ModuleVersion>, Arc<ModuleVersion>), DeployError> {
    let _one_at_a_time = consumer.deploying.lock().await;
    let (from, to) = consumer
        .roll_back()
        .ok_or_else(|| DeployError::NothingToRollBack(consumer.name().to_string()))?;
    runtime.caps().metrics.rollbacks.inc();
    tracing::info!(
        consumer = consumer.name(),
        from = from.short(),
        to = to.short(),
        by = who,
        "rolled back"
    );
    Ok((from, to))
}
