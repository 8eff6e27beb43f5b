//! The `phala` command's library part: the local network launcher shared with tests and the
//! benchmark, and the commands themselves.

pub mod commands;
pub mod devnet;
