//! The sidecar's integration tests, one test binary (one link, and no
//! `#[path]` includes): the real binary (configuration errors, SIGTERM, log
//! hygiene), client authentication as the token server sees it, and the
//! token service against a fake token server that fails, hangs and lies.

mod binary;
mod client_auth;
mod common;
mod token_service;
