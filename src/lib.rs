//! Cairn: a storage manager for KVM hosts.
//!
//! Layers, top to bottom:
//! - [`api`]: adapters (JSON-RPC over Unix socket, HTTP and WebSocket; the
//!   image transfer data path).
//! - [`engine`]: pools, domains, images, volumes, tasks, resource manager.
//! - [`backend`]: storage domain implementations (file domains).
//! - [`format`]: on-storage metadata formats.
//! - [`primitives`]: qemu-img, image probing, durable writes, leases, mounts.
//!
//! [`client`] and [`transfer`] are the client side, for the CLI and tests.

pub mod api;
pub mod backend;
pub mod client;
pub mod config;
pub mod engine;
pub mod error;
pub mod failpoint;
pub mod format;
pub mod logging;
pub mod pki;
pub mod primitives;
pub mod tls;
pub mod transfer;
pub mod types;

pub use error::{Error, Result};

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
