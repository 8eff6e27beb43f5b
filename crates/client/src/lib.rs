//! The node's JSON-RPC API: its types, and a typed client used by the CLI and SDK users.

pub mod api;
