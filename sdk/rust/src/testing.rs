//! Testing consumers natively, with no socket and no server: Channels'
//! `WebsocketCommunicator`, for Rust.
//!
//! A [`TestHost`] is an in-memory host: groups, connection state, and a
//! real SQLite database in memory (create the tables your consumer uses
//! with [`TestHost::execute`]). Each [`Communicator`] is one client; what a
//! handler sends to a group reaches the other communicators' consumers as
//! it would on a server. Handlers run through the same code as in the
//! component (state read before each event and written after it), so a
//! test that passes here tests the consumer's real logic.
//!
//! ```ignore
//! let host = TestHost::new();
//! let mut alice = host.communicator::<Chat>("/ws/room/").url_kwarg("room_name", "room");
//! assert!(alice.connect().accepted);
//! alice.send_json(&json!({"message": "hi"}));
//! assert_eq!(alice.receive_json().unwrap()["message"], "hi");
//! ```
//!
//! What it does not do: enforce the configuration's table grants or the
//! sandbox's per-event budgets (a server does).

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use serde::Serialize;
use serde_json::Value as Json;

use crate::Consumer;
use crate::adapter::run;
use crate::bindings::consumer_host::consumer::types::User as WitUser;
use crate::host::{self, DbError, GroupError, Level, Message, Rows, Scope, SendError, Value};

type ConnId = u64;

/// The largest state blob the harness keeps (the host's default).
const MAX_STATE_BYTES: usize = 64 * 1024;

/// An in-memory host, shared by the communicators it makes.
#[derive(Clone)]
pub struct TestHost {
    world: Rc<RefCell<World>>,
}

struct World {
    db: rusqlite::Connection,
    groups: BTreeMap<String, Vec<ConnId>>,
    connections: BTreeMap<ConnId, Connection>,
    next_id: ConnId,
    logs: Vec<(Level, String)>,
}

/// One client's connection, as the host holds it.
struct Connection {
    scope: Scope,
    state: Option<Vec<u8>>,
    accepted: Option<Option<String>>,
    close: Option<(u16, String)>,
    sent: VecDeque<Message>,
    events: VecDeque<String>,
    groups: Vec<String>,
    /// The consumer's `handle-event`, for events that reach it.
    handle_event: fn(String),
    /// Whether the consumer renders this event type once for everyone.
    pure: fn(&str) -> bool,
}

impl Default for TestHost {
    fn default() -> Self {
        Self::new()
    }
}

impl TestHost {
    /// A host with an empty in-memory database.
    pub fn new() -> Self {
        let db = rusqlite::Connection::open_in_memory().expect("an in-memory SQLite");
        Self {
            world: Rc::new(RefCell::new(World {
                db,
                groups: BTreeMap::new(),
                connections: BTreeMap::new(),
                next_id: 1,
                logs: Vec::new(),
            })),
        }
    }

    /// Runs SQL on the database (to create tables and rows).
    pub fn execute(&self, sql: &str) {
        self.world
            .borrow()
            .db
            .execute_batch(sql)
            .unwrap_or_else(|err| panic!("{sql}: {err}"));
    }

