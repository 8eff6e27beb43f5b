//! The one shape of a chain module. Each module (balances, mq, registry, contracts; staking,
//! rewards and governance next) owns:
//! - its state keys, all under its [`Module::PREFIX`] (a test checks no prefix overlaps another);
//! - its genesis settings, a field of [`GenesisConfig`] it reads in [`Module::genesis`];
//! - its calls, one enum of [`phala_types::Call`], each with a declared [`Weight`];
//! - its events, one enum, which the node indexes with the transaction that caused them.
//!
//! The runtime's dispatcher is the only place that routes a call to its module. Modules are
//! layered in [`LAYERS`] order: a module may use only the modules before it (a test reads the
//! sources), so there are no cycles and the next module slots in at the end.

use crate::{
    BlockContext, TxError, balances,
    config::GenesisConfig,
    contracts, mq,
    mq::Outbox,
    registry,
    state::{Checkpoint, Overlay, StateRead},
    weights::Weight,
};
use phala_types::{Address, Digest, UpwardMessage};
use serde::Serialize;

/// The chain modules, each after the modules it may use.
pub const LAYERS: [&str; 4] = ["balances", "mq", "registry", "contracts"];

/// What a call sees while it runs: the block's state, its outputs and the chain's constants.
pub struct Env<'a, 'b, S: StateRead + ?Sized> {
    pub state: &'a mut Overlay<'b, S>,
    /// Downward messages to workers.
    pub outbox: &'a mut Outbox,
    /// Events for users, in order.
    pub events: &'a mut Vec<Event>,
    pub block: &'a BlockContext,
    pub genesis_hash: &'a Digest,
    pub config: &'a GenesisConfig,
}

/// A point to undo a call's effects back to: its writes, downward messages and events.
pub struct Mark {
    state: Checkpoint,
    messages: usize,
    events: usize,
}

impl<S: StateRead + ?Sized> Env<'_, '_, S> {
    /// Records that something happened, for users to read (rolled back with a failed call).
    pub fn emit(&mut self, event: impl Into<Event>) {
        self.events.push(event.into());
    }

    /// Where the effects stand now, for [`Env::rollback`].
    pub fn mark(&self) -> Mark {
        Mark {
            state: self.state.checkpoint(),
            messages: self.outbox.messages.len(),
            events: self.events.len(),
        }
    }

    /// Undoes every write, message and event made since `mark`.
    pub fn rollback(&mut self, mark: Mark) {
        self.state.restore(mark.state);
        self.outbox.messages.truncate(mark.messages);
        self.events.truncate(mark.events);
    }
}

/// Who made a call: the transaction's signer and the nonce it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub signer: Address,
    pub nonce: u64,
}

/// A chain module: the unit that owns state keys, genesis settings, calls and events.
pub trait Module {
    /// Every state key the module writes starts with this.
    const PREFIX: &'static [u8];
    /// The module's calls.
    type Call;

    /// Writes the module's genesis state from its part of `config`.
    fn genesis<S: StateRead + ?Sized>(state: &mut Overlay<S>, config: &GenesisConfig);

    /// An upper bound on the cost of `call` beyond every transaction's base cost.
    fn weight(call: &Self::Call) -> Weight;

    /// Runs `call`, whose fee and nonce `origin` paid. An error rolls back every write,
    /// message and event the call made.
    fn dispatch<S: StateRead + ?Sized>(
        env: &mut Env<'_, '_, S>,
        origin: &Origin,
        call: &Self::Call,
    ) -> Result<(), TxError>;

    /// Takes an accepted upward message if its topic is the module's: `Ok(false)` if it is
    /// not, an error if the module refuses it (then nothing it did is kept).
    fn on_upward<S: StateRead + ?Sized>(
        _env: &mut Env<'_, '_, S>,
        _message: &UpwardMessage,
    ) -> Result<bool, TxError> {
        Ok(false)
    }
}

/// Something that happened on chain, by the module it happened in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "module")]
pub enum Event {
    Balances(balances::Event),
    Mq(mq::Event),
    Registry(registry::Event),
    Contracts(contracts::Event),
}

impl From<balances::Event> for Event {
    fn from(event: balances::Event) -> Self {
        Event::Balances(event)
    }
}

impl From<mq::Event> for Event {
    fn from(event: mq::Event) -> Self {
        Event::Mq(event)
    }
}

impl From<registry::Event> for Event {
    fn from(event: registry::Event) -> Self {
        Event::Registry(event)
    }
}

impl From<contracts::Event> for Event {
    fn from(event: contracts::Event) -> Self {
        Event::Contracts(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIXES: [&[u8]; 4] = [
        balances::Balances::PREFIX,
        mq::Mq::PREFIX,
        registry::Registry::PREFIX,
        contracts::Contracts::PREFIX,
    ];

    #[test]
    fn no_module_prefix_overlaps_another() {
        for (i, a) in PREFIXES.iter().enumerate() {
            assert!(a.ends_with(b"/"), "{}", String::from_utf8_lossy(a));
            for b in &PREFIXES[i + 1..] {
                assert!(!a.starts_with(b) && !b.starts_with(a));
            }
        }
    }

    /// Each module's source names only the modules before it in [`LAYERS`].
    #[test]
    fn modules_use_only_earlier_layers() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        for (i, module) in LAYERS.iter().enumerate() {
            let source = std::fs::read_to_string(format!("{dir}/{module}.rs")).unwrap();
            for later in &LAYERS[i + 1..] {
                for needle in [format!("{later}::"), format!("crate::{later}")] {
                    let uses = source
                        .lines()
                        .filter(|line| !line.trim_start().starts_with("//"))
                        .any(|line| {
                            line.contains(&needle)
                                && !line.contains(&format!("phala_types::{later}"))
                        });
                    assert!(!uses, "{module} uses the later module {later}");
                }
            }
        }
    }
}
