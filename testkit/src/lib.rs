//! What every crate's tests share, so there is one of each:
//!
//! - [`eventually`]: wait for a condition instead of sleeping.
//! - [`oauth::FakeAuth`]: the fake OAuth2 token server (the third party's
//!   auth server, the one part the tests fake), scriptable per request and
//!   per tenant.
//! - [`proc::Proc`]: the process launcher (output kept line by line, killed
//!   when dropped, SIGTERM and exit codes), and [`binary`] to find what
//!   cargo built.
//! - [`redis::RedisServer`]: a throwaway `redis-server`.
//! - [`serve`]: axum routers on loopback, plain or TLS; [`export`]: the
//!   third-party export payload the importer fetches.
//!
//! The Python fakes in `bench/` and `deploy/` stay: they run without a build.

pub mod export;
pub mod oauth;
pub mod proc;
pub mod redis;
pub mod serve;

use std::fmt::Display;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use oauth::{Behave, FakeAuth};
pub use proc::{Output, Proc};
pub use serve::{port_of, serve, serve_on, serve_tls};

/// What a check passed to [`eventually`] returns: `bool`, `Option<T>` or
/// `Result<T, E>`. A `Result`'s last error is quoted when the wait fails.
pub trait Ready {
    type Value;
    fn ready(self) -> Result<Self::Value, String>;
}

impl Ready for bool {
    type Value = ();
    fn ready(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("false".into())
        }
    }
}

impl<T> Ready for Option<T> {
    type Value = T;
    fn ready(self) -> Result<T, String> {
        self.ok_or_else(|| "none".into())
    }
}

impl<T, E: Display> Ready for Result<T, E> {
    type Value = T;
    fn ready(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// Polls `check` every 10 ms until it is ready, and returns its value; after
/// `within`, panics naming `what` and the last answer. Use it instead of a
/// fixed sleep. It follows tokio's clock, so paused-time tests work too.
pub async fn eventually<R, F, Fut>(within: Duration, what: &str, mut check: F) -> R::Value
where
    R: Ready,
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let last = match check().await.ready() {
            Ok(v) => return v,
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("not within {within:?}: {what} (last check: {last})");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The cargo target directory of the running test binary
/// (`<target>/<profile>/deps/<test>`), so `CARGO_TARGET_DIR` is followed.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .expect("target dir")
}

/// A file the build makes: `$env` when set, else `default` under the target
/// directory. Panics, saying how to build it, when it is missing: a test
/// never skips for want of a binary.
pub fn built(env: &str, default: &str, how: &str) -> PathBuf {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join(default));
    assert!(
        path.exists(),
        "{} is missing; build it first ({how}), or run scripts/test",
        path.display()
    );
    path
}

/// A debug binary of this workspace: `$<NAME>_BIN`, or `target/debug/<name>`.
pub fn binary(name: &str) -> PathBuf {
    let env = format!("{}_BIN", name.to_uppercase().replace('-', "_"));
    built(
        &env,
        &format!("debug/{name}"),
        &format!("cargo build -p {name}"),
    )
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Writes `text` to `name` inside `dir`; returns the path as a string.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn eventually_returns_the_value_once_ready() {
        let mut n = 0;
        let v = eventually(Duration::from_secs(5), "the third try", || {
            n += 1;
            let n = n;
            async move { (n >= 3).then_some(n) }
        })
        .await;
        assert_eq!(v, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "not within 50ms: a miracle (last check: still no)")]
    async fn eventually_names_what_and_the_last_error() {
        eventually(Duration::from_millis(50), "a miracle", || async {
            Err::<(), _>("still no")
        })
        .await;
    }

    /// The queue first, then the tenant's own default, then the server's.
    #[tokio::test]
    async fn fake_auth_answers_queue_then_tenant_then_default() {
        let auth = FakeAuth::start(Behave::issue(60)).await;
        auth.set_tenant("acme", Behave::json(401, r#"{"error":"invalid_client"}"#));
        auth.push([Behave::json(503, "{}")]);
        let http = reqwest_like::post;
        assert_eq!(http(&auth.tenant_url("acme")).await, 503);
        assert_eq!(http(&auth.tenant_url("acme")).await, 401);
        assert_eq!(http(&auth.tenant_url("globex")).await, 200);
        assert_eq!(http(&auth.token_url()).await, 200);
        let issued = auth.issued();
        assert_eq!(issued.len(), 2);
        assert_eq!(issued[0].tenant, "globex");
        assert_eq!(issued[0].lifetime, Duration::from_secs(60));
        assert!(auth.is_latest(&issued[0].token));
        assert_eq!(auth.count(), 4);
        assert_eq!(
            auth.seen()[1].param("grant_type"),
            Some("client_credentials")
        );
    }

    /// A bare HTTP/1.1 POST over a TCP stream (the kit has no HTTP client).
    mod reqwest_like {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        pub async fn post(url: &str) -> u16 {
            let rest = url.strip_prefix("http://").expect("http url");
            let (host, path) = rest.split_once('/').expect("path");
            let mut s = tokio::net::TcpStream::connect(host).await.expect("connect");
            let body = "grant_type=client_credentials";
            let req = format!(
                "POST /{path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).await.expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("read");
            out.split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .expect("status")
        }
    }
}
