//! `ssu-agent` itself, built with the `test-extra-migration` feature: the newer agent of the
//! A/B self-update tests (tests/self_update.rs). Never packaged.

#[path = "ssu-agent.rs"]
mod agent;

fn main() -> std::process::ExitCode {
    agent::main()
}
