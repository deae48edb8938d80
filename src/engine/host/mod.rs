//! What a host has of its own: storage connections (mounts), domain
//! monitoring and the embedded local domain and pool.

pub mod connections;
pub mod devices;
pub mod embedded;
pub mod monitor;
