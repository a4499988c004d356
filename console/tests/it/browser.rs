//! A real browser: headless Chromium (Debian's `chromium`, driven through `chromedriver`, both
//! installed by scripts/setup and started here) against the real console binary on the real
//! PostgreSQL named by `TEST_POSTGRES_URL`, with data imported by the real importer binary, and
//! the real sidecar binary behind the tenants page.
//! Fails, never skips, when the browser or the database is missing.
//!
//! One screenshot per page goes to `target/console-browser/` (a CI artifact).

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use testkit::{eventually, free_port, target_dir, Proc};
use tokio::process::Command;

use crate::common::*;

fn which(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("{name} is not installed: run scripts/setup (Debian packages chromium, chromium-driver)")
        })
}

async fn wait_http(url: &str, what: &str) {
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(30), what, || {
        let r = client.get(url).send();
        async move { r.await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
    })
    .await;
}

struct Browser {
    client: Client,
    shots: PathBuf,
    n: usize,
    _driver: Proc,
}

impl Browser {
    async fn start() -> Browser {
        let chromium = which("chromium");
        let chromedriver = which("chromedriver");
        let port = free_port();
        let driver = Proc::spawn(
            "chromedriver",
            Command::new(chromedriver).arg(format!("--port={port}")),
        );
        wait_http(&format!("http://127.0.0.1:{port}/status"), "chromedriver").await;
        let profile = tempfile::tempdir().unwrap().keep();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session through chromedriver");
        let shots = target_dir().join("console-browser");
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            client,
            shots,
            n: 0,
            _driver: driver,
        }
    }

    async fn shot(&mut self, name: &str) {
        self.n += 1;
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{:02}-{name}.png", self.n)), png).unwrap();
    }

    /// Waits until an element's text satisfies `ok`; returns it.
    async fn text_of(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let c = self.client.clone();
        eventually(Duration::from_secs(30), what, || {
            let c = c.clone();
            let css = css.to_string();
            let ok = &ok;
            async move {
                let e = c.find(Locator::Css(&css)).await.ok()?;
                let t = e.text().await.ok()?;
                ok(&t).then_some(t)
            }
        })
        .await
    }

    async fn click(&self, css: &str) {
        self.client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    async fn fill(&self, css: &str, text: &str) {
        let e = self.client.find(Locator::Css(css)).await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    async fn rows(&self, css: &str) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for row in self
            .client
            .find_all(Locator::Css(&format!("{css} tbody tr")))
            .await
            .unwrap()
        {
            let mut cells = Vec::new();
            for cell in row.find_all(Locator::Css("td")).await.unwrap() {
                cells.push(cell.text().await.unwrap().trim().to_string());
            }
            out.push(cells);
        }
        out
    }
}

/// Import a file with bad rows, log in, open the runs, click the run, see its rejects, filter a
/// type's rows, look at tenants and charts, start a re-run and watch it finish live without a
/// reload, log out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_walkthrough() {
    let w = World::postgres().await;
    w.import("acme", "orders").await.success();

    // The real sidecar binary, with tokens from the shared fake auth server.
    let auth = testkit::FakeAuth::start(testkit::Behave::issue(3600)).await;
    let sidecar_proc = e2e::Sidecar::start(&auth, &["acme".into(), "globex".into()], "").await;
    let sidecar = sidecar_proc.probes_url();

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut args = w.args();
    args.remove(0);
    let _console = Proc::spawn(
        "the console",
        Command::new(env!("CARGO_BIN_EXE_console"))
            .args(&args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--rerun", "local", "--importer-base-url", &w.api])
            .arg("--importer-bin")
            .arg(importer_bin())
            .args(["--sidecar-status-url", &format!("{sidecar}/status")]),
    );
    wait_http(&format!("{base}/livez"), "the console").await;

    let mut b = Browser::start().await;
    let c = b.client.clone();

    // No session: the login page.
    c.goto(&format!("{base}/runs")).await.unwrap();
    b.click("#username").await;
    assert!(c.current_url().await.unwrap().path().starts_with("/login"));
    b.shot("login").await;
    b.fill("#username", "admin").await;
    b.fill("#password", PASSWORD).await;
    b.click("#login").await;

    // Runs.
    b.text_of("#runs tbody tr", "the runs table", |t| t.contains("acme"))
        .await;
    b.shot("runs").await;
    let rows = b.rows("#runs").await;
    assert_eq!(rows[0][..5], ["#1", "acme", "orders", DATE, "succeeded"]);

    // The run and its rejects.
    b.click("a.run-link").await;
    b.text_of("#rejects tbody tr", "the rejects", |t| {
        t.contains("not a decimal")
    })
    .await;
    let rejects = b.rows("#rejects").await;
    assert_eq!(rejects[0][..3], ["3", "total", "not a decimal"]);
    assert_eq!(rejects[1][..2], ["5", "order_date"]);
    b.shot("run-rejects").await;

    // A type's rows, filtered.
    c.goto(&format!("{base}/data/orders")).await.unwrap();
    b.text_of("#rows tbody", "the orders", |t| t.contains("acme"))
        .await;
    b.fill("#f-status-eq", "open").await;
    b.fill("#f-total-min", "6").await;
    b.click("#apply-filters").await;
    b.text_of("#rows tbody", "the filtered orders", |t| {
        !t.contains("5.25")
    })
    .await;
    let ids: Vec<String> = b
        .rows("#rows")
        .await
        .into_iter()
        .map(|r| r[1].clone())
        .collect();
    assert_eq!(ids, ["1", "6"]);
    b.shot("data-filtered").await;

    c.goto(&format!("{base}/tenants")).await.unwrap();
    b.text_of("#tenants tbody", "the tenants", |t| {
        t.matches("valid").count() == 2
    })
    .await;
    b.shot("tenants").await;
    c.goto(&format!("{base}/charts")).await.unwrap();
    b.click("#rows-chart svg").await;
    b.shot("charts").await;

    // Re-run: the export changed (a bigger file), so the re-run loads it. The page stays the
    // same document throughout: the marker set now survives.
    let mut csv = String::from(ORDERS_CSV);
    for i in 7..=60_000 {
        csv.push_str(&format!(
            "{i},{},2026-01-07,open,EUR,{}.00,\n",
            i % 97,
            i % 500
        ));
    }
    std::fs::write(w.exports.join("orders.csv"), csv).unwrap();
    c.goto(&format!("{base}/runs/1")).await.unwrap();
    b.text_of("#no-later", "the run page", |_| true).await;
    c.execute("window.__sameDocument = 'yes';", vec![])
        .await
        .unwrap();
    b.click("#rerun").await;
    b.click("#rerun-yes").await;
    b.text_of("#rerun-started", "the re-run to start", |t| {
        t.contains("Re-run started")
    })
    .await;
    let done = b
        .text_of("#later-runs tbody tr", "the re-run to finish, live", |t| {
            t.contains("succeeded")
        })
        .await;
    assert!(done.contains("60,000"), "{done}");
    b.shot("rerun-finished").await;
    let same = c
        .execute("return window.__sameDocument || 'reloaded';", vec![])
        .await
        .unwrap();
    assert_eq!(same, serde_json::json!("yes"), "the page reloaded");

    // Log out: back to the login page, and the session is gone.
    b.click("#logout").await;
    b.click("#username").await;
    b.shot("logged-out").await;
    c.goto(&format!("{base}/runs")).await.unwrap();
    b.click("#username").await;
    assert!(c.current_url().await.unwrap().path().starts_with("/login"));
    c.close().await.unwrap();
}
