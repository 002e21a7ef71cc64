//! What the command line does on PostgreSQL (`migrate`, `seed`, `token`),
//! each on a runtime and a connection of its own.

use std::future::Future;

use super::{connect_once, explain, migrate as migrations, read_row_once};
use crate::config::DatabaseConfig;
use crate::db::seed::Plan;
use crate::db::{OpenError, Value};

fn block_on<F: Future>(work: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the command")
        .block_on(work)
}

fn failed(what: &str, config: &DatabaseConfig, err: &tokio_postgres::Error) -> OpenError {
    OpenError::Postgres(format!("{what} {}: {}", config.location(), explain(err)))
}

/// Applies the migrations not yet applied; their names.
pub fn migrate(config: &DatabaseConfig) -> Result<Vec<&'static str>, OpenError> {
    block_on(async {
        let mut client = connect_once(config).await?;
        migrations::apply(&mut client)
            .await
            .map_err(|err| failed("migrating", config, &err))
    })
}

/// Migrates, then makes users and conversations (see [`super::seed`]).
pub fn seed(
    config: &DatabaseConfig,
    rooms: usize,
    users_per_room: usize,
    mint: impl Fn(&str) -> String,
    progress: impl FnMut(usize),
) -> Result<Plan, OpenError> {
    block_on(async {
        let mut client = connect_once(config).await?;
        migrations::apply(&mut client)
            .await
            .map_err(|err| failed("migrating", config, &err))?;
        super::seed::seed(&mut client, rooms, users_per_room, mint, progress)
            .await
            .map_err(|err| failed("seeding", config, &err))
    })
}

/// The first row of the host's `query` with `params`.
pub fn read_row(
    config: &DatabaseConfig,
    query: &str,
    params: &[Value],
) -> Result<Option<Vec<Value>>, OpenError> {
    block_on(async {
        let client = connect_once(config).await?;
        read_row_once(&client, query, params)
            .await
            .map_err(|err| OpenError::Postgres(format!("{}: {err}", config.location())))
    })
}
