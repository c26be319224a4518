//! Deadlines from durations that came from outside (a config, a registry's
//! `Retry-After`): `now + d` overflows for a large enough `d`, and an overflow
//! aborts the process. [`after`] saturates instead.

use std::time::{Duration, Instant};

/// A century: what "never" means for a deadline.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `d` from now, saturating at a century away. Tokio callers take `.into()`.
pub fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d).or_else(|| now.checked_add(FAR)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_duration_overflows() {
        let far = super::after(std::time::Duration::MAX);
        assert!(far > std::time::Instant::now() + std::time::Duration::from_secs(3600 * 24 * 365));
    }
}
