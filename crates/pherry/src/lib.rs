//! pherry: the untrusted relayer between a chain node and a pRuntime. It can delay, never
//! forge: the pRuntime checks everything it is given ([`batch`] only gathers it), and the chain
//! checks every signed message pherry carries up ([`relay`]).

pub mod batch;
pub mod relay;
