//! The agent's heap between bursts: once the controller has been quiet for
//! a while after reconciling, what the allocator holds free goes back to
//! the kernel (`malloc_trim`), so a burst of creates does not leave the
//! agent's RSS at its peak until the next burst (issue 19's 1,000
//! containers). Owns nothing but that call; it must not touch containers.
//!
//! `main` fixes glibc's mmap threshold (which bounds what is kept at the
//! top of each arena); this gives back the free pages inside the arenas,
//! which the threshold does not reach.

use std::time::Duration;

/// Give the allocator's free pages back to the kernel. True when some were.
pub fn give_back() -> bool {
    // SAFETY: malloc_trim takes the amount of slack to keep at the top of
    // the heap; it only returns free memory and is safe to call any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Whether to give the heap back now: something happened since the last
/// time (`busy_since_trim`), and nothing in the last tick.
pub fn due(busy_since_trim: bool, last: u64, now: u64) -> bool {
    busy_since_trim && last == now
}

/// Every `quiet`, read `activity` (a count that grows with the work done,
/// e.g. reconciles); after a tick in which it grew, the first tick in
/// which it did not gives the heap back. Runs until dropped.
pub async fn give_back_when_idle(activity: impl Fn() -> u64, quiet: Duration) {
    let mut tick = tokio::time::interval(quiet);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = activity();
    let mut busy = false;
    loop {
        tick.tick().await;
        let now = activity();
        if due(busy, last, now) {
            let gave = give_back();
            tracing::debug!(gave, "heap given back after a quiet spell");
            busy = false;
        } else if now != last {
            busy = true;
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_quiet_tick_after_a_busy_one_gives_back() {
        assert!(!due(false, 5, 5), "never busy: nothing to give back");
        assert!(!due(true, 5, 6), "still busy");
        assert!(due(true, 6, 6), "quiet after busy");
    }

    #[test]
    fn freed_memory_goes_back() {
        // A burst's worth of small blocks, freed below a block still in
        // use: free() cannot shrink the heap past it, so glibc keeps them.
        let blocks: Vec<Vec<u8>> = (0..20_000).map(|i| vec![i as u8; 1000]).collect();
        let pin = vec![1u8; 64];
        drop(blocks);
        assert!(give_back(), "malloc_trim found nothing to give back");
        drop(pin);
    }
}
