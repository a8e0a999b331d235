//! bigid-auth-mcp: an MCP server that authenticates AI agents against BigID.

pub mod bigid;
pub mod ca;
pub mod cache;
pub mod check;
pub mod config;
pub mod demo;
mod error_chain;
pub mod jwt;
pub mod oauth;
pub mod principal;
pub mod secret;
pub mod server;
pub mod tools;
pub mod transport;
