//! From verified targets metadata to the typed FS.25 records the agent uses.
//!
//! Which entry describes a target name is TUF's decision, not ours: the top-level targets
//! role first, then its delegations in order, depth first, only through roles whose paths
//! cover the name, and never past a terminating delegation (spec 5.6.7). tough implements
//! that search ([`tough::schema::Targets::find_target`]); this module only collects the
//! names listed anywhere and asks tough which entry, if any, stands for each. A delegated
//! role that lists a name it is not trusted for (a `devices/*` role naming a bundle, or a
//! name hidden behind a terminating delegation) thus never contributes its custom data.
//!
//! Target names are signed strings chosen by whoever holds a targets key; they go on to
//! D-Bus, the history and terminals. A name with control characters (NUL would get the
//! agent dropped from the bus, ESC would drive a terminal) is refused on its own, and the
//! refusal quotes it escaped.

use std::collections::HashSet;

use tough::TargetName;
use tough::schema::{Signed, Target, Targets};
use url::Url;

use super::client::{BundleTarget, DeviceTarget, RefusedTarget, Source, TargetFile};
use super::schema::{BUNDLE_PREFIX, BundleMeta, CUSTOM_KEY, DEVICE_PREFIX, DeviceMeta};

/// Longest refusal reason kept (they quote signed JSON).
const MAX_REASON: usize = 300;

/// Longest target name accepted (names are paths; ours are far shorter).
pub const MAX_NAME: usize = 1024;

/// The targets, resolved and typed.
#[derive(Debug, Default)]
pub struct Reduced {
    pub bundles: Vec<BundleTarget>,
    pub devices: Vec<DeviceTarget>,
    pub refused: Vec<RefusedTarget>,
}

/// Resolves every listed name through TUF's delegation search and parses what the agent
/// uses (`bundles/…`, `devices/…`).
pub fn reduce(targets: &Signed<Targets>, source: &Source, consistent: bool) -> Reduced {
    let mut out = Reduced::default();
    let mut seen: HashSet<&str> = HashSet::new();
    for (name, _) in targets.signed.targets_iter() {
        let raw = name.raw();
        if !seen.insert(raw) {
            continue;
        }
        let ours = raw.starts_with(BUNDLE_PREFIX) || raw.starts_with(DEVICE_PREFIX);
        if let Err(reason) = check_name(raw) {
            // Refused even when not ours: the agent reports it rather than ignore a
            // repository that signs such names.
            out.refused.push(RefusedTarget {
                name: escape(raw),
                reason,
            });
            continue;
        }
        if !ours {
            continue;
        }
        let Some(target) = resolve(targets, name) else {
            tracing::warn!(
                source = %source.name,
                target = raw,
                "target listed only by a role not trusted for it; ignored"
            );
            continue;
        };
        out.add(raw, target, source, consistent);
    }
    out
}

/// The target `name` as TUF's delegation search finds it, with where to download it;
/// `Ok(None)` when no role trusted for the name lists it, `Err` with the reason when the name
/// or its entry is one the agent refuses (as [`reduce`] refuses it for bundles).
pub fn locate(
    targets: &Signed<Targets>,
    source: &Source,
    consistent: bool,
    name: &str,
) -> Result<Option<TargetFile>, String> {
    check_name(name)?;
    let target_name = TargetName::new(name).map_err(|e| escape(&e.to_string()))?;
    let Some(target) = resolve(targets, &target_name) else {
        return Ok(None);
    };
    let sha256 = <[u8; 32]>::try_from(target.hashes.sha256.as_ref())
        .map_err(|_| "sha256 is not 32 bytes".to_owned())?;
    let url = target_url(&source.targets_url, name, &sha256, consistent)
        .ok_or_else(|| "the name cannot be a file below the targets URL".to_owned())?;
    let legacy_url = consistent
        .then(|| legacy_target_url(&source.targets_url, name, &sha256))
        .flatten();
    Ok(Some(TargetFile {
        name: name.to_owned(),
        length: target.length,
        sha256,
        url,
        legacy_url,
    }))
}

/// The entry TUF's preorder depth-first search picks for `name` (spec 5.6.7), if any.
fn resolve<'a>(targets: &'a Signed<Targets>, name: &TargetName) -> Option<&'a Target> {
    targets.signed.find_target(name, false).ok()
}

