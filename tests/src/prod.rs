//! The production Envoy configuration (`envoy/envoy.yaml`, or its mTLS twin
//! `envoy/envoy-mtls.yaml`) run for real, rewriting only addresses, file
//! paths and the CA bundles: its guards (caller identity, pinned upstream
//! Host, verified upstream TLS, stripped headers) are then tested as
//! shipped, not as a local copy says.
//!
//! The fake third-party API serves TLS with a certificate that a test CA
//! issued for `api.example.com`, the host the production config pins; the
//! test JWT issuer's JWKS replaces the cluster's; the mTLS listener gets a
//! test server certificate and the test CA as its client CA bundle.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::fakes::{self, FakeApi, FakeAuth};
use crate::jwt::Issuer;
use crate::procs::{filter_wasm, Envoy, Sidecar};
use crate::tls::{Issued, TestCa};

/// The host the production config pins (SNI, SAN match, Host rewrite).
pub const API_HOST: &str = "api.example.com";

/// Which production file, and so which caller-identity mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// `envoy/envoy.yaml`: projected ServiceAccount tokens via jwt_authn.
    Jwt,
    /// `envoy/envoy-mtls.yaml`: client certificates with SPIFFE IDs.
    Mtls,
}

impl Identity {
    pub fn file(self) -> &'static str {
        match self {
            Identity::Jwt => "envoy/envoy.yaml",
            Identity::Mtls => "envoy/envoy-mtls.yaml",
        }
    }
}

/// Everything the production config refers to by file, made for a test.
pub struct Files {
    pub ca: TestCa,
    pub issuer: Issuer,
    /// Server certificate of the fake API (SAN `api.example.com`).
    pub api_cert: Issued,
    /// Server certificate of Envoy's mTLS listener.
    pub listener_cert: Issued,
}

impl Files {
    pub fn new() -> Files {
        let ca = TestCa::new("test-ca");
        let api_cert = ca.issue(API_HOST, &format!("DNS:{API_HOST}"));
        let listener_cert = ca.issue("auth-proxy", "DNS:auth-proxy.authproxy.svc");
        let issuer = Issuer::new();
        std::fs::write(ca.dir.path().join("jwks.json"), issuer.jwks()).expect("write jwks");
        Files {
            ca,
            issuer,
            api_cert,
            listener_cert,
        }
    }

    /// Original path in the production config → this test's file.
    fn paths(&self) -> BTreeMap<&'static str, String> {
        let s = |p: &Path| p.display().to_string();
        BTreeMap::from([
            ("/etc/ssl/certs/ca-certificates.crt", s(&self.ca.cert)),
            (
                "/etc/envoy/jwks/jwks.json",
                s(&self.ca.dir.path().join("jwks.json")),
            ),
            ("/etc/envoy/tls/tls.crt", s(&self.listener_cert.cert)),
            ("/etc/envoy/tls/tls.key", s(&self.listener_cert.key)),
            ("/etc/envoy/client-ca/ca.crt", s(&self.ca.cert)),
            ("/etc/envoy/authproxy.wasm", s(&filter_wasm())),
        ])
    }
}

impl Default for Files {
    fn default() -> Self {
        Files::new()
    }
}

/// Replaces every `filename:` value found in `paths`; panics on one that is
/// not, so a new file reference in the production config can't slip by.
fn rewrite_files(v: &mut Value, paths: &BTreeMap<&'static str, String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(name)) = m.get_mut("filename") {
                let new = paths
                    .get(name.as_str())
                    .unwrap_or_else(|| panic!("production config names an unknown file {name}"));
                *name = new.clone();
            }
            for (_, child) in m.iter_mut() {
                rewrite_files(child, paths);
            }
        }
        Value::Array(s) => s.iter_mut().for_each(|c| rewrite_files(c, paths)),
        _ => {}
    }
}

fn named<'a>(list: &'a mut Value, name: &str) -> &'a mut Value {
    list.as_array_mut()
        .and_then(|s| s.iter_mut().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("production config has no {name:?}"))
}

/// The production config text with test addresses, ports and files.
pub fn production_config(
    identity: Identity,
    files: &Files,
    sidecar_port: u16,
    api_port: u16,
) -> String {
    production_config_file(identity.file(), files, sidecar_port, api_port)
}

/// [`production_config`] for any production file (relative to the
/// repository root), e.g. the cache variant `envoy/cache.yaml`.
pub fn production_config_file(
    file: &str,
    files: &Files,
    sidecar_port: u16,
    api_port: u16,
) -> String {
    let path = crate::repo_root().join(file);
    let text = std::fs::read_to_string(&path).expect("read production envoy config");
    let mut doc: Value = serde_saphyr::from_str(&text).expect("parse production envoy config");
    doc["admin"]["address"]["socket_address"]["port_value"] = Value::from(0);
    let resources = &mut doc["static_resources"];
    let ingress = &mut named(&mut resources["listeners"], "ingress")["address"]["socket_address"];
    ingress["address"] = Value::from("127.0.0.1");
    ingress["port_value"] = Value::from(0);
    for (cluster, address, port) in [
        ("sidecar", "127.0.0.1", sidecar_port),
        ("third_party_api", "127.0.0.1", api_port),
    ] {
        let c = named(&mut resources["clusters"], cluster);
        let socket = &mut c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            ["address"]["socket_address"];
        socket["address"] = Value::from(address);
        socket["port_value"] = Value::from(port);
    }
    rewrite_files(&mut doc, &files.paths());
    serde_saphyr::to_string(&doc).expect("serialize envoy config")
}

/// Fake auth server, TLS fake API, sidecar with allow-lists, and Envoy
/// running the production config.
pub struct ProdStack {
    pub files: Files,
    pub auth: FakeAuth,
    pub api: FakeApi,
    pub sidecar: Sidecar,
    pub envoy: Envoy,
}

impl ProdStack {
    /// `callers` is each tenant's `callers:` YAML list (indented entries).
    pub async fn start(identity: Identity, callers: &[(&str, &str)]) -> ProdStack {
        ProdStack::start_with_lifetime(identity, callers, 3600).await
    }

    /// Like [`ProdStack::start`], with tokens of `lifetime_secs`.
    pub async fn start_with_lifetime(
        identity: Identity,
        callers: &[(&str, &str)],
        lifetime_secs: u64,
    ) -> ProdStack {
        let files = Files::new();
        let auth = FakeAuth::start(crate::Behave::issue(lifetime_secs)).await;
        let api = FakeApi::start_tls(&files.api_cert.cert, &files.api_cert.key).await;
        let tenants: Vec<String> = callers.iter().map(|(t, _)| t.to_string()).collect();
        let per_tenant: BTreeMap<String, String> = callers
            .iter()
            .map(|(t, c)| (t.to_string(), format!("    callers:\n{c}")))
            .collect();
        let sidecar = Sidecar::start_with(&auth, &tenants, "", &per_tenant).await;
        let config = production_config(
            identity,
            &files,
            sidecar.tokens_addr.port(),
            fakes::port_of(&api.url),
        );
        let envoy = Envoy::start_with(&config).await;
        ProdStack {
            files,
            auth,
            api,
            sidecar,
            envoy,
        }
    }
}
