//! The host calls, in one place: the real imports inside a component, and,
//! natively, whatever host the test harness installs (see `testing`).
//! Everything else in the SDK calls these, so a consumer runs the same code
//! in a test as in the component.

pub use crate::bindings::consumer_host::consumer::connection::SendError;
pub use crate::bindings::consumer_host::consumer::database::{DbError, Rows, Value};
pub use crate::bindings::consumer_host::consumer::groups::GroupError;
pub use crate::bindings::consumer_host::consumer::logging::Level;
pub use crate::bindings::consumer_host::consumer::types::{Message, Scope};

#[cfg(target_arch = "wasm32")]
mod imports {
    use super::*;
    use crate::bindings::consumer_host::consumer::{connection, database, groups, logging, state};

    pub fn get_scope() -> Scope {
        connection::get_scope()
    }
    pub fn accept(subprotocol: Option<&str>) {
        connection::accept(subprotocol)
    }
    pub fn send(message: &Message) -> Result<(), SendError> {
        connection::send(message)
    }
    pub fn close(code: u16, reason: &str) {
        connection::close(code, reason)
    }
    pub fn group_add(group: &str) -> Result<(), GroupError> {
        groups::group_add(group)
    }
    pub fn group_discard(group: &str) -> Result<(), GroupError> {
        groups::group_discard(group)
    }
    pub fn group_send(group: &str, event: &str) -> Result<(), GroupError> {
        groups::group_send(group, event)
    }
    pub fn db_insert(
        table: &str,
        row: &[(String, Value)],
    ) -> Result<Vec<(String, Value)>, DbError> {
        database::db_insert(table, row)
    }
    pub fn db_query(sql: &str, params: &[Value]) -> Result<Rows, DbError> {
        database::db_query(sql, params)
    }
    pub fn get_state() -> Option<Vec<u8>> {
        state::get_state()
    }
    pub fn set_state(value: &[u8]) -> Result<(), u32> {
        state::set_state(value)
    }
    pub fn log(level: Level, message: &str) {
        logging::log(level, message)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imports {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    /// A host for consumers run natively: the test harness's.
    pub trait Host {
        /// `get-scope`
        fn get_scope(&mut self) -> Scope;
        /// `accept`
        fn accept(&mut self, subprotocol: Option<&str>);
        /// `send`
        fn send(&mut self, message: &Message) -> Result<(), SendError>;
        /// `close`
        fn close(&mut self, code: u16, reason: &str);
        /// `group-add`
        fn group_add(&mut self, group: &str) -> Result<(), GroupError>;
        /// `group-discard`
        fn group_discard(&mut self, group: &str) -> Result<(), GroupError>;
        /// `group-send`
        fn group_send(&mut self, group: &str, event: &str) -> Result<(), GroupError>;
        /// `db-insert`
        fn db_insert(
            &mut self,
            table: &str,
            row: &[(String, Value)],
        ) -> Result<Vec<(String, Value)>, DbError>;
        /// `db-query`
        fn db_query(&mut self, sql: &str, params: &[Value]) -> Result<Rows, DbError>;
        /// `get-state`
        fn get_state(&mut self) -> Option<Vec<u8>>;
        /// `set-state`
        fn set_state(&mut self, value: &[u8]) -> Result<(), u32>;
        /// `log`
        fn log(&mut self, level: Level, message: &str);
    }

    thread_local! {
        static CURRENT: RefCell<Option<Rc<RefCell<dyn Host>>>> = const { RefCell::new(None) };
    }

    /// Runs `f` with `host` answering the host calls made on this thread.
    pub fn with_host<R>(host: Rc<RefCell<dyn Host>>, f: impl FnOnce() -> R) -> R {
        let previous = CURRENT.with(|current| current.replace(Some(host)));
        let result = f();
        CURRENT.with(|current| *current.borrow_mut() = previous);
        result
    }

    fn current<R>(call: impl FnOnce(&mut dyn Host) -> R) -> R {
        let host = CURRENT.with(|current| current.borrow().clone()).expect(
            "a host call outside a consumer-host instance: run consumers natively through \
             consumer_host_sdk::testing",
        );
        let mut host = host.borrow_mut();
        call(&mut *host)
    }

    pub fn get_scope() -> Scope {
        current(|host| host.get_scope())
    }
    pub fn accept(subprotocol: Option<&str>) {
        current(|host| host.accept(subprotocol))
    }
    pub fn send(message: &Message) -> Result<(), SendError> {
        current(|host| host.send(message))
    }
    pub fn close(code: u16, reason: &str) {
        current(|host| host.close(code, reason))
    }
    pub fn group_add(group: &str) -> Result<(), GroupError> {
        current(|host| host.group_add(group))
    }
    pub fn group_discard(group: &str) -> Result<(), GroupError> {
        current(|host| host.group_discard(group))
    }
    pub fn group_send(group: &str, event: &str) -> Result<(), GroupError> {
        current(|host| host.group_send(group, event))
    }
    pub fn db_insert(
        table: &str,
        row: &[(String, Value)],
    ) -> Result<Vec<(String, Value)>, DbError> {
        current(|host| host.db_insert(table, row))
    }
    pub fn db_query(sql: &str, params: &[Value]) -> Result<Rows, DbError> {
        current(|host| host.db_query(sql, params))
    }
    pub fn get_state() -> Option<Vec<u8>> {
        current(|host| host.get_state())
    }
    pub fn set_state(value: &[u8]) -> Result<(), u32> {
        current(|host| host.set_state(value))
    }
    pub fn log(level: Level, message: &str) {
        current(|host| host.log(level, message))
    }
}

pub use imports::*;