    /// Runs a query on the database and returns the first column of each row as text.
    pub fn query_texts(&self, sql: &str) -> Vec<String> {
        let world = self.world.borrow();
        let mut stmt = world
            .db
            .prepare(sql)
            .unwrap_or_else(|err| panic!("{sql}: {err}"));
        stmt.query_map([], |row| row.get::<_, String>(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A count from the database (`SELECT count(*) ...`).
    pub fn count(&self, sql: &str) -> i64 {
        self.world
            .borrow()
            .db
            .query_row(sql, [], |row| row.get(0))
            .unwrap_or_else(|err| panic!("{sql}: {err}"))
    }

    /// What consumers logged, in order.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.world.borrow().logs.clone()
    }

    /// Members of a group.
    pub fn group_size(&self, group: &str) -> usize {
        self.world.borrow().groups.get(group).map_or(0, Vec::len)
    }

    /// A client of consumer `C` connecting to `path` (anonymous, no url
    /// kwargs, until told otherwise).
    pub fn communicator<C: Consumer>(&self, path: &str) -> Communicator<C> {
        let mut world = self.world.borrow_mut();
        let id = world.next_id;
        world.next_id += 1;
        world.connections.insert(
            id,
            Connection {
                scope: Scope {
                    connection_id: id.to_string(),
                    path: path.to_string(),
                    url_kwargs: Vec::new(),
                    query: Vec::new(),
                    user: None,
                    subprotocols: Vec::new(),
                },
                state: None,
                accepted: None,
                close: None,
                sent: VecDeque::new(),
                events: VecDeque::new(),
                groups: Vec::new(),
                handle_event: run::handle_event::<C>,
                pure: |kind| C::PURE_EVENTS.contains(&kind),
            },
        );
        Communicator {
            host: self.clone(),
            id,
            consumer: PhantomData,
        }
    }

    /// Runs `handler` as connection `id`'s consumer; a panic (a trap in
    /// the component) closes the connection with 1011. Then delivers every
    /// group event the handler caused, until none is left.
    fn run(&self, id: ConnId, handler: impl FnOnce()) {
        self.run_one(id, handler);
        self.deliver();
    }

    fn run_one(&self, id: ConnId, handler: impl FnOnce()) {
        let view: Rc<RefCell<dyn host::Host>> = Rc::new(RefCell::new(View {
            world: self.world.clone(),
            id: Some(id),
        }));
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| host::with_host(view, handler)));
        if let Err(panic) = outcome {
            let why = panic
                .downcast_ref::<crate::adapter::Trap>()
                .map(|trap| trap.0.clone())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_string()))
                .unwrap_or_else(|| "the consumer panicked".into());
            self.world.borrow_mut().end(id, 1011, &why);
        }
    }

    fn deliver(&self) {
        loop {
            let next = {
                let mut world = self.world.borrow_mut();
                world.connections.iter_mut().find_map(|(id, connection)| {
                    let event = connection.events.pop_front()?;
                    Some((*id, event, connection.handle_event, connection.pure))
                })
            };
            let Some((id, event, handle_event, pure)) = next else {
                return;
            };
            let kind = serde_json::from_str::<Json>(&event)
                .ok()
                .and_then(|event| event.get("type")?.as_str().map(String::from))
                .unwrap_or_default();
            if pure(&kind) {
                self.render(id, event, handle_event);
            } else {
                self.run_one(id, || handle_event(event));
            }
        }
    }

    /// A pure handler runs outside any connection (no scope, no state, no
    /// database, no groups), as the host runs it; what it sends goes to
    /// the member.
    fn render(&self, id: ConnId, event: String, handle_event: fn(String)) {
        let view = Rc::new(RefCell::new(View {
            world: self.world.clone(),
            id: None,
        }));
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            host::with_host(view.clone(), || handle_event(event))
        }));
        let mut world = self.world.borrow_mut();
        match outcome {
            Ok(()) => {
                let frames = std::mem::take(&mut world.rendered());
                if let Some(connection) = world.connections.get_mut(&id)
                    && connection.close.is_none()
                {
                    connection.sent.extend(frames);
                }
            }
            Err(_) => world.end(id, 1011, "a pure event's handler failed"),
        }
    }
}

/// What the harness answers a consumer's host calls with, for one
/// connection (or none: a pure event's rendering).
struct View {
    world: Rc<RefCell<World>>,
    id: Option<ConnId>,
}

thread_local! {
    /// Frames a pure handler sent while it was rendering.
    static RENDERED: RefCell<Vec<Message>> = const { RefCell::new(Vec::new()) };
}

impl World {
    fn rendered(&mut self) -> Vec<Message> {
        RENDERED.with(|rendered| std::mem::take(&mut *rendered.borrow_mut()))
    }

