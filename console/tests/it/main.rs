//! The console's integration tests, one test binary (one link, and no
//! `#[path]` includes):
//! - `handlers`: the router driven with `oneshot`, pages checked as HTML,
//!   on the SQLite default;
//! - `postgres`: the same page scenarios (`scenarios`) and live NOTIFY on
//!   the PostgreSQL named by `TEST_POSTGRES_URL`;
//! - `browser`: a real headless Chromium against the real binaries.

mod browser;
mod common;
mod handlers;
mod postgres;
mod scenarios;
