use std::path::Path;

use super::*;

const MINIMAL: &str = r#"
tenants:
  acme:
    token_url: https://auth.example.com/oauth2/token
    client_id: acme-client
    auth:
      method: client_secret_post
      secret: { env: AUTHPROXY_TEST_SECRET_ALWAYS_SET }
"#;

fn load(yaml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    // The secret check reads this variable; it is set once for all tests.
    std::env::set_var("AUTHPROXY_TEST_SECRET_ALWAYS_SET", "s3cret");
    Config::from_yaml(
        yaml,
        Path::new("test.yaml"),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

fn err(yaml: &str, env: &[(&str, &str)]) -> String {
    load(yaml, env).unwrap_err().to_string()
}

/// A minimal file gets the documented defaults.
#[test]
fn defaults() {
    let c = load(MINIMAL, &[]).unwrap();
    assert_eq!(c.listen.tokens.to_string(), "127.0.0.1:15001");
    assert_eq!(c.listen.probes.to_string(), "0.0.0.0:15021");
    assert_eq!(c.refresh.fraction, 0.5);
    assert_eq!(c.refresh.expiry_margin, Duration::from_secs(30));
    assert_eq!(c.refresh.min_lifetime, Duration::from_secs(10));
    assert_eq!(c.refresh.max_lifetime, Duration::from_secs(86400));
    assert_eq!(c.refresh.max_concurrent_fetches, 16);
    assert_eq!(c.refresh.clock_skew, Duration::from_secs(30));
    assert_eq!(c.shutdown.envoy_admin, None);
    let t = c.tenant("acme").unwrap();
    assert!(
        !t.required,
        "a tenant without a token does not make the pod unready by default"
    );
    assert!(!t.allow_http);
    assert!(matches!(t.grant, Grant::ClientCredentials));
    assert!(matches!(t.auth, ClientAuth::SecretPost(_)));
}

/// `AUTHPROXY__a__b` overrides keys case-insensitively, with YAML scalars.
#[test]
fn env_overrides() {
    let c = load(
        MINIMAL,
        &[
            ("AUTHPROXY__LISTEN__TOKENS", "127.0.0.1:0"),
            ("AUTHPROXY__REFRESH__FRACTION", "0.6"),
            ("AUTHPROXY__TENANTS__ACME__CLIENT_ID", "acme-2"),
            ("AUTHPROXY__TENANTS__ACME__REQUIRED", "true"),
            ("UNRELATED", "x"),
        ],
    )
    .unwrap();
    assert_eq!(c.listen.tokens.port(), 0);
    assert_eq!(c.refresh.fraction, 0.6);
    let t = c.tenant("acme").unwrap();
    assert_eq!(t.client_id, "acme-2");
    assert!(t.required);
}

/// Every problem names its key.
#[test]
fn errors_name_the_key() {
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            MINIMAL,
            &[("AUTHPROXY__LISTEN__TOKENS", "0.0.0.0:15001")],
            "listen.tokens",
        ),
        (
            MINIMAL,
            &[("AUTHPROXY__LISTEN__PROBES", "nope")],
            "listen.probes",
        ),
        (
            MINIMAL,
            &[("AUTHPROXY__REFRESH__FRACTION", "1.5")],
            "refresh.fraction",
        ),
        (
            MINIMAL,
            &[("AUTHPROXY__REFRESH__JITTER", "0.6")],
            "refresh.jitter",
        ),
        (
            MINIMAL,
            &[("AUTHPROXY__REFRESH__EXPIRY_MARGIN", "soon")],
            "refresh.expiry_margin",
        ),
        (
            MINIMAL,
            &[("AUTHPROXY__REFRESH__BACKOFF_MAX", "1ms")],
            "refresh.backoff_max",
        ),
        (
            MINIMAL,
            &[("AUTHPROXY__TENANTS__ACME__TOKEN_URL", "ftp://x")],
            "tenants.acme.token_url",
        ),
        (
            MINIMAL,
            &[("AUTHPROXY__TENANTS__ACME__TOKEN_URL", "not a url")],
            "tenants.acme.token_url",
        ),
        (
            MINIMAL,
            &[("AUTHPROXY__TENANTS__ACME__AUTH__METHOD", "magic")],
            "tenants.acme.auth.method",
        ),
        (
            MINIMAL,
            &[(
                "AUTHPROXY__TENANTS__ACME__AUTH__SECRET__ENV",
                "AUTHPROXY_TEST_UNSET_123",
            )],
            "AUTHPROXY_TEST_UNSET_123",
        ),
        (
            MINIMAL,
            &[(
                "AUTHPROXY__TENANTS__ACME__EXTRA_PARAMS__GRANT_TYPE",
                "password",
            )],
            "tenants.acme.extra_params.grant_type",
        ),
        (
            MINIMAL,
            &[(
                "AUTHPROXY__TENANTS__ACME__EXTRA_HEADERS__AUTHORIZATION",
                "x",
            )],
            "tenants.acme.extra_headers.authorization",
        ),
        (
            MINIMAL,
            &[(
                "AUTHPROXY__TENANTS__ACME__TOKEN_URL",
                "http://auth.example.com/token",
            )],
            "tenants.acme.token_url",
        ),
        (
            MINIMAL,
            &[("AUTHPROXY__REFRESH__MIN_LIFETIME", "500ms")],
            "refresh.min_lifetime",
        ),
        (
            MINIMAL,
            &[("AUTHPROXY__REFRESH__MAX_LIFETIME", "9s")],
            "refresh.max_lifetime",
        ),
        (
            MINIMAL,
            &[("AUTHPROXY__REFRESH__MAX_CONCURRENT_FETCHES", "0")],
            "refresh.max_concurrent_fetches",
        ),
        (
            MINIMAL,
            &[("AUTHPROXY__SHUTDOWN__ENVOY_ADMIN", "10.0.0.1:9901")],
            "shutdown.envoy_admin",
        ),
        (
            MINIMAL,
            &[("AUTHPROXY__SHUTDOWN__IDLE", "0s")],
            "shutdown.idle",
        ),
        ("tenants: {}", &[], "tenants"),
        ("bogus: 1\n", &[], "bogus"),
        ("listen: {tokens: 1}\n", &[], "listen.tokens"),
        ("tenants: {acme: {client_id: x}}\n", &[], "tenants.acme"),
        ("tenants: [", &[], "test.yaml"),
    ];
    for (yaml, env, key) in cases {
        let e = err(yaml, env);
        assert!(e.contains(key), "{env:?}: {e:?} should name {key}");
    }
}

