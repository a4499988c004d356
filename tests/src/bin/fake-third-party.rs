//! The fake third party for the demo: an OAuth2 token server
//! (`POST /token/{tenant}`) and an API that echoes what it received and
//! serves CSV exports. The same fakes the end-to-end tests use.
//!
//! `fake-third-party [AUTH_ADDR] [API_ADDR] [EXPORTS_DIR]`

use std::path::PathBuf;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let auth_addr = args.next().unwrap_or_else(|| "127.0.0.1:18081".into());
    let api_addr = args.next().unwrap_or_else(|| "127.0.0.1:18080".into());
    let exports = args.next().map(PathBuf::from);
    let auth = e2e::FakeAuth::start_on(&auth_addr, e2e::Behave::issue(3600)).await;
    let api = e2e::FakeApi::start_on(&api_addr, exports).await;
    eprintln!(
        "fake third party: token endpoint {}/token/{{tenant}}, API {}",
        auth.url, api.url
    );
    std::future::pending::<()>().await;
}
