//! Update metadata: the FS.25 schema in TUF targets ([`schema`]), and fetching and verifying
//! a source's repository with tough ([`client`], over our own [`transport`]), with the
//! agent's rollback floor ([`floor`]), persisted trusted root ([`trust`]) and the delegation
//! resolution of targets ([`targets`]).
pub mod client;
pub mod floor;
pub mod schema;
pub mod targets;
pub mod transport;
pub mod trust;
