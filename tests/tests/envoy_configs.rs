//! Every Envoy config in `envoy/` passes `envoy --mode validate`, which loads
//! the real `.wasm` and runs its `on_configure`; a bad plugin configuration
//! makes Envoy refuse the config with one clear line.

use e2e::procs::{config_with_built_wasm, envoy_run, envoy_validate};
use e2e::prod::{production_config, production_config_file, Files, Identity};
use e2e::repo_root;

/// Each `envoy/*.yaml` validates with the freshly built filter.
#[test]
fn shipped_configs_validate() {
    let mut checked = 0;
    let files = Files::new();
    for entry in std::fs::read_dir(repo_root().join("envoy")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        // The production configs name files of the pod (the .wasm, the
        // JWKS, CA bundles): point them at test files; the rest as shipped.
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let config = match name.as_str() {
            "envoy.yaml" => production_config(Identity::Jwt, &files, 15001, 443),
            "envoy-mtls.yaml" => production_config(Identity::Mtls, &files, 15001, 443),
            "cache.yaml" => production_config_file("envoy/cache.yaml", &files, 15001, 443),
            _ => config_with_built_wasm(&path, "", &|_| {}),
        };
        let (ok, out) = envoy_validate(&config);
        assert!(ok, "{} does not validate:\n{out}", path.display());
        // The cache configs (envoy/cache*.yaml) run the injector as
        // tenant_gate and cache_fill.
        assert!(
            ["bearer_injector", "tenant_gate"]
                .iter()
                .any(|role| out.contains(&format!("{role} configured"))),
            "filter configured in validate mode"
        );
        checked += 1;
    }
    assert!(checked >= 2, "envoy.yaml and local.yaml at least");
}

/// A bad filter configuration is refused at load, naming the key.
#[test]
fn bad_injector_config_is_refused() {
    let local = repo_root().join("envoy/local.yaml");
    for (key, value) in [
        ("tick_ms", serde_json::json!(0)),
        ("tenant_header", serde_json::json!("bad header")),
        ("no_such_key", serde_json::json!(1)),
    ] {
        let config = config_with_built_wasm(&local, "bearer_injector", &|json| {
            json[key] = value.clone();
        });
        let (ok, out) = envoy_validate(&config);
        assert!(!ok, "envoy accepted {key}={value}");
        let line = out
            .lines()
            .find(|l| l.contains("authproxy: bad configuration"))
            .unwrap_or_else(|| panic!("no clear error line for {key}:\n{out}"));
        assert!(line.contains(key), "{line}");
    }
}

/// A bad fetcher configuration stops Envoy at start-up. (Validate mode does
/// not instantiate bootstrap extensions, so this runs Envoy for real.)
#[test]
fn bad_fetcher_config_is_refused() {
    let local = repo_root().join("envoy/local.yaml");
    let config = config_with_built_wasm(&local, "token_fetcher", &|json| {
        json["poll_wait_ms"] = serde_json::json!(1);
    });
    // Ports 0: nothing else may be listening where the test runs.
    let config = config
        .replace("port_value: 9901", "port_value: 0")
        .replace("port_value: 10000", "port_value: 0");
    let (ok, out) = envoy_run(&config, std::time::Duration::from_secs(30));
    assert!(!ok, "envoy started with a bad fetcher config");
    let line = out
        .lines()
        .find(|l| l.contains("authproxy: bad configuration for token_fetcher"))
        .unwrap_or_else(|| panic!("no clear error line:\n{out}"));
    assert!(line.contains("poll_wait_ms"), "{line}");
}
