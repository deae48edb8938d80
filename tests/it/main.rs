//! Integration tests: the real cairnd binary, real qemu-img, real file
//! systems (loop-mounted where a test needs its own).

mod api;
mod bad_input;
mod block;
mod block_refusals;
mod cinder;
mod cli;
mod common;
mod compat;
mod concurrency;
mod contract;
mod crash;
mod example;
mod filesystems;
mod gluster;
mod guest;
mod image_ops;
mod lvm;
mod membership;
mod monitoring;
mod multihost;
mod nbd;
mod probe_fuzz;
mod remote;
mod sanlock;
mod schema;
mod security;
mod thin;
mod transfer;
mod upgrade;
mod vm;
mod websocket;
