//! How long each role's metadata stays valid: `"7d"`, `"30d"`, `"1y"`, `"1h 30m"`.

use jiff::{SignedDuration, Timestamp};

use super::RepoError;
use crate::config::parse_duration;

/// Days in a year, for `"5y"`: root and targets expiries are long and a year is the natural
/// unit; a fixed 365 days keeps the arithmetic independent of the calendar.
const DAYS_PER_YEAR: i64 = 365;

/// A validity period, with the text it was written as (kept for `repo.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    text: String,
    duration: SignedDuration,
}

impl Expiry {
    /// Parses `"Ny"` (N × 365 days) or anything [`parse_duration`] accepts. A leading `-`
    /// (metadata that is already expired) is accepted only with `allow_expired`, which exists
    /// for test fixtures; zero is refused for the same reason.
    pub fn parse(role: &'static str, text: &str, allow_expired: bool) -> Result<Expiry, RepoError> {
        let fail = |reason: String| RepoError::Expiry {
            role,
            value: text.to_owned(),
            reason,
        };
        let trimmed = text.trim();
        let (negative, body) = match trimmed.strip_prefix('-') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, trimmed),
        };
        let magnitude = parse_magnitude(body).map_err(fail)?;
        if negative && !allow_expired {
            return Err(fail(
                "negative expiries make expired metadata (test fixtures only: --allow-expired)"
                    .into(),
            ));
        }
        if magnitude.is_zero() && !allow_expired {
            return Err(fail("must be longer than zero".into()));
        }
        Ok(Expiry {
            text: text.trim().to_owned(),
            duration: if negative { -magnitude } else { magnitude },
        })
    }

    /// The text as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn duration(&self) -> SignedDuration {
        self.duration
    }

    /// `now` + this period, in whole seconds (TUF writes `YYYY-MM-DDTHH:MM:SSZ`; some clients
    /// refuse fractions).
    pub fn from(&self, now: Timestamp) -> Result<Timestamp, RepoError> {
        whole_seconds(now)
            .checked_add(self.duration)
            .map_err(|e| RepoError::Expiry {
                role: "expiry",
                value: self.text.clone(),
                reason: e.to_string(),
            })
    }
}

/// `t` without its fraction of a second.
pub(crate) fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

fn parse_magnitude(body: &str) -> Result<SignedDuration, String> {
    if let Some(years) = body.strip_suffix('y') {
        let years: i64 = years.trim().parse().map_err(|_| {
            format!("invalid duration {body:?}: expected e.g. \"5y\", \"90d\", \"12h\"")
        })?;
        let hours = years
            .checked_mul(DAYS_PER_YEAR * 24)
            .filter(|h| (0..=100 * DAYS_PER_YEAR * 24).contains(h))
            .ok_or_else(|| format!("invalid duration {body:?}: out of range"))?;
        return Ok(SignedDuration::from_hours(hours));
    }
    parse_duration(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn years_days_and_compound_durations_parse() {
        let d = |s| Expiry::parse("root", s, false).unwrap().duration();
        assert_eq!(d("5y"), SignedDuration::from_hours(5 * 365 * 24));
        assert_eq!(d("30d"), SignedDuration::from_hours(30 * 24));
        assert_eq!(d("1h 30m"), SignedDuration::from_mins(90));
        assert_eq!(d("1s"), SignedDuration::from_secs(1));
    }

    #[test]
    fn negative_and_zero_need_allow_expired() {
        for s in ["-1d", "0s", "-2y"] {
            let err = Expiry::parse("timestamp", s, false)
                .unwrap_err()
                .to_string();
            assert!(err.contains("timestamp expiry"), "{err}");
        }
        let e = Expiry::parse("timestamp", "-1d", true).unwrap();
        assert_eq!(e.duration(), -SignedDuration::from_hours(24));
        assert_eq!(e.text(), "-1d");
    }

    #[test]
    fn garbage_and_months_are_refused() {
        for s in ["", "soon", "1month", "xy", "1000y", "3mo"] {
            assert!(Expiry::parse("targets", s, true).is_err(), "{s}");
        }
    }

    #[test]
    fn expiry_is_in_whole_seconds() {
        let now: Timestamp = "2026-11-01T10:00:00.75Z".parse().unwrap();
        let e = Expiry::parse("timestamp", "7d", false).unwrap();
        assert_eq!(
            e.from(now).unwrap(),
            "2026-11-08T10:00:00Z".parse::<Timestamp>().unwrap()
        );
    }
}
