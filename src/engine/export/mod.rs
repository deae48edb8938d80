//! Volumes served to other programs: NBD exports and image transfer
//! tickets.

pub mod nbd;
pub mod tickets;
