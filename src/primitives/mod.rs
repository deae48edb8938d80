//! Building blocks with no knowledge of pools or domains.

pub mod copy;
pub mod durable;
pub mod extents;
pub mod lease;
pub mod mount;
pub mod pipeline;
pub mod probe;
pub mod qcow2_create;
pub mod qemu_img;
pub mod sanlock;
pub mod sparsify;
