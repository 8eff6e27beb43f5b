//! The `phala` command's library part: the local network launcher (validators, pRuntimes and
//! pherries) shared with tests and the benchmark, and the commands themselves.

pub mod commands;
pub mod devnet;
pub mod workers;