/// Plain http is refused unless the host is loopback or the tenant says
/// `allow_http: true`.
#[test]
fn http_token_urls() {
    for (url, allow, ok) in [
        ("http://auth.example.com/token", "false", false),
        ("http://auth.example.com/token", "true", true),
        ("http://127.0.0.1:8080/token", "false", true),
        ("http://[::1]:8080/token", "false", true),
        ("http://localhost:8080/token", "false", true),
        ("https://auth.example.com/token", "false", true),
    ] {
        let r = load(
            MINIMAL,
            &[
                ("AUTHPROXY__TENANTS__ACME__TOKEN_URL", url),
                ("AUTHPROXY__TENANTS__ACME__ALLOW_HTTP", allow),
            ],
        );
        assert_eq!(r.is_ok(), ok, "{url} allow_http={allow}: {r:?}");
    }
}

/// private_key_jwt needs a key that parses; the error names the key path.
#[test]
fn private_key_jwt_checks_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("key.pem");
    std::fs::write(
        &pem,
        "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let yaml = format!(
        r#"
tenants:
  acme:
    token_url: https://auth.example.com/token
    client_id: acme
    auth:
      method: private_key_jwt
      key: {{ alg: RS256, kid: k1, file: {} }}
"#,
        pem.display()
    );
    let e = err(&yaml, &[]);
    assert!(e.contains("tenants.acme.auth.key"), "{e}");
    let good = jwt_simple::prelude::ES256KeyPair::generate()
        .to_pem()
        .unwrap();
    std::fs::write(&pem, good).unwrap();
    let e = err(&yaml, &[]);
    assert!(e.contains("RSA"), "an EC key for RS256 is refused: {e}");
    let c = load(&yaml.replace("RS256", "ES256"), &[]).unwrap();
    assert!(matches!(
        c.tenant("acme").unwrap().auth,
        ClientAuth::PrivateKeyJwt(_)
    ));
}

/// Debug output of a whole config shows secret sources, never values.
#[test]
fn debug_redacts() {
    let c = load(MINIMAL, &[]).unwrap();
    let text = format!("{c:?}");
    assert!(text.contains("env:AUTHPROXY_TEST_SECRET_ALWAYS_SET"));
    assert!(!text.contains("s3cret"));
}

/// `callers` is the tenant's allow-list: parsed with its restrictions, and
/// each bad entry refused with the key that names it.
#[test]
fn callers_allow_list() {
    let yaml = format!(
        "{MINIMAL}    callers:\n      - id: system:serviceaccount:billing:invoicer\n      - id: spiffe://cluster.local/ns/reports/*\n        methods: [GET]\n        paths: [/v1/reports/]\n"
    );
    let c = load(&yaml, &[]).unwrap();
    let callers = &c.tenant("acme").unwrap().callers;
    assert_eq!(callers.len(), 2);
    assert_eq!(callers[0].id, "system:serviceaccount:billing:invoicer");
    assert_eq!(callers[1].methods, ["GET"]);
    assert_eq!(callers[1].paths, ["/v1/reports/"]);
    assert!(load(MINIMAL, &[])
        .unwrap()
        .tenant("acme")
        .unwrap()
        .callers
        .is_empty());
    for (entry, key) in [
        ("- id: a*b", "tenants.acme.callers[0].id"),
        ("- id: ''", "tenants.acme.callers[0].id"),
        (
            "- {id: x, methods: [TRACE]}",
            "tenants.acme.callers[0].methods[0]",
        ),
        (
            "- {id: x, methods: [get]}",
            "tenants.acme.callers[0].methods[0]",
        ),
        (
            "- {id: x, paths: [v1/]}",
            "tenants.acme.callers[0].paths[0]",
        ),
        (
            "- {id: x}\n      - {id: y, paths: ['/a?b']}",
            "tenants.acme.callers[1].paths[0]",
        ),
        ("- {id: x, role: admin}", "tenants.acme.callers[0]"),
    ] {
        let e = err(&format!("{MINIMAL}    callers:\n      {entry}\n"), &[]);
        assert!(e.starts_with(&format!("config key {key}")), "{entry}: {e}");
    }
}
