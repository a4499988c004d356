//! A test JWT issuer standing in for the cluster's ServiceAccount token
//! issuer: an ES256 key, its JWKS (what Envoy's `jwt_authn` verifies
//! against), and tokens shaped like Kubernetes projected ServiceAccount
//! tokens, valid or broken in one way each.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;

/// The issuer `envoy/envoy.yaml` trusts (the cluster's; unchanged by tests).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The audience `envoy/envoy.yaml` requires.
pub const AUDIENCE: &str = "auth-proxy";

/// What is wrong with a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    None,
    Expired,
    WrongAudience,
    WrongIssuer,
    /// Signed by another key under the same `kid`.
    BadSignature,
    /// `alg: none`, no signature.
    AlgNone,
}

/// The issuer: a signing key and its JWKS.
pub struct Issuer {
    key: ES256KeyPair,
    /// A key the JWKS does not hold, for bad signatures.
    rogue: ES256KeyPair,
}

impl Default for Issuer {
    fn default() -> Self {
        Issuer::new()
    }
}

impl Issuer {
    pub fn new() -> Issuer {
        Issuer {
            key: ES256KeyPair::generate().with_key_id("test-key"),
            rogue: ES256KeyPair::generate().with_key_id("test-key"),
        }
    }

    /// The JWKS document (JSON) with the issuer's public key.
    pub fn jwks(&self) -> String {
        let raw = self.key.public_key().public_key().to_bytes_uncompressed();
        let (x, y) = raw[1..].split_at(32);
        serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "test-key",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]})
        .to_string()
    }

    /// A token for ServiceAccount `namespace/name`, with `flaw`. Its subject
    /// is `system:serviceaccount:NS:NAME`, as Kubernetes writes it.
    pub fn token(&self, namespace: &str, name: &str, flaw: Flaw) -> String {
        let subject = format!("system:serviceaccount:{namespace}:{name}");
        let mut claims = Claims::create(Duration::from_mins(10))
            .with_issuer(if flaw == Flaw::WrongIssuer {
                "https://evil.example.com"
            } else {
                ISSUER
            })
            .with_audience(if flaw == Flaw::WrongAudience {
                "vault"
            } else {
                AUDIENCE
            })
            .with_subject(&subject);
        if flaw == Flaw::Expired {
            let now = Clock::now_since_epoch();
            claims.issued_at = Some(now - Duration::from_hours(2));
            claims.invalid_before = Some(now - Duration::from_hours(2));
            claims.expires_at = Some(now - Duration::from_hours(1));
        }
        match flaw {
            Flaw::BadSignature => self.rogue.sign(claims).expect("sign"),
            Flaw::AlgNone => {
                let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
                let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims"));
                format!("{header}.{body}.")
            }
            _ => self.key.sign(claims).expect("sign"),
        }
    }
}
