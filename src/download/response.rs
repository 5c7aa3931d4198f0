//! What to do with a response: the status and headers checked against the request (from
//! `offset`) and the target's length, before a single body byte is accepted. Pure functions.

use url::Url;

use super::error::DownloadError;

/// How to take a response's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan {
    /// The body carries the file's bytes from the requested offset up to `end` (exclusive).
    Append { end: u64 },
    /// A `200` to a `Range` request: the server ignores ranges, so the body is the whole file
    /// and the partial file starts over.
    Restart,
}

/// The parts of a response [`check`] looks at.
#[derive(Debug, Clone, Copy)]
pub(super) struct Head<'a> {
    pub status: u16,
    pub content_length: Option<u64>,
    pub content_range: Option<&'a str>,
}

/// Decides how to take a response to a request for `url` from `offset` (a `Range: bytes=N-`
/// request when `offset > 0`) of a target of `length` bytes.
///
/// Never trusts the server: a `Content-Length` beyond what is left is [`DownloadError::TooLong`]
/// (hostile: stop before reading the body), a file of another size is
/// [`DownloadError::LengthMismatch`], a range that is not the one asked for is
/// [`DownloadError::BadRange`].
pub(super) fn check(
    url: &Url,
    offset: u64,
    length: u64,
    head: Head<'_>,
) -> Result<Plan, DownloadError> {
    debug_assert!(offset < length);
    let too_long = |announced: u64| DownloadError::TooLong {
        url: url.to_string(),
        length,
        offset: announced,
    };
    let bad_range = || DownloadError::BadRange {
        url: url.to_string(),
        offset,
        content_range: head.content_range.unwrap_or("").to_string(),
    };
    match head.status {
        200 => {
            match head.content_length {
                Some(n) if n > length => return Err(too_long(n)),
                Some(n) if n < length => {
                    return Err(DownloadError::LengthMismatch {
                        url: url.to_string(),
                        expected: length,
                        actual: n,
                    });
                }
                _ => {}
            }
            Ok(if offset > 0 {
                Plan::Restart
            } else {
                Plan::Append { end: length }
            })
        }
        206 => {
            if let Some(n) = head.content_length
                && n > length - offset
            {
                return Err(too_long(offset.saturating_add(n)));
            }
            let (first, last, total) = head
                .content_range
                .and_then(parse_content_range)
                .ok_or_else(bad_range)?;
            let Some(total) = total else {
                return Err(bad_range());
            };
            if total != length {
                return Err(DownloadError::LengthMismatch {
                    url: url.to_string(),
                    expected: length,
                    actual: total,
                });
            }
            let Some((first, last)) = first.zip(last) else {
                return Err(bad_range());
            };
            let announced = last - first + 1;
            if first != offset || head.content_length.is_some_and(|n| n != announced) {
                return Err(bad_range());
            }
            Ok(Plan::Append { end: last + 1 })
        }
        416 => {
            // "bytes */N": the server's file has N bytes, fewer than our offset.
            match head.content_range.and_then(parse_content_range) {
                Some((None, None, Some(total))) if total != length => {
                    Err(DownloadError::LengthMismatch {
                        url: url.to_string(),
                        expected: length,
                        actual: total,
                    })
                }
                _ => Err(DownloadError::HttpStatus {
                    url: url.to_string(),
                    status: 416,
                    offset,
                }),
            }
        }
        404 | 410 => Err(DownloadError::NotFound {
            url: url.to_string(),
            status: head.status,
        }),
        status => Err(DownloadError::HttpStatus {
            url: url.to_string(),
            status,
            offset,
        }),
    }
}

/// Parses `bytes FIRST-LAST/TOTAL` (RFC 9110 §14.4), where `FIRST-LAST` may be `*` (in a 416)
/// and `TOTAL` may be `*` (unknown). Returns `(first, last, total)`; `None` for malformed
/// values, including `last < first` and `last >= total`.
fn parse_content_range(value: &str) -> Option<(Option<u64>, Option<u64>, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total {
        "*" => None,
        t => Some(parse_decimal(t)?),
    };
    let (first, last) = match range {
        "*" => (None, None),
        r => {
            let (a, b) = r.split_once('-')?;
            let (a, b) = (parse_decimal(a)?, parse_decimal(b)?);
            if b < a || total.is_some_and(|t| b >= t) {
                return None;
            }
            (Some(a), Some(b))
        }
    };
    if first.is_none() && total.is_none() {
        return None;
    }
    Some((first, last, total))
}

