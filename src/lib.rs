//! bigid-auth-mcp: an MCP server that authenticates AI agents against BigID.

pub mod bigid;
pub mod ca;
pub mod cache;
pub mod check;
pub mod cli;
pub mod config;
pub mod demo;
pub mod disk_cache;
mod error_chain;
pub mod flows;
pub mod host_env;
pub mod jwt;
pub mod oauth;
pub mod principal;
pub mod scrub;
pub mod secret;
pub mod server;
pub mod skill;
pub mod tools;
pub mod transport;