    fn end(&mut self, id: ConnId, code: u16, why: &str) {
        if let Some(connection) = self.connections.get_mut(&id) {
            if connection.close.is_none() {
                connection.close = Some((code, why.to_string()));
            }
            for group in std::mem::take(&mut connection.groups) {
                if let Some(members) = self.groups.get_mut(&group) {
                    members.retain(|member| *member != id);
                }
            }
        }
        if code == 1011 {
            self.logs.push((
                Level::Error,
                format!("connection {id} closed with 1011: {why}"),
            ));
        }
    }
}

impl View {
    fn connection<R>(&self, f: impl FnOnce(&mut Connection) -> R) -> Option<R> {
        let id = self.id?;
        self.world.borrow_mut().connections.get_mut(&id).map(f)
    }

    fn rendering(&self, what: &str) -> bool {
        if self.id.is_none() {
            self.world.borrow_mut().logs.push((
                Level::Error,
                format!("a pure event's handler called {what}: it must use the event alone"),
            ));
            return true;
        }
        false
    }
}

impl host::Host for View {
    fn get_scope(&mut self) -> Scope {
        if self.rendering("get-scope") {
            return Scope {
                connection_id: String::new(),
                path: String::new(),
                url_kwargs: Vec::new(),
                query: Vec::new(),
                user: None,
                subprotocols: Vec::new(),
            };
        }
        self.connection(|connection| connection.scope.clone())
            .expect("a connection")
    }

    fn accept(&mut self, subprotocol: Option<&str>) {
        self.connection(|connection| {
            if connection.accepted.is_none() && connection.close.is_none() {
                connection.accepted = Some(subprotocol.map(String::from));
            }
        });
    }

    fn send(&mut self, message: &Message) -> Result<(), SendError> {
        if self.id.is_none() {
            RENDERED.with(|rendered| rendered.borrow_mut().push(message.clone()));
            return Ok(());
        }
        self.connection(|connection| {
            if connection.close.is_some() {
                return Err(SendError::Closed);
            }
            connection.sent.push_back(message.clone());
            Ok(())
        })
        .unwrap_or(Err(SendError::Closed))
    }

    fn close(&mut self, code: u16, reason: &str) {
        assert!(
            crate::close::allowed(code),
            "close code {code} is reserved; use 1000 or 3000-4999"
        );
        if let Some(id) = self.id {
            self.world.borrow_mut().end(id, code, reason);
        }
    }

    fn group_add(&mut self, group: &str) -> Result<(), GroupError> {
        check_group(group)?;
        if self.rendering("group-add") {
            return Err(GroupError::InvalidName("no connection".into()));
        }
        let id = self.id.expect("a connection");
        let mut world = self.world.borrow_mut();
        let members = world.groups.entry(group.to_string()).or_default();
        if !members.contains(&id) {
            members.push(id);
            if let Some(connection) = world.connections.get_mut(&id) {
                connection.groups.push(group.to_string());
            }
        }
        Ok(())
    }

    fn group_discard(&mut self, group: &str) -> Result<(), GroupError> {
        check_group(group)?;
        let Some(id) = self.id else { return Ok(()) };
        let mut world = self.world.borrow_mut();
        if let Some(members) = world.groups.get_mut(group) {
            members.retain(|member| *member != id);
        }
        if let Some(connection) = world.connections.get_mut(&id) {
            connection.groups.retain(|joined| joined != group);
        }
        Ok(())
    }

    fn group_send(&mut self, group: &str, event: &str) -> Result<(), GroupError> {
        check_group(group)?;
        let typed = serde_json::from_str::<Json>(event)
            .ok()
            .and_then(|event| event.get("type")?.as_str().map(String::from));
        match typed {
            None => {
                return Err(GroupError::InvalidEvent(
                    "not a JSON object with a string \"type\"".into(),
                ));
            }
            Some(kind) if kind.starts_with("host.") => {
                return Err(GroupError::InvalidEvent(
                    "host event types are the host's own".into(),
                ));
            }
            Some(_) => {}
        }
        let mut world = self.world.borrow_mut();
        let members = world.groups.get(group).cloned().unwrap_or_default();
        for member in members {
            if let Some(connection) = world.connections.get_mut(&member) {
                connection.events.push_back(event.to_string());
            }
        }
        Ok(())
    }

