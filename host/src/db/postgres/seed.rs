//! `consumer-host seed` on PostgreSQL: users and conversations, in one
//! transaction, as Django would write them (the plan printed is the same
//! as on SQLite).

use tokio_postgres::Client;

use crate::db::seed::{Plan, PlanRoom, PlanUser};

/// Creates `rooms` conversations of `users_per_room` new users each, and
/// calls `mint` (with the id as 32 hex digits) for each user's token.
pub async fn seed(
    client: &mut Client,
    rooms: usize,
    users_per_room: usize,
    mint: impl Fn(&str) -> String,
    mut progress: impl FnMut(usize),
) -> Result<Plan, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let insert_user = tx
        .prepare(
            "INSERT INTO useraccount_user
                 (password, last_login, is_superuser, id, email, name, is_active, is_staff, date_joined)
             VALUES ($1, NULL, false, $2, $3, $4, true, false, now())",
        )
        .await?;
    let insert_conversation = tx
        .prepare(
            "INSERT INTO chat_conversation (id, created_at, modified_at) VALUES ($1, now(), now())",
        )
        .await?;
    let insert_member = tx
        .prepare("INSERT INTO chat_conversation_users (conversation_id, user_id) VALUES ($1, $2)")
        .await?;
    let mut plan = Plan {
        rooms: Vec::with_capacity(rooms),
    };
    for room_number in 0..rooms {
        let room = uuid::Uuid::new_v4();
        tx.execute(&insert_conversation, &[&room]).await?;
        let mut users = Vec::with_capacity(users_per_room);
        let mut rows = Vec::with_capacity(users_per_room);
        for _ in 0..users_per_room {
            let user = uuid::Uuid::new_v4();
            let hex = user.simple().to_string();
            let name = format!("User {}", &hex[..8]);
            // An unusable password, as Django's set_unusable_password writes it.
            let password = format!("!{}", uuid::Uuid::new_v4().simple());
            rows.push((user, password, format!("{hex}@seed.invalid"), name.clone()));
            users.push(PlanUser {
                id: user.hyphenated().to_string(),
                token: mint(&hex),
                name,
            });
        }
        // Pipelined: the room's rows in one round trip.
        let inserts = rows.iter().map(|(user, password, email, name)| {
            let tx = &tx;
            let insert_user = &insert_user;
            async move {
                tx.execute(insert_user, &[password, user, email, name])
                    .await
            }
        });
        for result in futures_util::future::join_all(inserts).await {
            result?;
        }
        let members = rows.iter().map(|(user, ..)| {
            let (tx, insert_member, room) = (&tx, &insert_member, &room);
            async move { tx.execute(insert_member, &[room, user]).await }
        });
        for result in futures_util::future::join_all(members).await {
            result?;
        }
        plan.rooms.push(PlanRoom {
            id: room.hyphenated().to_string(),
            users,
        });
        progress(room_number + 1);
    }
    tx.commit().await?;
    Ok(plan)
}
