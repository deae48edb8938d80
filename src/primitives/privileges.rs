//! Capabilities cairnd never needs, given up at start.
//!
//! cairnd must stay root to mount, open storage and run sanlock, but not
//! all of root: whoever took it over must not load kernel modules, trace
//! other processes, reboot, reconfigure the network or set the clock. The
//! capabilities below leave the bounding set (no child regains them) and
//! the process's own sets. Linux keeps capabilities per thread, so this
//! runs before any thread is started; children inherit the result.

use std::io;

use rustix::thread::CapabilitySet;

/// What no part of cairnd (mounts, sanlock, qemu, the network front) uses.
const NEVER_NEEDED: [CapabilitySet; 24] = [
    CapabilitySet::LINUX_IMMUTABLE,
    CapabilitySet::NET_BROADCAST,
    CapabilitySet::NET_ADMIN,
    CapabilitySet::NET_RAW,
    CapabilitySet::IPC_OWNER,
    CapabilitySet::SYS_MODULE,
    CapabilitySet::SYS_CHROOT,
    CapabilitySet::SYS_PTRACE,
    CapabilitySet::SYS_PACCT,
    CapabilitySet::SYS_BOOT,
    CapabilitySet::SYS_TIME,
    CapabilitySet::SYS_TTY_CONFIG,
    CapabilitySet::LEASE,
    CapabilitySet::AUDIT_CONTROL,
    CapabilitySet::SETFCAP,
    CapabilitySet::MAC_OVERRIDE,
    CapabilitySet::MAC_ADMIN,
    CapabilitySet::SYSLOG,
    CapabilitySet::WAKE_ALARM,
    CapabilitySet::BLOCK_SUSPEND,
    CapabilitySet::AUDIT_READ,
    CapabilitySet::PERFMON,
    CapabilitySet::BPF,
    CapabilitySet::CHECKPOINT_RESTORE,
];

/// Drops [`NEVER_NEEDED`]; a process that does not hold them (not root)
/// has nothing to drop. Call it while the process has a single thread.
pub fn shed_unneeded_capabilities() -> io::Result<()> {
    let mut sets = rustix::thread::capabilities(None)?;
    if sets.permitted.is_empty() {
        return Ok(());
    }
    let mut dropped = CapabilitySet::empty();
    for cap in NEVER_NEEDED {
        // A kernel older than the capability does not know it: skip it.
        match rustix::thread::remove_capability_from_bounding_set(cap) {
            Ok(()) | Err(rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(e.into()),
        }
        dropped |= cap;
    }
    sets.effective -= dropped;
    sets.permitted -= dropped;
    sets.inheritable -= dropped;
    rustix::thread::set_capabilities(None, sets)?;
    Ok(())
}
