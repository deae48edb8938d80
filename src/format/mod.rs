//! On-storage formats, shared by every backend and readable by VDSM.

pub mod domain_md;
pub mod manifest;
pub mod volume_md;
pub mod xleases;
