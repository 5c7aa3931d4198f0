//! Who may change what the agent does (FS.25 §3, ETSI 5.3-3): every mutating method asks
//! here about its *caller* — the sender in the message header, never a name the caller
//! passes — before the engine sees the request.
//!
//! With polkit on the bus (and `[authorization] polkit = true`), polkit's
//! `CheckAuthorization` decides for the subject `system-bus-name` (actions
//! `org.ssu.agent.{check,install,configure}`, `dbus/org.ssu.agent.policy`). Many embedded
//! images ship without polkit: then the configured allowlist of users and groups decides;
//! with neither, the method is refused. It never fails open.
//!
//! Groups come from the account database (`/etc/passwd`, `/etc/group`) for the uid the bus
//! reports, not from `/proc/PID/status` of the caller's pid: the uid is attested by the
//! kernel to the bus (SO_PEERCRED), while a pid can exit and be reused between the bus's
//! answer and our read, and `/proc` may be mounted `hidepid`. The allowlist names accounts
//! and groups as the administrator configured them, which is what the database says.
//! (NSS sources such as LDAP are not consulted; embedded images keep accounts in files.)
//!
//! Each refusal is a WARN in the journal, bounded per caller ([`super::refusals`]).

use std::collections::HashMap;
use std::path::PathBuf;

use zbus::Connection;
use zbus::message::Header;
use zbus::names::{BusName, OwnedUniqueName, WellKnownName};
use zbus_polkit::policykit1::{
    AuthorityProxy, AuthorizationResult, CheckAuthorizationFlags, Subject,
};

use super::AgentError;
use super::refusals::Refusals;
use crate::activation::{self, ActivationError, Started};
use crate::config::AuthorizationConfig;

/// polkit's bus name.
const POLKIT: &str = "org.freedesktop.PolicyKit1";

/// The polkit actions of `dbus/org.ssu.agent.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Check for updates now.
    Check,
    /// Install, reboot, inhibit.
    Install,
    /// Change settings: auto-install, postpone.
    Configure,
}

impl Action {
    pub fn id(self) -> &'static str {
        match self {
            Action::Check => "org.ssu.agent.check",
            Action::Install => "org.ssu.agent.install",
            Action::Configure => "org.ssu.agent.configure",
        }
    }
}

/// Decides for each mutating call.
#[derive(Debug, Clone)]
pub struct Authorizer {
    config: AuthorizationConfig,
    passwd: PathBuf,
    group: PathBuf,
    /// Which refusals make it to the journal.
    refusals: Refusals,
}

impl Authorizer {
    pub fn new(config: AuthorizationConfig) -> Authorizer {
        Authorizer {
            config,
            passwd: PathBuf::from("/etc/passwd"),
            group: PathBuf::from("/etc/group"),
            refusals: Refusals::default(),
        }
    }

