//! `state`: the blob the host keeps for a connection across instances.

use crate::runtime::bindings::state;
use crate::runtime::conn::ConnState;

impl state::Host for ConnState {
    fn get_state(&mut self) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.state.clone())
    }

    fn set_state(&mut self, value: Vec<u8>) -> wasmtime::Result<Result<(), u32>> {
        let limit = self.consumer.config().sandbox.max_state_bytes;
        if value.len() > limit {
            return Ok(Err(limit as u32));
        }
        self.state = Some(value);
        Ok(Ok(()))
    }
}
