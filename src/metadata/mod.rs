//! Update metadata: the FS.25 schema in TUF targets ([`schema`]), and fetching and verifying
//! a source's repository with tough ([`client`], over our own [`transport`]).
pub mod client;
pub mod schema;
pub mod transport;
