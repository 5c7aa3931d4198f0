//! Reading the configuration: the main file and its drop-ins, each bounded in size and
//! checked on its own (so an error names the file and line that caused it), merged table by
//! table, then validated as a whole — with the file that last set each key remembered, so a
//! cross-field error still names the right file.

use super::*;

/// Which file last set each leaf key, so a validation error names the right file.
type Provenance = BTreeMap<String, PathBuf>;

/// A loaded configuration and the files it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub files: Vec<PathBuf>,
}

/// The files that make up the configuration rooted at `main`: `main` itself (which must
/// exist) and `agent.d/*.toml` next to it, sorted by file name.
pub fn files_for(main: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let mut files = vec![main.to_owned()];
    let dropin_dir = main
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("agent.d");
    match std::fs::read_dir(&dropin_dir) {
        Ok(entries) => {
            let mut dropins: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            dropins.sort();
            files.extend(dropins);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(ConfigError::Read {
                path: dropin_dir,
                reason: e.to_string(),
            });
        }
    }
    Ok(files)
}

/// Loads and validates the configuration rooted at `main` (see [`files_for`]).
pub fn load(main: &Path) -> Result<Loaded, ConfigError> {
    let files = files_for(main)?;
    let mut sources = Vec::with_capacity(files.len());
    for path in &files {
        sources.push((path.clone(), read_bounded(path)?));
    }
    let config = from_sources(&sources)?;
    Ok(Loaded { config, files })
}

fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let read_err = |e: std::io::Error| ConfigError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut text = String::new();
    let n = file
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if n as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::Read {
            path: path.to_owned(),
            reason: format!("larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    Ok(text)
}

/// Builds the configuration from `(file name, contents)` pairs, later ones overriding earlier
/// ones. Pure apart from no I/O at all, so tests feed it strings.
pub fn from_sources(sources: &[(PathBuf, String)]) -> Result<Config, ConfigError> {
    let mut merged = toml::Table::new();
    let mut provenance = Provenance::new();
    for (path, text) in sources {
        // Each file on its own must already be well-typed: that is how an error names the
        // file the bad value is in, with its line.
        check_one(path, text)?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::invalid(path, "", e.message()))?;
        merge(&mut merged, table, "", path, &mut provenance);
    }
    let config: Config = Config::deserialize(toml::Value::Table(merged)).map_err(|e| {
        // Cannot happen for leaves (each file was checked); kept as an error, not a panic.
        ConfigError::invalid(
            sources
                .last()
                .map(|s| s.0.as_path())
                .unwrap_or(Path::new("")),
            "",
            e.to_string(),
        )
    })?;
    validate(&config, &provenance)?;
    Ok(config)
}

/// Deepest dotted key or table header accepted. The agent's own keys are at most three
/// levels deep; the TOML parser's recursion limit would otherwise report a 200-part header
/// without saying where it is.
const MAX_KEY_DEPTH: usize = 16;

/// The first line whose table header or key has more than [`MAX_KEY_DEPTH`] dotted parts,
/// with that count. Dots inside quoted key parts do not count.
fn too_deep(text: &str) -> Option<(usize, usize)> {
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        let key = match line.strip_prefix('[') {
            Some(header) => header.trim_start_matches('['),
            None => line,
        };
        let mut parts = 1;
        let mut quote = None;
        for c in key.chars() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '.') => parts += 1,
                (None, ']' | '=' | '#') => break,
                _ => {}
            }
        }
        if parts > MAX_KEY_DEPTH {
            return Some((i + 1, parts));
        }
    }
    None
}

fn check_one(path: &Path, text: &str) -> Result<(), ConfigError> {
    if let Some((line, parts)) = too_deep(text) {
        return Err(ConfigError::Invalid {
            path: path.to_owned(),
            line,
            key: String::new(),
            reason: format!("a key of {parts} dotted parts; at most {MAX_KEY_DEPTH} are accepted"),
        });
    }
    let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Invalid {
        path: path.to_owned(),
        line: line_of(text, e.span()),
        key: String::new(),
        reason: e.message().to_owned(),
    })?;
    serde_path_to_error::deserialize::<_, Config>(de)
        .map(drop)
        .map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            ConfigError::Invalid {
                path: path.to_owned(),
                line: line_of(text, inner.span()),
                key: if key == "." { String::new() } else { key },
                reason: inner.message().to_owned(),
            }
        })
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> usize {
    span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
        .unwrap_or(0)
}

/// Deep-merges `from` into `into`, recording which file set each leaf.
fn merge(
    into: &mut toml::Table,
    from: toml::Table,
    prefix: &str,
    path: &Path,
    provenance: &mut Provenance,
) {
    for (key, value) in from {
        let full = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(new)) => {
                merge(existing, new, &full, path, provenance);
            }
            (_, value) => {
                record_leaves(&value, &full, path, provenance);
                into.insert(key, value);
            }
        }
    }
}

fn record_leaves(value: &toml::Value, full: &str, path: &Path, provenance: &mut Provenance) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                record_leaves(v, &format!("{full}.{k}"), path, provenance);
            }
        }
        _ => {
            provenance.insert(full.to_owned(), path.to_owned());
        }
    }
}