    fn db_insert(
        &mut self,
        table: &str,
        row: &[(String, Value)],
    ) -> Result<Vec<(String, Value)>, DbError> {
        if self.rendering("db-insert") {
            return Err(DbError::AccessDenied(
                "a pure handler has no database".into(),
            ));
        }
        insert(&self.world.borrow().db, table, row)
    }

    fn db_query(&mut self, sql: &str, params: &[Value]) -> Result<Rows, DbError> {
        if self.rendering("db-query") {
            return Err(DbError::AccessDenied(
                "a pure handler has no database".into(),
            ));
        }
        query(&self.world.borrow().db, sql, params)
    }

    fn get_state(&mut self) -> Option<Vec<u8>> {
        self.id?;
        self.connection(|connection| connection.state.clone())
            .flatten()
    }

    fn set_state(&mut self, value: &[u8]) -> Result<(), u32> {
        if value.len() > MAX_STATE_BYTES {
            return Err(MAX_STATE_BYTES as u32);
        }
        self.connection(|connection| connection.state = Some(value.to_vec()));
        Ok(())
    }

    fn log(&mut self, level: Level, message: &str) {
        self.world
            .borrow_mut()
            .logs
            .push((level, message.to_string()));
    }
}

fn check_group(group: &str) -> Result<(), GroupError> {
    let valid = !group.is_empty()
        && group.len() < 100
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(GroupError::InvalidName(
            "1 to 99 ASCII letters, digits, '-', '_' or '.'".into(),
        ))
    }
}

fn to_sql(value: &Value) -> rusqlite::types::Value {
    match value {
        Value::Null => rusqlite::types::Value::Null,
        Value::Integer(n) => rusqlite::types::Value::Integer(*n),
        Value::Real(x) => rusqlite::types::Value::Real(*x),
        Value::Text(text) => rusqlite::types::Value::Text(text.clone()),
        Value::Blob(bytes) => rusqlite::types::Value::Blob(bytes.clone()),
    }
}

fn from_sql(value: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Integer(n),
        ValueRef::Real(x) => Value::Real(x),
        ValueRef::Text(text) => Value::Text(String::from_utf8_lossy(text).into_owned()),
        ValueRef::Blob(bytes) => Value::Blob(bytes.to_vec()),
    }
}

fn db_error(err: rusqlite::Error) -> DbError {
    let text = err.to_string();
    if text.contains("constraint") {
        DbError::Constraint(text)
    } else if text.contains("no such table")
        || text.contains("no such column")
        || text.contains("has no column")
    {
        DbError::NoSuchTable(text)
    } else {
        DbError::Failed(text)
    }
}

/// Now, UTC, as Django writes datetimes: `YYYY-MM-DD HH:MM:SS.ffffff`.
fn now_django() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    let (seconds, micros) = (now.as_secs() as i64, now.subsec_micros());
    let (days, time) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Days to a civil date (proleptic Gregorian), after Howard Hinnant.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{micros:06}",
        time / 3_600,
        time % 3_600 / 60,
        time % 60
    )
}

