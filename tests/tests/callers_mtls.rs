//! The mTLS identity mode, against the production `envoy/envoy-mtls.yaml`
//! itself: client certificates with SPIFFE URI SANs from a test CA.

use std::net::SocketAddr;
use std::time::Duration;

use e2e::eventually;
use e2e::prod::{Identity, ProdStack};
use e2e::tls::{Issued, TestCa};
use serde_json::Value;

const LISTENER_HOST: &str = "auth-proxy.authproxy.svc";
const INVOICER: &str = "spiffe://cluster.local/ns/billing/sa/invoicer";

/// An HTTPS client for Envoy's mTLS listener, presenting `cert` if any.
fn client(stack: &ProdStack, cert: Option<&Issued>) -> reqwest::Client {
    let ca = std::fs::read(&stack.files.ca.cert).unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], stack.envoy.port).into();
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .resolve(LISTENER_HOST, addr)
        .pool_max_idle_per_host(0);
    if let Some(c) = cert {
        let mut pem = std::fs::read(&c.cert).unwrap();
        pem.extend(std::fs::read(&c.key).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

async fn get(
    client: &reqwest::Client,
    stack: &ProdStack,
    tenant: &str,
) -> Result<(u16, Value), reqwest::Error> {
    let r = client
        .get(format!(
            "https://{LISTENER_HOST}:{}/v1/x?q=1",
            stack.envoy.port
        ))
        .header("x-tenant-id", tenant)
        .send()
        .await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// No certificate, or one from another CA: the TLS handshake is refused.
/// An allowed SPIFFE ID gets the token; asking for a tenant it is not
/// allowed gets 403 and nothing reaches the upstream; the audit line names
/// the SPIFFE ID.
#[tokio::test(flavor = "multi_thread")]
async fn mtls_identity() {
    let stack = ProdStack::start(
        Identity::Mtls,
        &[
            ("acme", &format!("      - id: {INVOICER}\n")),
            ("globex", "      - id: spiffe://cluster.local/ns/globex/*\n"),
        ],
    )
    .await;
    let invoicer = stack.files.ca.issue("invoicer", &format!("URI:{INVOICER}"));
    let allowed = client(&stack, Some(&invoicer));
    let streak = std::cell::Cell::new(0);
    eventually(
        Duration::from_secs(20),
        "a token on every worker",
        || async {
            let ok = get(&allowed, &stack, "acme")
                .await
                .is_ok_and(|(s, _)| s == 200);
            streak.set(if ok { streak.get() + 1 } else { 0 });
            (streak.get() >= 20).then_some(())
        },
    )
    .await;
    let (status, body) = get(&allowed, &stack, "acme").await.unwrap();
    assert_eq!(status, 200);
    let acme = stack
        .auth
        .issued()
        .into_iter()
        .find(|i| i.tenant == "acme")
        .unwrap();
    assert_eq!(body["authorization"], format!("Bearer {}", acme.token));

    let before = stack.api.seen().len();
    let (status, body) = get(&allowed, &stack, "globex").await.unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("caller_not_allowed"))
    );

    assert!(
        get(&client(&stack, None), &stack, "acme").await.is_err(),
        "no client certificate"
    );
    let rogue_ca = TestCa::new("rogue-ca");
    let rogue = rogue_ca.issue("invoicer", &format!("URI:{INVOICER}"));
    assert!(
        get(&client(&stack, Some(&rogue)), &stack, "acme")
            .await
            .is_err(),
        "another CA"
    );
    assert_eq!(
        stack.api.seen().len(),
        before,
        "nothing reached the upstream"
    );

    let line = eventually(Duration::from_secs(5), "the refused audit line", || async {
        stack
            .envoy
            .output
            .lines()
            .iter()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|l| l["status"] == 403)
    })
    .await;
    assert_eq!(line["caller"], INVOICER);
    assert_eq!(line["tenant"], "globex");
    assert_eq!(line["refusal"], "caller_not_allowed");
    assert_eq!(line["path"], "/v1/x");
}

/// `envoy/envoy-mtls.yaml` is `envoy/envoy.yaml` except for the identity
/// parts (listener TLS, jwt_authn and its 401 mapping, the audit caller
/// field, the filter's identity block), so the two cannot drift apart.
#[test]
fn mtls_config_differs_only_in_identity() {
    fn load(file: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(e2e::repo_root().join(file)).unwrap();
        serde_saphyr::from_str(&text).unwrap()
    }
    fn normalize(mut doc: serde_json::Value) -> String {
        let chain = &mut doc["static_resources"]["listeners"][0]["filter_chains"][0];
        chain.as_object_mut().unwrap().remove("transport_socket");
        let hcm = &mut chain["filters"][0]["typed_config"];
        let mappers = hcm["local_reply_config"]["mappers"].as_array_mut().unwrap();
        mappers.retain(|m| !serde_saphyr::to_string(m).unwrap().contains("jwt_authn"));
        hcm["access_log"][0]["typed_config"]["log_format"]["json_format"]["caller"] =
            serde_json::Value::Null;
        let filters = hcm["http_filters"].as_array_mut().unwrap();
        filters.retain(|f| f["name"] != "envoy.filters.http.jwt_authn");
        for f in filters.iter_mut() {
            let value = &mut f["typed_config"]["config"]["configuration"]["value"];
            if let Some(json) = value.as_str() {
                let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
                v.as_object_mut().unwrap().remove("identity");
                *value = serde_json::Value::from(v.to_string());
            }
        }
        serde_saphyr::to_string(&doc).unwrap()
    }
    assert_eq!(
        normalize(load("envoy/envoy.yaml")),
        normalize(load("envoy/envoy-mtls.yaml"))
    );
}
