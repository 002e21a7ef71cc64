//! `groups`: joining, leaving and sending to the consumer's groups.
//!
//! Every name a guest gives is put in its consumer's namespace before the
//! layer sees it, so one consumer can neither join nor read nor forge the
//! groups of another (unless the configuration gives them one namespace).

use super::{Refusal, within};
use crate::layer::{self, GroupEvent};
use crate::runtime::bindings::groups;
use crate::runtime::conn::{ConnState, Effect};

/// What a group operation returns instead of success.
pub type GroupFailure = Refusal<groups::GroupError>;

/// Event types the host sends itself (`host.recheck`); guests cannot.
const HOST_EVENT_PREFIX: &str = "host.";

fn check_name(group: &str) -> Result<(), GroupFailure> {
    layer::validate_group_name(group)
        .map_err(|err| groups::GroupError::InvalidName(err.to_string()).into())
}

impl ConnState {
    fn count_group_change(&mut self) -> Result<(), GroupFailure> {
        let limit = self.consumer.config().sandbox.max_group_changes_per_event;
        within(
            &mut self.used.group_changes,
            limit,
            "group-add or group-discard",
        )
    }
}

impl groups::Host for ConnState {
    async fn group_add(&mut self, group: String) -> Result<(), GroupFailure> {
        check_name(&group)?;
        self.count_group_change()?;
        let key = self.group_key(&group);
        if !self.groups.contains(&key) {
            // Recorded before the layer is asked: if this call is cancelled
            // half-way (a handshake cut short), dropping the connection
            // state still takes it out of the group.
            self.groups.push(key.clone());
            self.caps.layer.group_add(&key, &self.mailbox).await;
        }
        Ok(())
    }

    fn group_discard(&mut self, group: String) -> Result<(), GroupFailure> {
        check_name(&group)?;
        self.count_group_change()?;
        let key = self.group_key(&group);
        if let Some(at) = self.groups.iter().position(|joined| *joined == key) {
            self.groups.swap_remove(at);
            self.caps.layer.group_discard(&key, self.id);
        }
        Ok(())
    }

    fn group_send(&mut self, group: String, event: String) -> Result<(), GroupFailure> {
        check_name(&group)?;
        let limit = self.consumer.config().sandbox.max_group_sends_per_event;
        within(&mut self.used.group_sends, limit, "group-send")?;
        let max = self.caps.max_event_bytes;
        if event.len() > max {
            return Err(groups::GroupError::TooLarge(max as u32).into());
        }
        let event = GroupEvent::parse(event).map_err(groups::GroupError::InvalidEvent)?;
        if event.kind.starts_with(HOST_EVENT_PREFIX) {
            return Err(groups::GroupError::InvalidEvent(format!(
                "event types starting with {HOST_EVENT_PREFIX:?} are the host's own"
            ))
            .into());
        }
        // Sent once what this event wrote is durable (see `conn`).
        let key = self.group_key(&group);
        self.emit(Effect::GroupSend(key, event));
        Ok(())
    }

    fn convert_group_error(&mut self, err: GroupFailure) -> wasmtime::Result<groups::GroupError> {
        err.into_wit()
    }
}
