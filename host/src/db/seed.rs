//! `consumer-host seed`: users and conversations for trying the chat and for
//! load tests, written in one transaction, as Django would write them.

use rusqlite::Connection;
use serde::Serialize;

/// What `seed` prints: every room with its members and their tokens.
#[derive(Debug, Serialize)]
pub struct Plan {
    /// The conversations made.
    pub rooms: Vec<PlanRoom>,
}

/// One conversation.
#[derive(Debug, Serialize)]
pub struct PlanRoom {
    /// The conversation id, hyphenated (as the frontend puts it in the URL).
    pub id: String,
    /// Its members.
    pub users: Vec<PlanUser>,
}

/// One user.
#[derive(Debug, Serialize)]
pub struct PlanUser {
    /// The user id, hyphenated (as in tokens).
    pub id: String,
    /// Display name.
    pub name: String,
    /// A valid access token.
    pub token: String,
}

/// Creates `rooms` conversations of `users_per_room` new users each, and
/// calls `mint` for each user's token. `progress` hears of every room written.
pub fn seed(
    conn: &mut Connection,
    rooms: usize,
    users_per_room: usize,
    mint: impl Fn(&str) -> String,
    mut progress: impl FnMut(usize),
) -> rusqlite::Result<Plan> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut plan = Plan {
        rooms: Vec::with_capacity(rooms),
    };
    {
        let mut insert_user = tx.prepare(
            "INSERT INTO useraccount_user
                 (password, last_login, is_superuser, id, email, name, is_active, is_staff, date_joined)
             VALUES (?1, NULL, 0, ?2, ?3, ?4, 1, 0, ?5)",
        )?;
        let mut insert_conversation = tx.prepare(
            "INSERT INTO chat_conversation (id, created_at, modified_at) VALUES (?1, ?2, ?2)",
        )?;
        let mut insert_member = tx.prepare(
            "INSERT INTO chat_conversation_users (conversation_id, user_id) VALUES (?1, ?2)",
        )?;
        for room_number in 0..rooms {
            let now = super::now_django();
            let room = uuid::Uuid::new_v4();
            insert_conversation.execute((room.simple().to_string(), &now))?;
            let mut users = Vec::with_capacity(users_per_room);
            for _ in 0..users_per_room {
                let user = uuid::Uuid::new_v4();
                let short = &user.simple().to_string()[..8];
                let name = format!("User {short}");
                // An unusable password, as Django's set_unusable_password writes it.
                let password = format!("!{}", uuid::Uuid::new_v4().simple());
                insert_user.execute((
                    password,
                    user.simple().to_string(),
                    format!("{}@seed.invalid", user.simple()),
                    &name,
                    &now,
                ))?;
                insert_member.execute((room.simple().to_string(), user.simple().to_string()))?;
                users.push(PlanUser {
                    id: user.hyphenated().to_string(),
                    token: mint(&user.simple().to_string()),
                    name,
                });
            }
            plan.rooms.push(PlanRoom {
                id: room.hyphenated().to_string(),
                users,
            });
            progress(room_number + 1);
        }
    }
    tx.commit()?;
    Ok(plan)
}
