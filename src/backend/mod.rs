//! Storage domain backends. File domains are here; block (LVM) domains come
//! with the multi-host work.

pub mod file;
