//! (being written)

use crate::api::{CkptContext, Plugin, RestartContext};

#[derive(Default)]
pub struct P;

impl Plugin for P {
    fn name(&self) -> &'static str {
        "eintr"
    }
    fn checkpoint(&mut self, _ctx: &mut CkptContext) -> Result<(), String> {
        Ok(())
    }
    fn restart(&mut self, _ctx: &mut RestartContext) -> Result<(), String> {
        Ok(())
    }
}