    /// Ok when the sender of `header` may do `action`; `NotAuthorized` (saying what to do)
    /// otherwise.
    pub async fn authorize(
        &self,
        conn: &Connection,
        header: &Header<'_>,
        action: Action,
    ) -> Result<(), AgentError> {
        let sender = header
            .sender()
            .ok_or_else(|| AgentError::NotAuthorized("the call has no sender".into()))?
            .to_owned();
        let dbus = zbus::fdo::DBusProxy::new(conn)
            .await
            .map_err(|e| AgentError::Internal(format!("cannot ask the bus: {e}")))?;
        // Why polkit did not decide, for the refusal below.
        let mut no_polkit = "polkit is not installed";
        if self.config.polkit {
            match polkit_running(&dbus).await {
                Ok(true) => return self.ask_polkit(conn, header, action).await,
                Ok(false) => {}
                Err(e) => {
                    // Installed but failing: say so, and let the allowlist decide as without
                    // polkit (it is the administrator's own list; with none, refused).
                    tracing::warn!(error = %e, "cannot start polkit; the allowlist decides");
                    no_polkit = "polkit could not be started";
                }
            }
        } else {
            no_polkit = "polkit is turned off ([authorization] polkit = false)";
        }
        let uid = dbus
            .get_connection_unix_user(sender.clone().into())
            .await
            .map_err(|e| {
                AgentError::NotAuthorized(format!("cannot tell who the caller is: {e}"))
            })?;
        let who = Account::lookup(uid, &read_small(&self.passwd), &read_small(&self.group));
        if self.config.allow_users.is_empty() && self.config.allow_groups.is_empty() {
            return Err(AgentError::NotAuthorized(format!(
                "{} needs authorization, but {no_polkit} and no allowlist is configured \
                 ([authorization] allow_users/allow_groups in agent.toml); ask your \
                 administrator",
                action.id()
            )));
        }
        if who.allowed(&self.config) {
            tracing::info!(uid, action = action.id(), "allowed by the allowlist");
            Ok(())
        } else {
            let what = format!("{}: not in the allowlist", action.id());
            if self.refusals.note(Some(uid), &what) {
                let caller = Caller::ask(&dbus, &sender).await;
                tracing::warn!(
                    uid,
                    pid = caller.pid,
                    process = caller.process.as_deref(),
                    sender = %sender,
                    action = action.id(),
                    "refused: not in the allowlist"
                );
            }
            Err(AgentError::NotAuthorized(format!(
                "user {} may not do {}: not in [authorization] allow_users/allow_groups; run \
                 as an allowed user or ask your administrator",
                who.display(),
                action.id()
            )))
        }
    }

    async fn ask_polkit(
        &self,
        conn: &Connection,
        header: &Header<'_>,
        action: Action,
    ) -> Result<(), AgentError> {
        let subject = Subject::new_for_message_header(header)
            .map_err(|e| AgentError::NotAuthorized(format!("cannot identify the caller: {e}")))?;
        let authority = AuthorityProxy::new(conn)
            .await
            .map_err(|e| AgentError::NotAuthorized(format!("cannot reach polkit: {e}")))?;
        // Who polkit is now: its answer must come from there (see `from_polkit`).
        let owner = zbus::fdo::DBusProxy::new(conn)
            .await
            .map_err(|e| AgentError::NotAuthorized(format!("cannot ask the bus: {e}")))?
            .get_name_owner(BusName::from(WellKnownName::from_static_str_unchecked(
                POLKIT,
            )))
            .await
            .map_err(|e| AgentError::NotAuthorized(format!("polkit is not on the bus: {e}")))?;
        // The calls stem from a user's action, so an authentication agent may ask them.
        let details: HashMap<&str, &str> = HashMap::new();
        let reply = authority
            .inner()
            .call_method(
                "CheckAuthorization",
                &(
                    &subject,
                    action.id(),
                    &details,
                    CheckAuthorizationFlags::ALLOW_USER_INTERACTION,
                    "",
                ),
            )
            .await
            .map_err(|e| AgentError::NotAuthorized(format!("polkit did not answer: {e}")))?;
        if !from_polkit(&reply, &owner) {
            tracing::error!(
                sender = ?reply.header().sender().map(|s| s.as_str()),
                polkit = %owner,
                action = action.id(),
                "an authorization answer did not come from polkit; refused"
            );
            return Err(AgentError::NotAuthorized(
                "the authorization answer did not come from polkit; try again".into(),
            ));
        }
        let result: AuthorizationResult = reply.body().deserialize().map_err(|e| {
            AgentError::NotAuthorized(format!("polkit's answer is not understood: {e}"))
        })?;
        if result.is_authorized {
            Ok(())
        } else {
            // Who was refused, for the administrator reading the log.
            let caller = match (header.sender(), zbus::fdo::DBusProxy::new(conn).await) {
                (Some(sender), Ok(dbus)) => Caller::ask(&dbus, &sender.to_owned()).await,
                _ => Caller::default(),
            };
            let what = format!("{}: refused by polkit", action.id());
            if self.refusals.note(caller.uid, &what) {
                tracing::warn!(
                    uid = caller.uid,
                    pid = caller.pid,
                    process = caller.process.as_deref(),
                    sender = %header.sender().map(|s| s.as_str()).unwrap_or(""),
                    action = action.id(),
                    "refused by polkit"
                );
            }
            Err(AgentError::NotAuthorized(format!(
                "polkit refused {}; run as root or ask your administrator for the permission",
                action.id()
            )))
        }
    }
}

