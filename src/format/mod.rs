//! On-storage formats, shared by every backend and readable by VDSM.

pub mod block_layout;
pub mod domain_md;
pub mod mailbox;
pub mod manifest;
pub mod vg_tags;
pub mod volume_md;
pub mod xleases;
