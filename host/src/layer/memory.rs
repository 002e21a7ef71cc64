//! The in-memory layer: one node.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{ConnId, Event, Mailbox};
use crate::metrics::Metrics;

/// Groups held in this process.
pub struct MemoryLayer {
    // A std lock: it is only held for map operations and `try_send`s, never
    // across an `.await`.
    groups: RwLock<HashMap<String, HashMap<ConnId, Mailbox>>>,
    metrics: Arc<Metrics>,
}

impl MemoryLayer {
    /// An empty layer.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            groups: RwLock::new(HashMap::new()),
            metrics,
        }
    }

    /// See [`super::Layer::group_add`]. Returns whether the group was
    /// empty before (its first member on this node).
    pub fn group_add(&self, group: &str, mailbox: &Mailbox) -> bool {
        let mut groups = self.groups.write().expect("layer lock poisoned");
        let members = groups.entry(group.to_string()).or_default();
        let first = members.is_empty();
        members.insert(mailbox.id(), mailbox.clone());
        first
    }

    /// See [`super::Layer::group_discard`]. Returns whether that emptied the
    /// group (its last member on this node left).
    pub fn group_discard(&self, group: &str, id: ConnId) -> bool {
        let mut groups = self.groups.write().expect("layer lock poisoned");
        if let Some(members) = groups.get_mut(group)
            && members.remove(&id).is_some()
            && members.is_empty()
        {
            groups.remove(group);
            return true;
        }
        false
    }

    /// Every group with members on this node.
    pub fn groups(&self) -> Vec<String> {
        let groups = self.groups.read().expect("layer lock poisoned");
        groups.keys().cloned().collect()
    }

    /// See [`super::Layer::group_send`].
    pub fn group_send(&self, group: &str, event: &Event) -> usize {
        let groups = self.groups.read().expect("layer lock poisoned");
        let Some(members) = groups.get(group) else {
            return 0;
        };
        members
            .values()
            .filter(|mailbox| mailbox.deliver(event, &self.metrics))
            .count()
    }

    /// Members of a group.
    pub fn members(&self, group: &str) -> usize {
        let groups = self.groups.read().expect("layer lock poisoned");
        groups.get(group).map_or(0, HashMap::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::close::SLOW_CLIENT as CLOSE_SLOW_CLIENT;
    use crate::layer::Kick;
    use tokio_util::sync::CancellationToken;

    #[test]
    fn delivers_to_members_only_and_closes_the_slow() {
        let metrics = Arc::new(Metrics::default());
        let layer = MemoryLayer::new(metrics.clone());
        let root = CancellationToken::new();
        let (a, mut a_rx) = Mailbox::new(1, 4, Kick::child_of(&root));
        let slow_kick = Kick::child_of(&root);
        let (slow, _slow_rx) = Mailbox::new(2, 1, slow_kick.clone());
        let (outsider, mut outsider_rx) = Mailbox::new(3, 4, Kick::child_of(&root));
        assert!(layer.group_add("room", &a));
        assert!(!layer.group_add("room", &a));
        assert!(!layer.group_add("room", &slow));
        assert!(layer.group_add("other", &outsider));
        assert_eq!(layer.members("room"), 2);

        let event: Event = crate::layer::GroupEvent::new(r#"{"type":"x"}"#, "x");
        assert_eq!(layer.group_send("room", &event), 2);
        assert_eq!(
            layer.group_send("room", &event),
            1,
            "the slow member's mailbox is full"
        );
        assert!(slow_kick.is_kicked());
        assert_eq!(slow_kick.code(), CLOSE_SLOW_CLIENT);
        assert_eq!(metrics.mailbox_overflow_closes.get(), 1);
        assert_eq!(&*a_rx.try_recv().unwrap().json, r#"{"type":"x"}"#);
        assert!(outsider_rx.try_recv().is_err());

        assert!(!layer.group_discard("room", 1));
        assert!(layer.group_discard("room", 2));
        assert!(!layer.group_discard("room", 2));
        assert_eq!(layer.members("room"), 0);
        assert_eq!(layer.group_send("room", &event), 0);
    }
}