/// Whether `reply` was sent by `polkit`, the owner of polkit's name when it was asked. zbus
/// hands a method return to the call whose serial it names, whoever sent it; on the system bus
/// dbus-daemon lets only requested replies through (`send_requested_reply`), but a bus whose
/// policy is looser must not turn another user's forged "authorized" into a decision.
fn from_polkit(reply: &zbus::Message, polkit: &OwnedUniqueName) -> bool {
    reply
        .header()
        .sender()
        .is_some_and(|s| s.as_str() == polkit.as_str())
}

/// Whether polkit can decide: it runs, or the bus started it now. polkitd is normally
/// bus-activated (nothing starts it at boot), so "not on the bus" alone does not mean "no
/// polkit".
async fn polkit_running(dbus: &zbus::fdo::DBusProxy<'_>) -> Result<bool, ActivationError> {
    match activation::ensure_running(dbus, POLKIT).await? {
        Started::AlreadyRunning => Ok(true),
        Started::Activated => {
            tracing::info!("polkit was not running; started it by D-Bus activation");
            Ok(true)
        }
        Started::Absent | Started::Disabled => Ok(false),
    }
}

/// A caller as the bus knows it, for log lines: its uid and pid (the bus's
/// `GetConnectionCredentials`, attested by the kernel) and, when `/proc` shows it, the
/// process's name. Under the shipped unit (`ProtectProc=invisible`) other processes are
/// hidden, so the name is often missing; the pid is always there.
#[derive(Debug, Default)]
struct Caller {
    uid: Option<u32>,
    pid: Option<u32>,
    process: Option<String>,
}

impl Caller {
    async fn ask(dbus: &zbus::fdo::DBusProxy<'_>, sender: &zbus::names::UniqueName<'_>) -> Caller {
        let asked = tokio::time::timeout(
            crate::activation::CALL_TIMEOUT,
            dbus.get_connection_credentials(sender.clone().into()),
        )
        .await;
        let Ok(Ok(creds)) = asked else {
            return Caller::default();
        };
        let pid = creds.process_id();
        let process = pid.and_then(|p| {
            let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).ok()?;
            Some(comm.trim_end().to_owned())
        });
        Caller {
            uid: creds.unix_user_id(),
            pid,
            process,
        }
    }
}

/// Account files are small; a huge or unreadable one counts as empty (nobody matches).
fn read_small(path: &std::path::Path) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(4 * 1024 * 1024).read_to_string(&mut text);
    }
    text
}

/// A caller as the account database knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    /// Empty when the uid has no passwd entry.
    pub name: String,
    /// (gid, name) of the primary and supplementary groups.
    pub groups: Vec<(u32, String)>,
}