/// Checks that need more than one value's type.
fn validate(c: &Config, provenance: &Provenance) -> Result<(), ConfigError> {
    let err = |key: &str, reason: String| {
        let path = provenance.get(key).cloned().unwrap_or_default();
        Err(ConfigError::invalid(&path, key, reason))
    };
    if !c.agent.state_dir.is_absolute() {
        return err(
            "agent.state_dir",
            format!("{} is not an absolute path", c.agent.state_dir.display()),
        );
    }
    if !c.device.hardware_id.is_empty()
        && !c
            .device
            .hardware_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return err(
            "device.hardware_id",
            "may contain only letters, digits, '.', '_' and '-'".to_owned(),
        );
    }
    if let Some(k) = &c.device.identity_key
        && !k.is_absolute()
    {
        return err("device.identity_key", "must be an absolute path".to_owned());
    }
    if let Some(m) = &c.manufacturer {
        if !matches!(m.url.scheme(), "https" | "http" | "file") {
            return err(
                "manufacturer.url",
                format!(
                    "unsupported scheme {:?} (https, http or file)",
                    m.url.scheme()
                ),
            );
        }
        if !m.root.is_absolute() {
            return err("manufacturer.root", "must be an absolute path".to_owned());
        }
    }
    if !c.download.cache_dir.is_absolute() {
        return err("download.cache_dir", "must be an absolute path".to_owned());
    }
    if c.download.max_attempts == 0 || c.download.max_attempts > 100 {
        return err(
            "download.max_attempts",
            "must be between 1 and 100".to_owned(),
        );
    }
    // A zero limit would fail every attempt at once (or, for a socket timeout, mean none).
    for (key, d) in [
        ("download.connect_timeout", c.download.connect_timeout),
        ("download.read_timeout", c.download.read_timeout),
        (
            "install.health_check_timeout",
            c.install.health_check_timeout,
        ),
        ("install.rauc_timeout", c.install.rauc_timeout),
    ] {
        if !d.0.is_positive() {
            return err(
                key,
                format!("{} is not a positive duration", String::from(d)),
            );
        }
    }
    if c.install.reboot_command.is_empty() {
        return err("install.reboot_command", "must name a command".to_owned());
    }
    if c.install.health_checks.iter().any(Vec::is_empty) {
        return err(
            "install.health_checks",
            "each check must name a command".to_owned(),
        );
    }
    if let Err((key, reason)) = crate::integrity::validate(&c.integrity) {
        return err(key, reason);
    }
    validate_consent(c, provenance)?;
    let check = &c.check;
    if check.interval.0 < SignedDuration::from_mins(5) {
        return err(
            "check.interval",
            format!(
                "{} is shorter than the minimum of 5m",
                String::from(check.interval)
            ),
        );
    }
    if check.jitter.0 >= check.interval.0 {
        return err(
            "check.jitter",
            "must be shorter than check.interval".to_owned(),
        );
    }
    if check.boot_delay.0 > SignedDuration::from_hours(24) {
        return err("check.boot_delay", "must be at most 24h".to_owned());
    }
    if check.overdue_after.0 < SignedDuration::from_hours(24) {
        return err("check.overdue_after", "must be at least 1d".to_owned());
    }
    if !(64 * 1024..=256 * 1024 * 1024).contains(&check.max_metadata_bytes) {
        return err(
            "check.max_metadata_bytes",
            "must be between 65536 and 268435456".to_owned(),
        );
    }
    if let Err((key, reason)) = super::report::validate(&c.report) {
        return err(key, reason);
    }
    if let Err((key, reason)) = operator::validate(&c.operators) {
        // Profiles are one array: whichever file set it holds the offending entry.
        let path = provenance.get("operator").cloned().unwrap_or_default();
        return Err(ConfigError::invalid(&path, &key, reason));
    }
    Ok(())
}

/// `[install]`'s window and postponement bounds, `[device]`'s replacement plan.
fn validate_consent(c: &Config, provenance: &Provenance) -> Result<(), ConfigError> {
    let err = |key: &str, reason: String| {
        let path = provenance.get(key).cloned().unwrap_or_default();
        Err(ConfigError::invalid(&path, key, reason))
    };
    if let Some(w) = &c.install.maintenance_window
        && let Err(e) = crate::policy::consent::Window::parse(w)
    {
        return err("install.maintenance_window", e);
    }
    if c.install.max_postpone_critical > c.install.max_postpone {
        return err(
            "install.max_postpone_critical",
            "must not be longer than install.max_postpone".to_owned(),
        );
    }
    // ETSI 5.3-8 "timely": an installed fix or a security update may wait, but not for
    // longer than a monthly release cycle (SEC-0020's "e.g. monthly"), or a device would
    // skip whole releases. Hence no "never" for either.
    let month = jiff::SignedDuration::from_hours(30 * 24);
    for (key, d) in [
        ("install.reboot_deadline", c.install.reboot_deadline.0),
        ("link_cost.max_deferral", c.link_cost.max_deferral.0),
    ] {
        if d > month {
            return err(
                key,
                "must be at most 30d: a security update may not wait longer than a monthly \
                 release cycle (FS.25 SEC-0020, ETSI 5.3-8)"
                    .to_owned(),
            );
        }
    }
    let day = jiff::SignedDuration::from_hours(24);
    for (key, d) in [
        ("spread.first_check", c.spread.first_check.0),
        ("spread.wave", c.spread.wave.0),
        ("spread.approval", c.spread.approval.0),
        ("spread.window", c.spread.window.0),
    ] {
        if d > day {
            return err(
                key,
                "must be at most 1d: a spread delays every device of the fleet by up to this"
                    .to_owned(),
            );
        }
    }
    if let Some(u) = &c.device.replacement_url
        && !matches!(u.scheme(), "https" | "http")
    {
        return err(
            "device.replacement_url",
            format!("unsupported scheme {:?} (https or http)", u.scheme()),
        );
    }
    if c.device
        .replacement_text
        .as_ref()
        .is_some_and(|t| t.len() > 1000)
    {
        return err(
            "device.replacement_text",
            "longer than 1000 bytes".to_owned(),
        );
    }
    Ok(())
}
