//! The `phala` command's library part: the local network launcher (validators, pRuntimes and
//! pherries) shared with tests and the benchmark, the commands themselves, and the demo.

pub mod commands;
pub mod contract;
pub mod demo;
pub mod devnet;
pub mod workers;