/// `db-insert` as the host does it: what a guest cannot make is filled in.
fn insert(
    db: &rusqlite::Connection,
    table: &str,
    row: &[(String, Value)],
) -> Result<Vec<(String, Value)>, DbError> {
    struct Column {
        name: String,
        decl: String,
        not_null: bool,
        has_default: bool,
        primary_key: bool,
    }
    let mut stmt = db
        .prepare(&format!(
            "PRAGMA table_info(\"{}\")",
            table.replace('"', "\"\"")
        ))
        .map_err(db_error)?;
    let columns: Vec<Column> = stmt
        .query_map([], |row| {
            Ok(Column {
                name: row.get(1)?,
                decl: row.get::<_, String>(2)?.to_ascii_lowercase(),
                not_null: row.get::<_, i64>(3)? != 0,
                has_default: row.get::<_, Option<String>>(4)?.is_some(),
                primary_key: row.get::<_, i64>(5)? != 0,
            })
        })
        .map_err(db_error)?
        .collect::<Result<_, _>>()
        .map_err(db_error)?;
    if columns.is_empty() {
        return Err(DbError::NoSuchTable(format!("no table {table:?}")));
    }
    let mut values: Vec<(String, Value)> = Vec::new();
    for (name, value) in row {
        let column = columns
            .iter()
            .find(|column| &column.name == name)
            .ok_or_else(|| {
                DbError::NoSuchTable(format!("table {table:?} has no column {name:?}"))
            })?;
        let value = match value {
            Value::Text(text) if column.decl == "char(32)" => Value::Text(
                uuid::Uuid::try_parse(text)
                    .map_or_else(|_| text.clone(), |uuid| uuid.simple().to_string()),
            ),
            other => other.clone(),
        };
        values.push((name.clone(), value));
    }
    for column in &columns {
        if values.iter().any(|(name, _)| *name == column.name) {
            continue;
        }
        if column.primary_key && column.decl == "char(32)" {
            values.push((
                column.name.clone(),
                Value::Text(uuid::Uuid::now_v7().simple().to_string()),
            ));
        } else if column.decl.starts_with("datetime") && column.not_null && !column.has_default {
            values.push((column.name.clone(), Value::Text(now_django())));
        }
    }
    let names: Vec<String> = values
        .iter()
        .map(|(name, _)| format!("\"{name}\""))
        .collect();
    let marks: Vec<String> = (1..=values.len()).map(|n| format!("?{n}")).collect();
    let sql = format!(
        "INSERT INTO \"{table}\" ({}) VALUES ({}) RETURNING *",
        names.join(", "),
        marks.join(", ")
    );
    let mut stmt = db.prepare(&sql).map_err(db_error)?;
    let params: Vec<rusqlite::types::Value> =
        values.iter().map(|(_, value)| to_sql(value)).collect();
    stmt.query_row(rusqlite::params_from_iter(params), |row| {
        let mut out = Vec::new();
        for (index, column) in columns.iter().enumerate() {
            out.push((column.name.clone(), from_sql(row.get_ref(index)?)));
        }
        Ok(out)
    })
    .map_err(db_error)
}

/// `db-query` as the host does it: one read-only statement.
fn query(db: &rusqlite::Connection, sql: &str, params: &[Value]) -> Result<Rows, DbError> {
    let mut stmt = db.prepare(sql).map_err(db_error)?;
    if !stmt.readonly() {
        return Err(DbError::Invalid(
            "db-query runs read-only statements; use db-insert to write".into(),
        ));
    }
    let columns: Vec<String> = stmt.column_names().map(String::from).collect();
    let params: Vec<rusqlite::types::Value> = params.iter().map(to_sql).collect();
    let mut rows = stmt
        .query(rusqlite::params_from_iter(params))
        .map_err(db_error)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db_error)? {
        let mut values = Vec::new();
        for index in 0..columns.len() {
            values.push(from_sql(row.get_ref(index).map_err(db_error)?));
        }
        out.push(values);
    }
    Ok(Rows { columns, rows: out })
}

/// One client of a consumer `C`.
pub struct Communicator<C> {
    host: TestHost,
    id: ConnId,
    consumer: PhantomData<C>,
}

/// How `connect` went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    /// The consumer accepted.
    pub accepted: bool,
    /// The subprotocol it chose.
    pub subprotocol: Option<String>,
    /// The code it closed with, when it refused that way.
    pub close_code: Option<u16>,
}

impl<C: Consumer> Communicator<C> {
    fn scope(&self, edit: impl FnOnce(&mut Scope)) {
        let mut world = self.host.world.borrow_mut();
        edit(
            &mut world
                .connections
                .get_mut(&self.id)
                .expect("a connection")
                .scope,
        );
    }

    /// Adds a url kwarg, as a route would capture it.
    pub fn url_kwarg(self, name: &str, value: &str) -> Self {
        self.scope(|scope| scope.url_kwargs.push((name.into(), value.into())));
        self
    }

