//! `[report]`: delivering signed patch-status reports to a fleet server (`docs/report.md`,
//! "Delivery to the fleet").

use jiff::SignedDuration;
use serde::{Deserialize, Serialize};

use super::Dur;

/// `[report]`. Without `url` nothing is delivered (and nothing queued).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportConfig {
    /// Where reports are POSTed; https only, unless `allow_http`.
    pub url: Option<url::Url>,
    /// Lets `url` be plain http: for tests and for trying the receiver on a private network.
    /// A report is signed, so a man in the middle cannot change one unseen, but over http
    /// anyone on the path can read it and can drop it while answering as the server would.
    pub allow_http: bool,
    /// Longest one POST may take, answer included.
    pub timeout: Dur,
    /// The first wait after a failed delivery; it doubles with each failure in a row (with
    /// jitter) up to `retry_max`.
    pub retry_initial: Dur,
    pub retry_max: Dur,
    /// Most reports kept waiting for delivery; beyond it the oldest is dropped (never the
    /// newest), counted and logged.
    pub max_queued: u32,
    /// Most bytes of reports kept waiting for delivery (same rule).
    pub max_queued_bytes: u64,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            url: None,
            allow_http: false,
            timeout: Dur(SignedDuration::from_secs(30)),
            retry_initial: Dur(SignedDuration::from_mins(1)),
            retry_max: Dur(SignedDuration::from_hours(6)),
            max_queued: 100,
            max_queued_bytes: 1024 * 1024,
        }
    }
}

/// Checks `[report]`; returns the offending key and the reason.
pub(super) fn validate(r: &ReportConfig) -> Result<(), (&'static str, String)> {
    if let Some(u) = &r.url {
        match u.scheme() {
            "https" => {}
            "http" if r.allow_http => {}
            "http" => {
                return Err((
                    "report.url",
                    "must be https (set report.allow_http = true for a test or trial on a \
                     private network)"
                        .to_owned(),
                ));
            }
            other => {
                return Err((
                    "report.url",
                    format!("unsupported scheme {other:?} (https)"),
                ));
            }
        }
        if u.host_str().is_none_or(str::is_empty) {
            return Err(("report.url", "has no host".to_owned()));
        }
    }
    let secs = |d: Dur| d.0;
    let s = SignedDuration::from_secs;
    if !(s(1)..=s(300)).contains(&secs(r.timeout)) {
        return Err(("report.timeout", "must be between 1s and 5m".to_owned()));
    }
    if !(s(1)..=s(24 * 3600)).contains(&secs(r.retry_initial)) {
        return Err((
            "report.retry_initial",
            "must be between 1s and 1d".to_owned(),
        ));
    }
    if r.retry_max < r.retry_initial || secs(r.retry_max) > s(7 * 24 * 3600) {
        return Err((
            "report.retry_max",
            "must be at least report.retry_initial and at most 7d".to_owned(),
        ));
    }
    if !(1..=10_000).contains(&r.max_queued) {
        return Err((
            "report.max_queued",
            "must be between 1 and 10000".to_owned(),
        ));
    }
    if !(64 * 1024..=64 * 1024 * 1024).contains(&r.max_queued_bytes) {
        return Err((
            "report.max_queued_bytes",
            "must be between 65536 and 67108864".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError, from_sources};
    use std::path::PathBuf;

    fn one(text: &str) -> Result<Config, ConfigError> {
        from_sources(&[(PathBuf::from("/etc/ssu-agent/agent.toml"), text.to_owned())])
    }

    #[test]
    fn defaults_deliver_nothing_and_a_full_table_parses() {
        let c = one("").unwrap();
        assert_eq!(c.report.url, None);
        let c = one(
            "[report]\nurl = \"https://fleet.example/reports\"\ntimeout = \"10s\"\n\
             retry_initial = \"5s\"\nretry_max = \"1h\"\nmax_queued = 10\n\
             max_queued_bytes = 65536\n",
        )
        .unwrap();
        assert_eq!(
            c.report.url.unwrap().as_str(),
            "https://fleet.example/reports"
        );
        assert_eq!(c.report.max_queued, 10);
        let c = one("[report]\nurl = \"http://127.0.0.1:8080/\"\nallow_http = true\n").unwrap();
        assert!(c.report.allow_http);
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            (
                "url = \"http://fleet.example/\"",
                "report.url",
                "must be https",
            ),
            (
                "url = \"ftp://fleet.example/\"",
                "report.url",
                "unsupported scheme",
            ),
            ("url = \"not a url\"", "report.url", ""),
            ("timeout = \"0s\"", "report.timeout", "between 1s and 5m"),
            ("timeout = \"10m\"", "report.timeout", "between 1s and 5m"),
            ("retry_initial = \"0s\"", "report.retry_initial", "between"),
            (
                "retry_initial = \"1h\"\nretry_max = \"1m\"",
                "report.retry_max",
                "at least report.retry_initial",
            ),
            ("retry_max = \"8d\"", "report.retry_max", "at most 7d"),
            ("max_queued = 0", "report.max_queued", "between 1 and 10000"),
            ("max_queued = -1", "report.max_queued", ""),
            (
                "max_queued_bytes = 100",
                "report.max_queued_bytes",
                "between",
            ),
            ("urll = \"https://x/\"", "report.urll", "unknown field"),
        ];
        for (body, key, reason) in cases {
            match one(&format!("[report]\n{body}\n")) {
                Err(ConfigError::Invalid {
                    key: k, reason: r, ..
                }) => {
                    assert_eq!(k, key, "{body}: {r}");
                    assert!(r.contains(reason), "{body}: {r:?} lacks {reason:?}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
