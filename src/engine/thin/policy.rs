//! How much room a thin volume gets, and when it asks for more.
//!
//! VDSM gives every thin disk 2.5 GiB up front and grows it by 2.5 GiB
//! when less than 2 GiB is free: a guest writing faster than one extend
//! per 2 GiB pauses. Cairn starts smaller and sizes both the free-space
//! threshold and the step from the write rate it observes: an idle disk
//! costs at most `start`, a fast writer gets room for several seconds of
//! writing per extend and asks early enough to never reach the end.

use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// The room a new thin volume starts with.
    pub start: u64,
    /// The least an extend adds.
    pub step: u64,
    /// Ask for more when less than this is free.
    pub free_threshold: u64,
    /// Adapt step and threshold to the observed write rate.
    pub adaptive: bool,
    /// Adaptive: the free room must cover this long at the write rate
    /// (several extend cycles: VDSM's best cycle is 0.77 s, Cairn's is
    /// tens of milliseconds).
    pub headroom: Duration,
    /// Adaptive: an extend adds this long at the write rate.
    pub step_time: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            start: GIB,
            step: GIB,
            free_threshold: 512 * MIB,
            adaptive: true,
            headroom: Duration::from_secs(2),
            step_time: Duration::from_secs(4),
        }
    }
}

/// The write rate of one drive, from the allocations seen at its events.
#[derive(Debug, Clone, Default)]
pub struct Rate {
    last: Option<(Instant, u64)>,
    /// Bytes per second, decaying slowly so a burst is remembered.
    bytes_per_sec: f64,
}

impl Rate {
    /// Records that the guest had written up to `allocation` at `at`.
    pub fn observe(&mut self, at: Instant, allocation: u64) {
        if let Some((t, a)) = self.last {
            let secs = at.duration_since(t).as_secs_f64();
            if secs > 0.0 {
                let now = allocation.saturating_sub(a) as f64 / secs;
                // Up at once, down by half per observation.
                self.bytes_per_sec = now.max(self.bytes_per_sec * 0.5);
            }
        }
        self.last = Some((at, allocation));
    }

    pub fn bytes_per_sec(&self) -> f64 {
        self.bytes_per_sec
    }
}

impl Policy {
    /// The free room below which the drive asks for more.
    pub fn threshold_free(&self, rate: &Rate) -> u64 {
        let adaptive = if self.adaptive {
            (rate.bytes_per_sec() * self.headroom.as_secs_f64()) as u64
        } else {
            0
        };
        self.free_threshold.max(adaptive)
    }

    /// The room to ask for when the guest has written up to `allocation`
    /// of `room`, at most `cap`.
    pub fn next_room(&self, room: u64, allocation: u64, rate: &Rate, cap: u64) -> u64 {
        let step = if self.adaptive {
            self.step
                .max((rate.bytes_per_sec() * self.step_time.as_secs_f64()) as u64)
        } else {
            self.step
        };
        // Past the threshold already (a fast writer, a late event): the
        // new room leaves a full threshold free after the guest's offset.
        let wanted = (room + step).max(allocation + step + self.threshold_free(rate));
        wanted.next_multiple_of(MIB).min(cap)
    }

    /// Where the write threshold goes for `room` (0: none, the room is
    /// all there can be).
    pub fn threshold(&self, room: u64, rate: &Rate, cap: u64) -> u64 {
        if room >= cap {
            return 0;
        }
        room.saturating_sub(self.threshold_free(rate)).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_disk_stays_small_and_a_fast_one_gets_room_ahead() {
        let p = Policy::default();
        let idle = Rate::default();
        let cap = 110 * GIB;
        assert!(p.start <= GIB);
        assert_eq!(p.threshold(GIB, &idle, cap), GIB - 512 * MIB);
        assert_eq!(p.next_room(GIB, 300 * MIB, &idle, cap), 2 * GIB);
        // A guest past the threshold gets a step and a threshold beyond it.
        assert_eq!(p.next_room(GIB, 900 * MIB, &idle, cap), 2436 * MIB);
        let mut fast = Rate::default();
        let t = Instant::now();
        fast.observe(t, 0);
        fast.observe(t + Duration::from_secs(1), 1500 * MIB);
        assert!(fast.bytes_per_sec() > 1400.0 * MIB as f64);
        // 2 s at 1.5 GiB/s free, 4 s of writing per extend.
        assert_eq!(p.threshold(8 * GIB, &fast, cap), 8 * GIB - 3000 * MIB);
        assert!(p.next_room(8 * GIB, 5 * GIB, &fast, cap) >= 8 * GIB + 6000 * MIB);
        // Never past the cap; no threshold once there.
        assert_eq!(p.next_room(109 * GIB, 109 * GIB, &fast, cap), cap);
        assert_eq!(p.threshold(cap, &fast, cap), 0);
        // The rate decays by half per quiet observation.
        fast.observe(t + Duration::from_secs(2), 1500 * MIB + 1);
        assert!(fast.bytes_per_sec() < 800.0 * MIB as f64);
    }
}
