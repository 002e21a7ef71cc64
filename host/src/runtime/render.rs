//! Rendering pure events once for every member of a group.
//!
//! When a consumer says (in `describe`) that its handler for an event type
//! depends on the event alone, the host does not call `handle-event` once per
//! member: at `group-send` it runs the handler once, on an instance of its own
//! with an empty scope, keeps the frames it sends, and every member running
//! that same version gets those frames as they are: one guest call and one
//! encoding per event instead of one per member. A member on another version
//! (mid-deploy) or of another consumer runs its own handler as usual.
//!
//! Rendering instances are kept per version and reused; one that faults is
//! dropped, and the event then goes to every member's own handler.

use std::sync::Arc;

use hyper_tungstenite::tungstenite::Message as WsMessage;
use tokio::sync::mpsc;
use wasmtime::Store;

use super::bindings::Consumer as Bindings;
use super::host::{ConnState, HostState, empty_scope};
use super::session::{Fault, new_store};
use super::{Consumer, ModuleVersion};
use crate::layer::{ConnId, Kick, Mailbox};
use crate::services::Services;

/// An instance that renders events, with the receiving end of its sends.
pub struct Renderer {
    store: Store<HostState>,
    bindings: Bindings,
    frames: mpsc::Receiver<WsMessage>,
}

/// Rendering instances kept per version between events.
const MAX_IDLE_RENDERERS: usize = 8;

/// The connection id of rendering instances in logs.
const RENDERER: ConnId = 0;

async fn new_renderer(
    services: &Arc<Services>,
    consumer: &Arc<Consumer>,
    version: &ModuleVersion,
) -> Result<Renderer, Fault> {
    let sends = consumer.config().sandbox.max_sends_per_event as usize + 1;
    let (outbound, frames) = mpsc::channel(sends);
    let kick = Kick::child_of(&services.shutdown);
    let (mailbox, _) = Mailbox::new(RENDERER, 1, kick.clone());
    let conn = ConnState::new(
        RENDERER,
        consumer.clone(),
        services.clone(),
        empty_scope(),
        Vec::new(),
        outbound,
        mailbox,
        kick,
    );
    let mut store = new_store(services.runtime.engine(), consumer, conn);
    let bindings = version
        .pre
        .instantiate_async(&mut store)
        .await
        .map_err(|err| Fault::instantiation(&err))?;
    services.metrics.instances_created.inc();
    Ok(Renderer {
        store,
        bindings,
        frames,
    })
}

/// Runs `version`'s handler for `event` once and returns what it sent.
pub async fn render(
    services: &Arc<Services>,
    consumer: &Arc<Consumer>,
    version: &Arc<ModuleVersion>,
    event: &str,
) -> Result<Vec<WsMessage>, Fault> {
    let pooled = version.renderers.lock().expect("not poisoned").pop();
    let mut renderer = match pooled {
        Some(renderer) => renderer,
        None => new_renderer(services, consumer, version).await?,
    };
    renderer.store.data_mut().conn.begin_event();
    renderer.store.set_epoch_deadline(1);
    renderer
        .bindings
        .call_handle_event(&mut renderer.store, event)
        .await
        .map_err(|err| Fault::Trap(format!("{err:#}")))?;
    let mut frames = Vec::new();
    while let Ok(frame) = renderer.frames.try_recv() {
        frames.push(frame);
    }
    // Only a clean instance goes back (one that faulted was dropped above),
    // and only as many as are kept.
    let mut pool = version.renderers.lock().expect("not poisoned");
    if pool.len() < MAX_IDLE_RENDERERS {
        pool.push(renderer);
    }
    Ok(frames)
}