impl Reduced {
    fn add(&mut self, name: &str, target: &Target, source: &Source, consistent: bool) {
        let name = name.to_owned();
        let custom = target.custom.get(CUSTOM_KEY);
        let refuse = |out: &mut Reduced, reason: String| {
            out.refused.push(RefusedTarget {
                name: name.clone(),
                // Parse errors quote the offending JSON (an unknown field's name, a value).
                reason: escape_long(&reason, MAX_REASON),
            });
        };
        if name.starts_with(BUNDLE_PREFIX) {
            let meta = match custom
                .ok_or_else(|| "no custom.ssu".to_owned())
                .and_then(|c| BundleMeta::from_custom(c).map_err(|e| e.to_string()))
            {
                Ok(meta) => meta,
                Err(reason) => return refuse(self, reason),
            };
            let Ok(sha256) = <[u8; 32]>::try_from(target.hashes.sha256.as_ref()) else {
                return refuse(self, "sha256 is not 32 bytes".into());
            };
            let Some(url) = target_url(&source.targets_url, &name, &sha256, consistent) else {
                return refuse(
                    self,
                    "the name cannot be a file below the targets URL".into(),
                );
            };
            let legacy_url = consistent
                .then(|| legacy_target_url(&source.targets_url, &name, &sha256))
                .flatten();
            self.bundles.push(BundleTarget {
                name,
                length: target.length,
                sha256,
                url,
                legacy_url,
                meta,
            });
        } else {
            match custom
                .ok_or_else(|| "no custom.ssu".to_owned())
                .and_then(|c| DeviceMeta::from_custom(c).map_err(|e| e.to_string()))
            {
                Ok(meta) => self.devices.push(DeviceTarget { name, meta }),
                Err(reason) => refuse(self, reason),
            }
        }
    }
}

/// A target name the agent can show and store: bounded, no control characters.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME {
        return Err(format!("the name is longer than {MAX_NAME} bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err("the name contains control characters".into());
    }
    Ok(())
}

/// `s` with control characters escaped (`\0`, `\u{1b}`, …) and cut to a bounded length, for
/// quoting an untrusted string in a message.
pub fn escape(s: &str) -> String {
    escape_long(s, 200)
}

