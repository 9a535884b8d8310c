//! `--trace-exits`: each vCPU thread counts the exits it saw by reason; `run` adds them up.

use std::collections::BTreeMap;

/// Exits by reason (`--trace-exits`).
#[derive(Default)]
pub struct Trace(pub BTreeMap<&'static str, u64>);

impl Trace {
    pub fn count(&mut self, reason: &'static str) {
        *self.0.entry(reason).or_default() += 1;
    }
}
