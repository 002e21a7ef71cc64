//! Rendering pure events once for every member of a group.
//!
//! When a consumer says (in `describe`) that its handler for an event type
//! depends on the event alone, the host does not call `handle-event` once per
//! member: the first member to take the event runs the handler once, on an
//! instance of its own with an empty scope, and keeps the frames it sends in
//! the event; every member running that same version gets those frames as
//! they are: one guest call and one encoding per event and node instead of
//! one per member. A member on another version (mid-deploy) or of another
//! consumer runs its own handler as usual.
//!
//! Rendering instances are kept per version and reused; one that faults is
//! dropped, and the event then goes to every member's own handler.

use std::sync::Arc;

use hyper_tungstenite::tungstenite::Message as WsMessage;
use wasmtime::Store;

use super::bindings::Exports;
use super::conn::{Capabilities, ConnState};
use super::imports::HostState;
use super::session::{Fault, new_store};
use super::{Consumer, ModuleVersion};
use crate::layer::{GroupEvent, Rendered};

/// An instance that renders events, with the receiving end of its sends.
pub struct Renderer {
    store: Store<HostState>,
    exports: Exports,
    /// Keeps the detached connection's queue open (its sends are taken
    /// from the emission, not from the queue).
    _frames: crate::delivery::OutboundReceiver,
}

/// Rendering instances kept per version between events.
const MAX_IDLE_RENDERERS: usize = 8;

async fn new_renderer(
    caps: &Arc<Capabilities>,
    consumer: &Arc<Consumer>,
    version: &ModuleVersion,
) -> Result<Renderer, Fault> {
    let sends = consumer.config().sandbox.max_sends_per_event as usize + 1;
    let (outbound, frames) = crate::delivery::outbound(sends, caps.pressure.clone());
    let conn = ConnState::detached(consumer.clone(), caps.clone(), outbound);
    let mut store = new_store(consumer, conn);
    let exports = version
        .pre
        .instantiate(&mut store)
        .await
        .map_err(|err| Fault::Instantiate(format!("{err:#}")))?;
    caps.metrics.instances_created.inc();
    Ok(Renderer {
        store,
        exports,
        _frames: frames,
    })
}

/// The frames of `event` as `version` renders them, made by the first
/// caller and shared by the others; `None` when this member must run its own
/// handler (the type is not pure for its version, the event was rendered by
/// another version, or rendering failed).
pub async fn rendered<'e>(
    caps: &Arc<Capabilities>,
    consumer: &Arc<Consumer>,
    event: &'e GroupEvent,
) -> Option<&'e [WsMessage]> {
    let version = consumer.current();
    if !version.is_pure(&event.kind) {
        return None;
    }
    let rendered = event
        .rendered
        .get_or_init(|| async {
            match render(caps, consumer, &version, &event.json).await {
                Ok(frames) => Some(Rendered {
                    version: version.id,
                    frames,
                }),
                Err(fault) => {
                    // Every member's own handler runs instead.
                    tracing::warn!(consumer = consumer.name(), version = version.short(), %fault, "rendering a pure event failed");
                    None
                }
            }
        })
        .await;
    match rendered {
        Some(rendered) if rendered.version == version.id => Some(&rendered.frames),
        _ => None,
    }
}

/// Runs `version`'s handler for `event` once and returns what it sent.
async fn render(
    caps: &Arc<Capabilities>,
    consumer: &Arc<Consumer>,
    version: &Arc<ModuleVersion>,
    event: &str,
) -> Result<Vec<WsMessage>, Fault> {
    let pooled = version.renderers.lock().expect("not poisoned").pop();
    let mut renderer = match pooled {
        Some(renderer) => renderer,
        None => new_renderer(caps, consumer, version).await?,
    };
    renderer.store.data_mut().conn.begin_event();
    renderer.store.set_epoch_deadline(1);
    renderer
        .exports
        .handle_event(&mut renderer.store, event)
        .await
        .map_err(|err| Fault::Trap(format!("{err:#}")))?;
    // A pure handler writes nothing: its frames are ready as they are.
    let frames = renderer.store.data_mut().conn.take_emission().into_frames();
    // Only a clean instance goes back (one that faulted was dropped above),
    // and only as many as are kept.
    let mut pool = version.renderers.lock().expect("not poisoned");
    if pool.len() < MAX_IDLE_RENDERERS {
        pool.push(renderer);
    }
    Ok(frames)
}
