//! Cairn: a storage manager for KVM hosts.
//!
//! Layers, top to bottom:
//! - [`api`]: adapters (JSON-RPC over Unix socket, HTTP and WebSocket).
//! - [`engine`]: pools, domains, images, volumes, tasks, resource manager.
//! - [`backend`]: storage domain implementations (file domains).
//! - [`format`]: on-storage metadata formats.
//! - [`primitives`]: qemu-img, image probing, durable writes, leases, mounts.

pub mod api;
pub mod backend;
pub mod client;
pub mod config;
pub mod engine;
pub mod error;
pub mod failpoint;
pub mod format;
pub mod primitives;
pub mod types;

pub use error::{Error, Result};

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
