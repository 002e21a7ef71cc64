//! The seed plan printed by `consumer-host seed`, and the clients made from it.

use std::io::Read;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// Most connections one run may open.
pub const MAX_CONNECTIONS: usize = 100_000;

/// `{"rooms": [...]}` as `consumer-host seed` prints it.
#[derive(Deserialize)]
pub struct Plan {
    /// Every room with its members.
    pub rooms: Vec<PlanRoom>,
}

/// One conversation and the users who belong to it.
#[derive(Deserialize)]
pub struct PlanRoom {
    /// The conversation id (goes into the WebSocket path).
    pub id: String,
    /// Its members, each with a token.
    pub users: Vec<PlanUser>,
}

/// One member of a room.
#[derive(Deserialize)]
pub struct PlanUser {
    /// The user id (a message's `sent_to_id`).
    pub id: String,
    /// A JWT accepted by the server for this user.
    pub token: String,
}

/// A room as the clients see it: its members are the clients
/// `base .. base + members.len()`, which is how a receiver maps a sender's
/// global index to its own per-sender bookkeeping without a lookup table.
pub struct Room {
    /// Position in the plan, used to index per-room counters.
    pub index: usize,
    /// The conversation id.
    pub id: String,
    /// Global index of the room's first client.
    pub base: u32,
    /// User ids of the members, in client order.
    pub members: Vec<String>,
}

/// One connection to open.
pub struct ClientSpec {
    /// Global client index (written into every body it sends).
    pub index: u32,
    /// Position within its room.
    pub local: u32,
    /// The room it joins.
    pub room: Arc<Room>,
    /// Its token (query string).
    pub token: String,
}

/// Reads the plan from a file or, for `-`, from stdin.
pub fn read(path: &str) -> Result<Plan> {
    let mut text = String::new();
    if path == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the plan from stdin")?;
    } else {
        text = std::fs::read_to_string(path).with_context(|| format!("reading the plan {path}"))?;
    }
    serde_json::from_str(&text).context("the plan is not the JSON printed by `consumer-host seed`")
}

/// Characters that need no escaping in a URL path or query, nor in JSON:
/// ids and tokens are pasted as they are, so anything else is refused up front.
fn url_safe(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// Turns the plan into rooms and clients, refusing plans past the bounds.
pub fn clients(plan: Plan) -> Result<(Vec<Arc<Room>>, Vec<ClientSpec>)> {
    let total: usize = plan.rooms.iter().map(|room| room.users.len()).sum();
    if total == 0 {
        bail!("the plan has no users");
    }
    if total > MAX_CONNECTIONS {
        bail!("the plan has {total} users; a run opens at most {MAX_CONNECTIONS} connections");
    }
    let mut rooms = Vec::with_capacity(plan.rooms.len());
    let mut clients = Vec::with_capacity(total);
    for plan_room in plan.rooms.into_iter().filter(|room| !room.users.is_empty()) {
        if !url_safe(&plan_room.id) {
            bail!("room id {:?} is not a plain id", plan_room.id);
        }
        let base = clients.len() as u32;
        let mut members = Vec::with_capacity(plan_room.users.len());
        let mut tokens = Vec::with_capacity(plan_room.users.len());
        for user in plan_room.users {
            if !url_safe(&user.id) || !url_safe(&user.token) {
                bail!(
                    "user {:?} in room {} has an unexpected id or token",
                    user.id,
                    plan_room.id
                );
            }
            members.push(user.id);
            tokens.push(user.token);
        }
        let room = Arc::new(Room {
            index: rooms.len(),
            id: plan_room.id,
            base,
            members,
        });
        for (local, token) in tokens.into_iter().enumerate() {
            clients.push(ClientSpec {
                index: base + local as u32,
                local: local as u32,
                room: room.clone(),
                token,
            });
        }
        rooms.push(room);
    }
    Ok((rooms, clients))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_map_to_contiguous_clients() {
        let plan: Plan = serde_json::from_str(
            r#"{"rooms":[
                {"id":"r1","users":[{"id":"a","name":"A","token":"t.a"},{"id":"b","name":"B","token":"t.b"}]},
                {"id":"r0","users":[]},
                {"id":"r2","users":[{"id":"c","name":"C","token":"t.c"}]}]}"#,
        )
        .unwrap();
        let (rooms, clients) = clients(plan).unwrap();
        assert_eq!(rooms.len(), 2);
        assert_eq!(clients.len(), 3);
        assert_eq!(clients[2].room.base, 2);
        assert_eq!(clients[2].room.index, 1);
        assert_eq!(clients[1].local, 1);
        assert_eq!(clients[1].room.members, ["a", "b"]);
    }

    #[test]
    fn odd_tokens_are_refused() {
        let plan: Plan =
            serde_json::from_str(r#"{"rooms":[{"id":"r1","users":[{"id":"a","token":"x&y"}]}]}"#)
                .unwrap();
        assert!(clients(plan).is_err());
    }
}
