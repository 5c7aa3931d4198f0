//! Pacing of attempts: exponential backoff with full jitter from a seedable generator, and the
//! low-speed watch. Pure: time and randomness come in as arguments.

use std::time::Duration;

use tokio::time::Instant;

/// xorshift64* (Vigna): tiny, seedable, and plenty for spreading retries apart. Not for
/// anything secret.
#[derive(Debug, Clone)]
pub(super) struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Jitter {
        // The state must never be 0; mix the seed so nearby seeds diverge at once.
        Jitter(splitmix64(seed) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The sleep before retry number `retry` (1 = the first retry): "full jitter", uniform in
/// `[0, min(max, base · 2^(retry−1))]`, so that many devices failing together do not come
/// back together.
pub(super) fn backoff(retry: u32, base: Duration, max: Duration, random: u64) -> Duration {
    let factor = 1u32
        .checked_shl(retry.saturating_sub(1))
        .unwrap_or(u32::MAX);
    let cap = base.checked_mul(factor).unwrap_or(max).min(max);
    let cap_ns = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(match cap_ns.checked_add(1) {
        Some(n) => random % n,
        None => random,
    })
}

/// Aborts an attempt that averages below `min_bytes_per_sec` over consecutive windows of
/// `window` (curl's `--speed-limit`/`--speed-time`). A stalled connection is the read timeout's
/// job; this catches the trickle that keeps it alive.
#[derive(Debug)]
pub(super) struct SpeedWatch {
    min_bytes_per_sec: u64,
    window: Duration,
    window_start: Instant,
    bytes: u64,
}

/// What [`SpeedWatch::record`] found too slow: `bytes` in `elapsed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TooSlow {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl SpeedWatch {
    /// A watch whose first window starts at `now`. `min_bytes_per_sec == 0` disables it.
    pub fn new(now: Instant, min_bytes_per_sec: u64, window: Duration) -> SpeedWatch {
        SpeedWatch {
            min_bytes_per_sec,
            window,
            window_start: now,
            bytes: 0,
        }
    }

    /// Counts `n` bytes received at `now`; at the end of each window, checks its average.
    pub fn record(&mut self, now: Instant, n: u64) -> Result<(), TooSlow> {
        self.bytes = self.bytes.saturating_add(n);
        let elapsed = now.saturating_duration_since(self.window_start);
        if self.min_bytes_per_sec == 0 || elapsed < self.window || elapsed.is_zero() {
            return Ok(());
        }
        // bytes / elapsed < min  ⇔  bytes · 1000 < min · elapsed_ms (no floats, no overflow
        // for any realistic window).
        let elapsed_ms = elapsed.as_millis().max(1);
        if u128::from(self.bytes) * 1000
            < u128::from(self.min_bytes_per_sec).saturating_mul(elapsed_ms)
        {
            return Err(TooSlow {
                bytes: self.bytes,
                elapsed,
            });
        }
        self.window_start = now;
        self.bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_deterministic_per_seed_and_spreads() {
        let a: Vec<u64> = {
            let mut j = Jitter::new(7);
            (0..4).map(|_| j.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut j = Jitter::new(7);
            (0..4).map(|_| j.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut j = Jitter::new(8);
            (0..4).map(|_| j.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        // A zero seed still works (xorshift's state must not be 0).
        let mut z = Jitter::new(0);
        assert_ne!(z.next_u64(), z.next_u64());
    }

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        // The largest random value gives the cap itself (modulo cap+1 of u64::MAX is not
        // guaranteed to be the cap, so use cap_ns exactly).
        let top = |retry: u32| {
            let cap = (base * 2u32.pow(retry - 1)).min(max);
            backoff(retry, base, max, cap.as_nanos() as u64)
        };
        assert_eq!(top(1), Duration::from_millis(100));
        assert_eq!(top(2), Duration::from_millis(200));
        assert_eq!(top(4), Duration::from_millis(800));
        assert_eq!(top(7), Duration::from_secs(5));
        assert_eq!(
            backoff(200, base, max, u64::MAX),
            backoff(200, base, max, u64::MAX)
        );
        assert!(backoff(200, base, max, u64::MAX) <= max);
        assert_eq!(backoff(3, base, max, 0), Duration::ZERO);
    }

    #[test]
    fn backoff_is_spread_over_the_whole_interval() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        let mut j = Jitter::new(42);
        let delays: Vec<Duration> = (0..1000)
            .map(|_| backoff(3, base, max, j.next_u64()))
            .collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(4)));
        let low = delays
            .iter()
            .filter(|d| **d < Duration::from_secs(1))
            .count();
        let high = delays
            .iter()
            .filter(|d| **d > Duration::from_secs(3))
            .count();
        // Uniform over [0, 4 s]: about 250 each; far from all-or-nothing.
        assert!((150..350).contains(&low), "{low}");
        assert!((150..350).contains(&high), "{high}");
    }

    #[test]
    fn speed_watch_aborts_a_trickle_and_spares_a_steady_flow() {
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        let s = |secs: u64| t0 + Duration::from_secs(secs);

        let mut steady = SpeedWatch::new(t0, 1000, window);
        for sec in 1..=30 {
            assert_eq!(steady.record(s(sec), 1000), Ok(()), "second {sec}");
        }

        let mut trickle = SpeedWatch::new(t0, 1000, window);
        for sec in 1..10 {
            assert_eq!(trickle.record(s(sec), 900), Ok(()), "second {sec}");
        }
        assert_eq!(
            trickle.record(s(10), 900),
            Err(TooSlow {
                bytes: 9000,
                elapsed: window
            })
        );

        // A fast window does not excuse a slow one after it.
        let mut burst = SpeedWatch::new(t0, 1000, window);
        assert_eq!(burst.record(s(10), 1_000_000), Ok(()));
        assert!(burst.record(s(20), 10).is_err());

        let mut off = SpeedWatch::new(t0, 0, window);
        assert_eq!(off.record(s(100), 0), Ok(()));
    }
}