/// Digits only: `u64::from_str` would also take a leading `+`.
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> Url {
        Url::parse("http://127.0.0.1/b.raucb").unwrap()
    }

    fn head(status: u16, content_length: Option<u64>, content_range: Option<&str>) -> Head<'_> {
        Head {
            status,
            content_length,
            content_range,
        }
    }

    /// Found by `proptests::a_plan_never_leaves_the_target`: a 206 announcing nearly 2^64
    /// bytes overflowed `offset + n` (a panic in debug builds, a wrong figure in release).
    #[test]
    fn a_huge_content_length_on_a_206_is_too_long_not_an_overflow() {
        let err = check(&url(), 4000, 5000, head(206, Some(u64::MAX - 10), None)).unwrap_err();
        assert!(
            matches!(
                err,
                DownloadError::TooLong {
                    offset: u64::MAX,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 100-999/1000"),
            Some((Some(100), Some(999), Some(1000)))
        );
        assert_eq!(
            parse_content_range("bytes 0-0/*"),
            Some((Some(0), Some(0), None))
        );
        assert_eq!(
            parse_content_range("bytes */1000"),
            Some((None, None, Some(1000)))
        );
        for bad in [
            "bytes */*",
            "bytes 5-4/10",
            "bytes 0-10/10",
            "bytes +1-5/10",
            "bytes 1-5",
            "items 1-5/10",
            "bytes -5/10",
            "bytes 1-99999999999999999999999/10",
            "",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_full_response_is_taken_from_zero() {
        let plan = check(&url(), 0, 1000, head(200, Some(1000), None)).unwrap();
        assert_eq!(plan, Plan::Append { end: 1000 });
        // No Content-Length (chunked): taken, the body loop caps it.
        let plan = check(&url(), 0, 1000, head(200, None, None)).unwrap();
        assert_eq!(plan, Plan::Append { end: 1000 });
    }

    #[test]
    fn a_200_to_a_range_request_restarts() {
        let plan = check(&url(), 400, 1000, head(200, Some(1000), None)).unwrap();
        assert_eq!(plan, Plan::Restart);
    }

    #[test]
    fn a_matching_206_appends() {
        let plan = check(
            &url(),
            400,
            1000,
            head(206, Some(600), Some("bytes 400-999/1000")),
        )
        .unwrap();
        assert_eq!(plan, Plan::Append { end: 1000 });
        // A shorter range than asked for is allowed; the rest comes in the next attempt.
        let plan = check(
            &url(),
            400,
            1000,
            head(206, Some(100), Some("bytes 400-499/1000")),
        )
        .unwrap();
        assert_eq!(plan, Plan::Append { end: 500 });
    }

    #[test]
    fn a_206_for_another_range_is_refused() {
        for (cl, cr) in [
            (Some(600), "bytes 300-899/1000"),
            (Some(600), "bytes 401-999/1000"),
            (Some(500), "bytes 400-999/1000"),
            (Some(600), "bytes 400-999/*"),
            (Some(600), "garbage"),
        ] {
            let err = check(&url(), 400, 1000, head(206, cl, Some(cr))).unwrap_err();
            assert!(matches!(err, DownloadError::BadRange { .. }), "{cr}: {err}");
            assert!(err.is_retryable());
        }
        let err = check(&url(), 400, 1000, head(206, Some(600), None)).unwrap_err();
        assert!(matches!(err, DownloadError::BadRange { .. }), "{err}");
    }

    #[test]
    fn announcing_more_than_is_left_is_too_long() {
        let err = check(&url(), 0, 1000, head(200, Some(1001), None)).unwrap_err();
        assert!(matches!(err, DownloadError::TooLong { .. }), "{err}");
        let err = check(
            &url(),
            400,
            1000,
            head(206, Some(601), Some("bytes 400-999/1000")),
        )
        .unwrap_err();
        assert!(matches!(err, DownloadError::TooLong { .. }), "{err}");
        assert!(!err.is_retryable());
    }

    #[test]
    fn another_file_size_is_a_length_mismatch() {
        let err = check(&url(), 0, 1000, head(200, Some(999), None)).unwrap_err();
        assert!(
            matches!(err, DownloadError::LengthMismatch { actual: 999, .. }),
            "{err}"
        );
        let err = check(
            &url(),
            400,
            1000,
            head(206, Some(800), Some("bytes 400-1199/1200")),
        )
        .unwrap_err();
        assert!(matches!(err, DownloadError::TooLong { .. }), "{err}");
        let err = check(
            &url(),
            400,
            1000,
            head(206, Some(100), Some("bytes 400-499/1200")),
        )
        .unwrap_err();
        assert!(
            matches!(err, DownloadError::LengthMismatch { actual: 1200, .. }),
            "{err}"
        );
        let err = check(&url(), 400, 1000, head(416, None, Some("bytes */300"))).unwrap_err();
        assert!(
            matches!(err, DownloadError::LengthMismatch { actual: 300, .. }),
            "{err}"
        );
    }

    #[test]
    fn statuses() {
        let err = check(&url(), 0, 1000, head(404, None, None)).unwrap_err();
        assert!(matches!(err, DownloadError::NotFound { status: 404, .. }));
        let err = check(&url(), 0, 1000, head(410, None, None)).unwrap_err();
        assert!(matches!(err, DownloadError::NotFound { status: 410, .. }));
        let err = check(&url(), 0, 1000, head(503, None, None)).unwrap_err();
        assert!(err.is_retryable(), "{err}");
        let err = check(&url(), 0, 1000, head(403, None, None)).unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        let err = check(&url(), 400, 1000, head(416, None, None)).unwrap_err();
        assert!(
            matches!(err, DownloadError::HttpStatus { status: 416, .. }),
            "{err}"
        );
        // A 206 to a request from 0 is fine if it starts at 0.
        let plan = check(
            &url(),
            0,
            1000,
            head(206, Some(1000), Some("bytes 0-999/1000")),
        )
        .unwrap();
        assert_eq!(plan, Plan::Append { end: 1000 });
    }
}

/// Property-based fuzzing of [`check`] (see `crate::proptests` for the budget and the
/// regression files): whatever the server answers, the plan stays inside the target.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// `Content-Range` values: well-formed with arbitrary numbers (around the interesting
    /// edges), and arbitrary text.
    fn content_range() -> impl Strategy<Value = Option<String>> {
        let n = prop_oneof![0u64..2048, any::<u64>(), Just(u64::MAX)];
        prop_oneof![
            Just(None),
            (n.clone(), n.clone(), n.clone())
                .prop_map(|(a, b, t)| Some(format!("bytes {a}-{b}/{t}"))),
            n.clone().prop_map(|t| Some(format!("bytes */{t}"))),
            (n.clone(), n).prop_map(|(a, b)| Some(format!("bytes {a}-{b}/*"))),
            ".{0,40}".prop_map(Some),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1024),
            ..ProptestConfig::default()
        })]

        #[test]
        fn a_plan_never_leaves_the_target(
            length in prop_oneof![1u64..4096, 1u64..=u64::MAX],
            offset_frac in 0.0f64..1.0,
            status in prop_oneof![Just(200u16), Just(206), Just(416), Just(404), 100u16..600],
            content_length in proptest::option::of(prop_oneof![0u64..4096, any::<u64>()]),
            content_range in content_range(),
        ) {
            // Offsets from 0 to length - 1, often 0 (a fresh download).
            let offset = ((length - 1) as f64 * offset_frac) as u64;
            let url = Url::parse("http://127.0.0.1/b.raucb").unwrap();
            let head = Head { status, content_length, content_range: content_range.as_deref() };
            match check(&url, offset, length, head) {
                Ok(Plan::Append { end }) => {
                    prop_assert!(offset < end && end <= length, "{offset} {end} {length}");
                    if let Some(n) = content_length {
                        prop_assert_eq!(n, end - offset);
                    }
                    prop_assert!(status == 200 || status == 206);
                }
                Ok(Plan::Restart) => {
                    prop_assert!(status == 200 && offset > 0);
                    prop_assert!(content_length.is_none_or(|n| n == length));
                }
                Err(_) => {}
            }
        }
    }
}
