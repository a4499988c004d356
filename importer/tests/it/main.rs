//! The importer's integration tests, one test binary (one link, and no
//! `#[path]` includes): every scenario in `scenarios` runs on both back
//! ends (`backend_tests!` in `sqlite` and `postgres`), plus what is
//! particular to each (exit codes and the default file; TLS, NOTIFY).

#[macro_use]
mod scenarios;
mod postgres;
mod sqlite;
mod support;
