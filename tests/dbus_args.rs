//! Property-based fuzzing of the agent's D-Bus methods on a real bus (issue 16): arbitrary
//! argument values, wrong signatures and unknown members, sent by an authorized caller (root)
//! so that every path behind authorization runs. Every call gets an answer within a bound,
//! every error has a stable name, and the agent keeps serving.
//!
//! The budget is fixed (`CASES` sequences, `PROPTEST_CASES` overrides it); failures proptest
//! finds are kept in `proptest-regressions/dbus_args.txt` and replayed first.

mod common;

use std::time::Duration;

use common::Sandbox;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const CASES: u32 = 48;
/// Every call must be answered within this (the agent answers in milliseconds; a `CheckNow`
/// without an update server fails fast).
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// One method call: member name and its body.
#[derive(Debug, Clone)]
struct Call {
    member: &'static str,
    body: Body,
}

#[derive(Debug, Clone)]
enum Body {
    None,
    U64(u64),
    Bool(bool),
    Str(String),
    /// Two arguments where one is expected.
    StrU64(String, u64),
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        "[\u{1}-\u{1f}\u{7f}\u{85}\u{2028}\u{202a}-\u{202e}]{1,10}",
        (0usize..70_000).prop_map(|n| "x".repeat(n)),
        Just(String::new()),
    ]
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        Just(Body::None),
        prop_oneof![any::<u64>(), Just(0u64), Just(u64::MAX), 0u64..1_000_000].prop_map(Body::U64),
        any::<bool>().prop_map(Body::Bool),
        text().prop_map(Body::Str),
        (text(), any::<u64>()).prop_map(|(s, n)| Body::StrU64(s, n)),
    ]
}

fn call() -> impl Strategy<Value = Call> {
    let member = prop::sample::select(vec![
        "Postpone",
        "Inhibit",
        "SetAutoInstall",
        "Install",
        "CheckNow",
        "GetStatus",
        "GetHistory",
        "GetReport",
        "GetPublicKey",
        "NoSuchMethod",
    ]);
    (member, body()).prop_map(|(member, body)| Call { member, body })
}

/// Error names a caller may see: the agent's own and the bus's standard argument errors.
fn expected_error(name: &str) -> bool {
    name.starts_with("org.ssu.Agent1.Error.")
        || matches!(
            name,
            "org.freedesktop.DBus.Error.InvalidArgs"
                | "org.freedesktop.DBus.Error.UnknownMethod"
                | "org.freedesktop.DBus.Error.NotSupported"
        )
}

#[test]
fn every_method_answers_arbitrary_arguments_with_a_named_error_or_a_result() {
    let sb = Sandbox::up_with(common::Options {
        rauc: true,
        modem: false,
        ..common::Options::default()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let conn = rt.block_on(async {
        zbus::connection::Builder::address(sb.bus_address())
            .build()
            .await
            .unwrap()
    });

    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "proptest-regressions/dbus_args.txt",
            ),
        )),
        ..Config::default()
    });
    let result = runner.run(&prop::collection::vec(call(), 1..5), |calls| {
        for c in calls {
            let reply = rt.block_on(async {
                let call = async {
                    let dest = Some("org.ssu.Agent1");
                    let (path, iface) = ("/org/ssu/Agent1", Some("org.ssu.Agent1"));
                    match &c.body {
                        Body::None => conn.call_method(dest, path, iface, c.member, &()).await,
                        Body::U64(n) => conn.call_method(dest, path, iface, c.member, &(*n,)).await,
                        Body::Bool(v) => {
                            conn.call_method(dest, path, iface, c.member, &(*v,)).await
                        }
                        Body::Str(t) => conn.call_method(dest, path, iface, c.member, &(t,)).await,
                        Body::StrU64(t, n) => {
                            conn.call_method(dest, path, iface, c.member, &(t, *n))
                                .await
                        }
                    }
                };
                tokio::time::timeout(ANSWER_WITHIN, call).await
            });
            let reply = reply.map_err(|_| {
                TestCaseError::fail(format!(
                    "{} got no answer within {ANSWER_WITHIN:?}",
                    c.member
                ))
            })?;
            if let Err(e) = &reply {
                // A D-Bus error reply, whichever zbus variant carries it, displays as
                // "NAME: MESSAGE"; anything else (I/O, a closed connection) does not.
                let text = e.to_string();
                let (name, message) = text.split_once(": ").unwrap_or((&text, ""));
                prop_assert!(expected_error(name), "{}: {text}", c.member);
                prop_assert!(!message.trim().is_empty(), "{}: {text}", c.member);
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}\n--- agent log ---\n{}", sb.agent_log());
    }

    // Still serving, and still the same process.
    let status = sb.ssuctl(&["status", "--json"]);
    assert!(status.status.success(), "{status:?}");
    let pid = sb.pid("agent").expect("agent pid");
    assert!(common::process_alive(pid), "{}", sb.agent_log());
}