    /// Adds a query-string pair.
    pub fn query(self, name: &str, value: &str) -> Self {
        self.scope(|scope| scope.query.push((name.into(), value.into())));
        self
    }

    /// Offers a subprotocol.
    pub fn subprotocol(self, name: &str) -> Self {
        self.scope(|scope| scope.subprotocols.push(name.into()));
        self
    }

    /// Logs the connection in as this user (id as stored, name, e-mail).
    pub fn user(self, id: &str, name: Option<&str>, email: &str) -> Self {
        self.scope(|scope| {
            scope.user = Some(WitUser {
                id: id.into(),
                name: name.map(String::from),
                email: email.into(),
            })
        });
        self
    }

    /// Runs `connect`.
    pub fn connect(&mut self) -> Connected {
        self.host.run(self.id, run::connect::<C>);
        let world = self.host.world.borrow();
        let connection = &world.connections[&self.id];
        Connected {
            accepted: connection.accepted.is_some() && connection.close.is_none(),
            subprotocol: connection.accepted.clone().flatten(),
            close_code: connection.close.as_ref().map(|(code, _)| *code),
        }
    }

    /// The client sends a text message.
    pub fn send_text(&mut self, text: &str) {
        let message = Message::Text(text.to_string());
        self.host.run(self.id, || run::receive::<C>(message));
    }

    /// The client sends a value as JSON text.
    pub fn send_json(&mut self, value: &impl Serialize) {
        self.send_text(&serde_json::to_string(value).expect("serialisable"));
    }

    /// The client sends a binary message.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        let message = Message::Binary(bytes.to_vec());
        self.host.run(self.id, || run::receive::<C>(message));
    }

    /// The next message the client got, if any.
    pub fn receive(&mut self) -> Option<Message> {
        self.host.deliver();
        self.host
            .world
            .borrow_mut()
            .connections
            .get_mut(&self.id)?
            .sent
            .pop_front()
    }

    /// The next text message, if any.
    pub fn receive_text(&mut self) -> Option<String> {
        match self.receive()? {
            Message::Text(text) => Some(text),
            Message::Binary(_) => panic!("expected a text message, got a binary one"),
        }
    }

    /// The next text message, parsed as JSON, if any.
    pub fn receive_json(&mut self) -> Option<Json> {
        let text = self.receive_text()?;
        Some(
            serde_json::from_str(&text).unwrap_or_else(|err| panic!("{text:?} is not JSON: {err}")),
        )
    }

    /// Whether nothing is waiting for the client.
    pub fn receive_nothing(&mut self) -> bool {
        self.host.deliver();
        self.host.world.borrow().connections[&self.id]
            .sent
            .is_empty()
    }

    /// The host checks the connection's login again (`host.recheck`).
    pub fn recheck(&mut self) {
        self.host.run(self.id, || {
            run::handle_event::<C>(r#"{"type":"host.recheck"}"#.into())
        });
    }

    /// How the connection was closed, if it was: (code, reason).
    pub fn closed(&self) -> Option<(u16, String)> {
        self.host.world.borrow().connections[&self.id].close.clone()
    }

    /// The client goes away with `code`; `disconnect` runs and the
    /// connection leaves its groups.
    pub fn disconnect(&mut self, code: u16) {
        if self.closed().is_some_and(|(code, _)| code == 1011) {
            return;
        }
        self.host.run(self.id, || run::disconnect::<C>(code));
        self.host
            .world
            .borrow_mut()
            .end(self.id, code, "disconnected");
    }

    /// The state the host keeps for the connection, as the consumer type.
    pub fn state(&self) -> Option<C> {
        let world = self.host.world.borrow();
        let blob = world.connections[&self.id].state.as_ref()?;
        Some(serde_json::from_slice(blob).expect("the consumer's state"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_look_like_djangos() {
        let now = now_django();
        assert_eq!(now.len(), 26, "{now}");
        assert_eq!(&now[4..5], "-");
        assert_eq!(&now[10..11], " ");
        assert_eq!(&now[19..20], ".");
        assert!(now.starts_with("20"));
    }
}