/// [`escape`] with a bound of `max` bytes (plus the escape of the last character).
pub fn escape_long(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() >= max {
            out.push('…');
            break;
        }
        if c.is_control() || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Where the TUF specification puts a target with consistent snapshots:
/// `<targets>/<dir>/<sha256>.<basename>` (and `<targets>/<name>` without). The result must
/// stay below the base URL.
pub fn target_url(base: &Url, name: &str, sha256: &[u8; 32], consistent: bool) -> Option<Url> {
    if name
        .split('/')
        .any(|s| s.is_empty() || s == ".." || s == ".")
    {
        return None;
    }
    let file = if consistent {
        match name.rsplit_once('/') {
            Some((dir, base)) => format!("{dir}/{}.{base}", hex::encode(sha256)),
            None => format!("{}.{name}", hex::encode(sha256)),
        }
    } else {
        name.to_owned()
    };
    let base = if base.as_str().ends_with('/') {
        base.clone()
    } else {
        Url::parse(&format!("{base}/")).ok()?
    };
    let url = base.join(&file).ok()?;
    url.as_str().starts_with(base.as_str()).then_some(url)
}

/// Where tough's layout (and `ssu-repo` before it followed the specification) puts a
/// target: `<targets>/<sha256>.<whole name>`.
pub fn legacy_target_url(base: &Url, name: &str, sha256: &[u8; 32]) -> Option<Url> {
    // Same checks on the name as the spec layout; then the whole name gets the prefix.
    target_url(base, name, sha256, false)?;
    let base = if base.as_str().ends_with('/') {
        base.clone()
    } else {
        Url::parse(&format!("{base}/")).ok()?
    };
    let url = base.join(&format!("{}.{name}", hex::encode(sha256))).ok()?;
    url.as_str().starts_with(base.as_str()).then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::client::DEFAULT_MAX_METADATA_BYTES;
    use serde_json::json;

    const SHA: &str = "abababababababababababababababababababababababababababababababab";

    fn bundle(level: &str) -> serde_json::Value {
        json!({"length": 1, "hashes": {"sha256": SHA}, "custom": {"ssu": {
            "kind": "security", "version": "0.9", "base_version": "1.0",
            "security_patch_level": level, "compatible": "ssu-sandbox",
            "released": "2026-11-20T00:00:00Z", "requires_reboot": true,
            "expected_downtime_s": 1,
            "cves": [{"id": "CVE-2026-1", "severity": "high", "summary": "x"}]}}})
    }

    fn targets(list: serde_json::Value, roles: serde_json::Value) -> Signed<Targets> {
        serde_json::from_value(json!({"signatures": [], "signed": {
            "_type": "targets", "spec_version": "1.0.31", "version": 1,
            "expires": "2030-01-01T00:00:00Z", "targets": list,
            "delegations": {"keys": {}, "roles": roles}}}))
        .unwrap()
    }

    fn role(name: &str, paths: &[&str], terminating: bool) -> serde_json::Value {
        json!({"name": name, "keyids": [], "threshold": 1, "paths": paths,
               "terminating": terminating})
    }

    fn source() -> Source {
        Source {
            name: "manufacturer".into(),
            metadata_url: Url::parse("https://u.example/metadata/").unwrap(),
            targets_url: Url::parse("https://u.example/targets/").unwrap(),
            root: "/nonexistent".into(),
            max_metadata_bytes: DEFAULT_MAX_METADATA_BYTES,
        }
    }

    /// Top level lists NAME at 2026-03-01; `models` (devices/*) lists it at 2026-12-01;
    /// behind the terminating `stop` (bundles/*), `late` lists another bundle.
    #[test]
    fn each_name_gets_the_entry_of_the_role_tuf_trusts_for_it() {
        let name = "bundles/ssu-sandbox/0.9.raucb";
        let mut top = targets(
            json!({ name: bundle("2026-03-01") }),
            json!([
                role("models", &["devices/*"], false),
                role("stop", &["bundles/*"], true),
                role("late", &["bundles/*"], false)
            ]),
        );
        let lists = [
            json!({ name: bundle("2026-12-01") }),
            json!({}),
            json!({ "bundles/ssu-sandbox/0.9.2.raucb": bundle("2026-12-03") }),
        ];
        let roles = &mut top.signed.delegations.as_mut().unwrap().roles;
        for (r, list) in roles.iter_mut().zip(lists) {
            r.targets = Some(targets(list, json!([])));
        }
        let out = reduce(&top, &source(), true);
        assert_eq!(out.bundles.len(), 1, "{:?}", out.bundles);
        assert_eq!(out.bundles[0].name, name);
        assert_eq!(
            out.bundles[0].meta.security_patch_level.to_string(),
            "2026-03-01"
        );
        assert!(out.refused.is_empty(), "{:?}", out.refused);
    }

    /// A single target by name: the same search, name and URL rules as for bundles.
    #[test]
    fn a_target_is_located_through_the_delegation_search() {
        let mut top = targets(
            json!({ "a.txt": bundle("2026-03-01") }),
            json!([
                role("docs", &["docs/*"], true),
                role("other", &["*"], false)
            ]),
        );
        let other_sha = "cd".repeat(32);
        let lists = [
            json!({ "docs/x/y.txt": {"length": 7, "hashes": {"sha256": SHA}} }),
            json!({
                "docs/x/y.txt": {"length": 9, "hashes": {"sha256": other_sha}},
                "a.txt": {"length": 9, "hashes": {"sha256": other_sha}},
                "b.txt": {"length": 9, "hashes": {"sha256": other_sha}},
                "docs/z.txt": {"length": 9, "hashes": {"sha256": other_sha}}
            }),
        ];
        let roles = &mut top.signed.delegations.as_mut().unwrap().roles;
        for (r, list) in roles.iter_mut().zip(lists) {
            r.targets = Some(targets(list, json!([])));
        }
        let s = source();
        let found = locate(&top, &s, true, "docs/x/y.txt").unwrap().unwrap();
        assert_eq!((found.length, found.sha256), (7, [0xab; 32]));
        assert_eq!(
            found.url.as_str(),
            format!("https://u.example/targets/docs/x/{SHA}.y.txt")
        );
        assert_eq!(
            found.legacy_url.unwrap().as_str(),
            format!("https://u.example/targets/{SHA}.docs/x/y.txt")
        );
        // The top-level entry wins over a later delegation's.
        assert_eq!(locate(&top, &s, false, "a.txt").unwrap().unwrap().length, 1);
        assert_eq!(
            locate(&top, &s, false, "a.txt")
                .unwrap()
                .unwrap()
                .url
                .as_str(),
            "https://u.example/targets/a.txt"
        );
        // Listed by a role that is searched (`other`, for `*`).
        assert_eq!(locate(&top, &s, true, "b.txt").unwrap().unwrap().length, 9);
        // Behind the terminating `docs`: `other` is never asked.
        assert_eq!(locate(&top, &s, true, "docs/z.txt").unwrap(), None);
        assert_eq!(locate(&top, &s, true, "nowhere.txt").unwrap(), None);
        assert!(locate(&top, &s, true, "a\u{1b}b").is_err());
        // Never a file outside the targets URL (refused, or not the name of any entry).
        assert!(!matches!(locate(&top, &s, true, "../a.txt"), Ok(Some(_))));
    }

    #[test]
    fn refusals_quote_hostile_json_escaped() {
        let mut b = bundle("2026-03-01");
        b["custom"]["ssu"]["\u{1b}]0;x\u{7}"] = json!(1);
        let top = targets(
            json!({ "bundles/ssu-sandbox/1.raucb": b, "bundles/a\u{0}b": bundle("2026-03-01") }),
            json!([]),
        );
        let out = reduce(&top, &source(), true);
        assert_eq!(out.refused.len(), 2, "{:?}", out.refused);
        for r in &out.refused {
            assert!(!r.name.chars().any(char::is_control), "{r:?}");
            assert!(!r.reason.chars().any(char::is_control), "{r:?}");
        }
    }

    #[test]
    fn target_urls_follow_the_spec_layout_and_stay_below_the_base() {
        let sha = [0xab; 32];
        let base = Url::parse("https://updates.example.com/targets").unwrap();
        let u = target_url(&base, "bundles/gw/1.0.1.raucb", &sha, true).unwrap();
        assert_eq!(
            u.as_str(),
            format!(
                "https://updates.example.com/targets/bundles/gw/{}.1.0.1.raucb",
                "ab".repeat(32)
            )
        );
        let u = legacy_target_url(&base, "bundles/gw/1.0.1.raucb", &sha).unwrap();
        assert_eq!(
            u.as_str(),
            format!(
                "https://updates.example.com/targets/{}.bundles/gw/1.0.1.raucb",
                "ab".repeat(32)
            )
        );
        assert!(legacy_target_url(&base, "bundles/../../x", &sha).is_none());
        let u = target_url(&base, "top.json", &sha, true).unwrap();
        assert!(
            u.as_str()
                .ends_with(&format!("/targets/{}.top.json", "ab".repeat(32)))
        );
        let u = target_url(&base, "bundles/gw/1.0.1.raucb", &sha, false).unwrap();
        assert_eq!(
            u.as_str(),
            "https://updates.example.com/targets/bundles/gw/1.0.1.raucb"
        );
        for hostile in [
            "bundles/../../etc/passwd",
            "/etc/passwd",
            "bundles/./x",
            "https://evil.example.com/x",
            "//evil.example.com/x",
            "bundles//x",
        ] {
            assert!(
                target_url(&base, hostile, &sha, false).is_none(),
                "{hostile}"
            );
            assert!(
                target_url(&base, hostile, &sha, true).is_none(),
                "{hostile}"
            );
        }
    }

    #[test]
    fn names_with_control_characters_are_refused_and_quoted_escaped() {
        assert!(check_name("bundles/ssu-sandbox/1.0.1.raucb").is_ok());
        for bad in [
            "bundles/a\0b",
            "bundles/\u{1b}[2Jx",
            "bundles/a\nb",
            "bundles/\u{9b}x",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
            let shown = escape(bad);
            assert!(!shown.chars().any(char::is_control), "{shown:?}");
        }
        assert_eq!(escape("a\0b\u{1b}"), "a\\u{0}b\\u{1b}");
        assert!(check_name(&"x".repeat(MAX_NAME + 1)).is_err());
        assert!(escape(&"x".repeat(1000)).chars().count() < 210);
    }
}
