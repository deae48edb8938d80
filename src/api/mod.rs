//! API adapters. They parse and validate parameters, call the engine, and
//! shape results; no storage logic lives here.

pub mod cinder;
pub mod errors;
pub mod front;
pub mod params;
pub mod rpc;
pub mod server;
pub mod transfer;
pub mod verbs;