impl Account {
    /// Looks `uid` up in the texts of `/etc/passwd` and `/etc/group`. Malformed lines are
    /// skipped, never guessed at.
    pub fn lookup(uid: u32, passwd: &str, group: &str) -> Account {
        let entry = passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || f[0].is_empty() || f[2].parse::<u32>().ok()? != uid {
                return None;
            }
            Some((f[0].to_owned(), f[3].parse::<u32>().ok()?))
        });
        let (name, primary) = match entry {
            Some((n, g)) => (n, Some(g)),
            None => (String::new(), None),
        };
        let mut groups = Vec::new();
        for line in group.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || f[0].is_empty() {
                continue;
            }
            let Ok(gid) = f[2].parse::<u32>() else {
                continue;
            };
            let member = !name.is_empty() && f[3].split(',').any(|m| m == name);
            if Some(gid) == primary || member {
                groups.push((gid, f[0].to_owned()));
            }
        }
        Account { uid, name, groups }
    }

    /// Whether the allowlist names this account or one of its groups (by name or number).
    pub fn allowed(&self, c: &AuthorizationConfig) -> bool {
        let uid = self.uid.to_string();
        let user = c
            .allow_users
            .iter()
            .any(|u| *u == uid || (!self.name.is_empty() && *u == self.name));
        let group = c.allow_groups.iter().any(|g| {
            self.groups
                .iter()
                .any(|(gid, name)| *g == gid.to_string() || g == name)
        });
        user || group
    }

    fn display(&self) -> String {
        if self.name.is_empty() {
            format!("uid {}", self.uid)
        } else {
            format!("{} (uid {})", self.name, self.uid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_from(sender: &str) -> zbus::Message {
        let call = zbus::Message::method_call("/org/freedesktop/PolicyKit1/Authority", "X")
            .serial(std::num::NonZeroU32::new(7).unwrap())
            .sender(":1.9")
            .build(&())
            .unwrap();
        zbus::Message::method_return(&call.header())
            .sender(sender)
            .build(&((true, false, HashMap::<String, String>::new()),))
            .unwrap()
    }

    #[test]
    fn only_polkit_s_own_answer_counts() {
        let polkit = OwnedUniqueName::try_from(":1.4").unwrap();
        assert!(from_polkit(&reply_from(":1.4"), &polkit));
        assert!(!from_polkit(&reply_from(":1.66"), &polkit));
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
        alice:x:1000:1000::/home/alice:/bin/sh\n\
        broken line without colons\n\
        :x:1001:1001::/:/bin/sh\n\
        mallory:x:notanumber:0::/:/bin/sh\n";
    const GROUP: &str = "root:x:0:\n\
        nogroup:x:65534:\n\
        alice:x:1000:\n\
        ssu:x:990:alice,bob\n\
        wheel:x:10:bobalice\n\
        bad:x:zz:alice\n\
        :x:5:alice\n";

    fn cfg(users: &[&str], groups: &[&str]) -> AuthorizationConfig {
        AuthorizationConfig {
            polkit: false,
            allow_users: users.iter().map(|s| s.to_string()).collect(),
            allow_groups: groups.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn lookup_reads_primary_and_supplementary_groups() {
        let a = Account::lookup(1000, PASSWD, GROUP);
        assert_eq!(a.name, "alice");
        assert_eq!(
            a.groups,
            vec![(1000, "alice".to_owned()), (990, "ssu".to_owned())]
        );
        let n = Account::lookup(65534, PASSWD, GROUP);
        assert_eq!(n.groups, vec![(65534, "nogroup".to_owned())]);
    }

    #[test]
    fn hostile_account_files_match_nobody() {
        // Unknown uid: no name, no groups — only a numeric uid entry can allow it.
        let u = Account::lookup(4242, PASSWD, GROUP);
        assert_eq!(u.name, "");
        assert!(u.groups.is_empty());
        assert!(!u.allowed(&cfg(&[""], &[""])));
        assert!(u.allowed(&cfg(&["4242"], &[])));
        // An empty user name does not inherit the groups that list members by name.
        let e = Account::lookup(1001, PASSWD, GROUP);
        assert_eq!(e.name, "");
        for junk in ["", "\0\0\0", "::::::::", "a:b:c", &"x:".repeat(10_000)] {
            let a = Account::lookup(0, junk, junk);
            assert!(!a.allowed(&cfg(&["root"], &["root"])), "{junk:?}");
        }
    }

    #[test]
    fn allowlist_table() {
        let root = Account::lookup(0, PASSWD, GROUP);
        let alice = Account::lookup(1000, PASSWD, GROUP);
        let nobody = Account::lookup(65534, PASSWD, GROUP);
        let table: [(&Account, &[&str], &[&str], bool); 9] = [
            (&root, &["root"], &[], true),
            (&root, &["0"], &[], true),
            (&root, &[], &[], false),
            (&alice, &["root"], &["ssu"], true),
            (&alice, &["root"], &["990"], true),
            (&alice, &["root"], &["wheel"], false),
            (&nobody, &[], &["nogroup"], true),
            (&nobody, &["alice"], &["ssu"], false),
            (&root, &["Root"], &["ROOT"], false),
        ];
        for (who, users, groups, want) in table {
            assert_eq!(
                who.allowed(&cfg(users, groups)),
                want,
                "{} {users:?} {groups:?}",
                who.name
            );
        }
    }
}
