//! Per-device spread: a fleet must not move in lockstep.
//!
//! Every device of a model would otherwise wake at the same instants — the first check after
//! a fleet-wide power-up, the start of the model's rollout wave, the end of an operator's
//! approval grace, the opening minute of the maintenance window — a thundering herd on the
//! update servers and on the radio cell. Each of those instants is moved later by an offset
//! drawn from the device's seed (its machine id, see `daemon::device_seed`): stable for one
//! device across restarts, different between devices, and never more than the configured
//! bound (`[spread]`). Offsets only delay, so no device acts before the signed time.

use jiff::SignedDuration;

/// What the offset moves. Each purpose draws its own offset, so a device early for one is not
/// early for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    FirstCheck,
    WaveStart,
    ApprovalEnd,
    WindowOpening,
}

impl Purpose {
    fn salt(self) -> u64 {
        match self {
            Purpose::FirstCheck => 0x6669_7273_7463_6b31,
            Purpose::WaveStart => 0x7761_7665_7374_7274,
            Purpose::ApprovalEnd => 0x6170_7072_6f76_616c,
            Purpose::WindowOpening => 0x7769_6e64_6f77_6f70,
        }
    }
}

/// A deterministic offset in `[0, max]` (whole seconds) for this device and purpose.
pub fn offset(seed: u64, purpose: Purpose, max: SignedDuration) -> SignedDuration {
    let span = max.as_secs();
    if span <= 0 {
        return SignedDuration::ZERO;
    }
    let z = mix(seed ^ purpose.salt());
    SignedDuration::from_secs((z % (span as u64 + 1)) as i64)
}

/// splitmix64's finaliser: consecutive seeds land far apart.
pub(crate) fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_bounded_deterministic_and_differ_between_devices() {
        let max = SignedDuration::from_hours(6);
        for purpose in [
            Purpose::FirstCheck,
            Purpose::WaveStart,
            Purpose::ApprovalEnd,
            Purpose::WindowOpening,
        ] {
            let mut seen = std::collections::BTreeSet::new();
            for seed in 0..500u64 {
                let o = offset(seed, purpose, max);
                assert!(o >= SignedDuration::ZERO && o <= max, "{purpose:?} {o:?}");
                assert_eq!(o, offset(seed, purpose, max));
                seen.insert(o);
            }
            // 500 devices over 21,601 possible seconds: nearly all distinct.
            assert!(seen.len() > 490, "{purpose:?}: {} distinct", seen.len());
        }
        // One device's offsets differ per purpose.
        let per_purpose: std::collections::BTreeSet<_> = [
            Purpose::FirstCheck,
            Purpose::WaveStart,
            Purpose::ApprovalEnd,
            Purpose::WindowOpening,
        ]
        .iter()
        .map(|p| offset(7, *p, max))
        .collect();
        assert_eq!(per_purpose.len(), 4);
    }

    #[test]
    fn zero_or_negative_bounds_mean_no_spread() {
        for max in [SignedDuration::ZERO, SignedDuration::from_secs(-5)] {
            assert_eq!(
                offset(u64::MAX, Purpose::WaveStart, max),
                SignedDuration::ZERO
            );
        }
        assert!(offset(3, Purpose::FirstCheck, SignedDuration::MAX) >= SignedDuration::ZERO);
    }
}
