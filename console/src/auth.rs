//! Who is asking, and may they: users and roles, signed session cookies, CSRF tokens.
//!
//! - **Password mode**: a users file of `user:role:$argon2id$…` lines (a Kubernetes Secret).
//!   A good login gets a session cookie: `base64url(user|role|expiry|nonce).mac`, the MAC being
//!   blake3 keyed with the session key. Sessions are stateless, so replicas sharing the key
//!   share sessions; logging out clears the cookie and the session expires by itself.
//! - **SSO mode**: an SSO proxy (oauth2-proxy) in front sets the user header and a shared-secret
//!   header on every request; a request without the right secret is refused, so a caller that
//!   reaches the console around the proxy can't claim to be anyone.
//! - **CSRF**: every state-changing request carries a token derived from the session
//!   (`blake3_keyed(key, "csrf" | nonce)`), in a form field or the `x-csrf-token` header, and the
//!   cookie is `SameSite=Strict`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;

use crate::config::SessionKey;

/// Name of the session cookie.
pub const COOKIE: &str = "console_session";
/// Header htmx sends the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// A signed-in user.
#[derive(Debug, Clone, serde::Serialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// The CSRF token for this session.
    pub csrf: String,
}

impl User {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

struct Entry {
    name: String,
    role: Role,
    hash: String,
}

/// The users file, parsed and checked at start. `Debug` shows names only.
pub struct UserTable {
    users: Vec<Entry>,
}

impl std::fmt::Debug for UserTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.users.iter().map(|u| (&u.name, u.role)))
            .finish()
    }
}

/// A hash that stands in for unknown users, so a wrong name costs as much as a wrong password.
const DUMMY_PASSWORD: &str = "not a password of anyone";

impl UserTable {
    /// Parses `user:role:phc-hash` lines; `#` starts a comment.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut users: Vec<Entry> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            let mut parts = line.splitn(3, ':');
            let (Some(name), Some(role), Some(hash)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("line {n}: expected user:role:hash"));
            };
            if name.is_empty() || name.len() > 100 {
                return Err(format!("line {n}: user name must be 1-100 characters"));
            }
            let role = Role::parse(role)
                .ok_or_else(|| format!("line {n}: role must be admin or viewer"))?;
            let parsed = PasswordHash::new(hash)
                .map_err(|e| format!("line {n}: not a PHC password hash: {e}"))?;
            if !parsed.algorithm.as_str().starts_with("argon2") {
                return Err(format!(
                    "line {n}: hash must be argon2 (console hash-password)"
                ));
            }
            if users.iter().any(|u| u.name == name) {
                return Err(format!("line {n}: user {name:?} listed twice"));
            }
            users.push(Entry {
                name: name.to_string(),
                role,
                hash: hash.to_string(),
            });
        }
        if users.is_empty() {
            return Err("no users".into());
        }
        Ok(Self { users })
    }

    /// Checks a password; slow on purpose (argon2), so call it off the async threads.
    pub fn verify(&self, name: &str, password: &str) -> Option<Role> {
        let entry = self.users.iter().find(|u| u.name == name);
        let hash = match entry {
            Some(e) => e.hash.clone(),
            None => hash_password(DUMMY_PASSWORD).ok()?,
        };
        let parsed = PasswordHash::new(&hash).ok()?;
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        match (ok, entry) {
            (true, Some(e)) => Some(e.role),
            _ => None,
        }
    }
}

/// argon2id with 12 MiB, 3 passes, 1 lane (an OWASP-recommended setting that keeps the
/// console's memory small).
pub fn hash_password(password: &str) -> Result<String, String> {
    let params = argon2::Params::new(12 * 1024, 3, 1, None).map_err(|e| e.to_string())?;
    let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn mac(key: &SessionKey, context: &str, data: &[u8]) -> blake3::Hash {
    let mut h = blake3::Hasher::new_keyed(&key.0);
    h.update(context.as_bytes());
    h.update(&[0]);
    h.update(data);
    h.finalize()
}

/// The CSRF token of a session nonce.
pub fn csrf_token(key: &SessionKey, nonce: &str) -> String {
    mac(key, "csrf", nonce.as_bytes()).to_hex().to_string()
}

/// Checks a submitted CSRF token against the user's, in constant time.
pub fn csrf_ok(user: &User, submitted: Option<&str>) -> bool {
    match submitted {
        Some(s) => blake3::hash(s.as_bytes()) == blake3::hash(user.csrf.as_bytes()),
        None => false,
    }
}

/// A new session cookie value for `name`.
pub fn issue(key: &SessionKey, name: &str, role: Role, ttl: Duration) -> String {
    let nonce = blake3::Hash::from_bytes(rand::random()).to_hex();
    let payload = format!(
        "{}|{}|{}|{}",
        name,
        role.as_str(),
        now_secs() + ttl.as_secs(),
        nonce
    );
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}",
        b64.encode(payload.as_bytes()),
        mac(key, "session", payload.as_bytes()).to_hex()
    )
}

/// The user a session cookie value names, if it is authentic and unexpired.
pub fn verify(key: &SessionKey, cookie: &str) -> Option<User> {
    let (payload_b64, tag) = cookie.split_once('.')?;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload_b64)
        .ok()?;
    let tag = blake3::Hash::from_hex(tag).ok()?;
    // blake3::Hash compares in constant time.
    if mac(key, "session", &payload) != tag {
        return None;
    }
    let payload = String::from_utf8(payload).ok()?;
    let mut parts = payload.rsplitn(4, '|');
    let nonce = parts.next()?;
    let expiry: u64 = parts.next()?.parse().ok()?;
    let role = Role::parse(parts.next()?)?;
    let name = parts.next()?;
    if expiry <= now_secs() {
        return None;
    }
    Some(User {
        name: name.to_string(),
        role,
        csrf: csrf_token(key, nonce),
    })
}

/// The session cookie's value in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// `Set-Cookie` for a new session.
pub fn set_cookie(value: &str, ttl: Duration, secure: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        ttl.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that ends the session in the browser.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SessionKey {
        SessionKey([7; 32])
    }

    /// A session round-trips; a tampered, foreign-key or expired one does not.
    #[test]
    fn sessions_are_signed_and_expire() {
        let c = issue(&key(), "alice", Role::Admin, Duration::from_secs(60));
        let u = verify(&key(), &c).unwrap();
        assert_eq!((u.name.as_str(), u.role), ("alice", Role::Admin));
        assert!(verify(&SessionKey([8; 32]), &c).is_none());
        let (p, t) = c.split_once('.').unwrap();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let forged = String::from_utf8(b64.decode(p).unwrap())
            .unwrap()
            .replace("alice", "mallory");
        assert!(verify(&key(), &format!("{}.{t}", b64.encode(forged))).is_none());
        let old = issue(&key(), "alice", Role::Viewer, Duration::ZERO);
        assert!(verify(&key(), &old).is_none());
    }

    /// Each session has its own CSRF token, and only that token passes.
    #[test]
    fn csrf_tokens_are_per_session() {
        let a = verify(
            &key(),
            &issue(&key(), "a", Role::Admin, Duration::from_secs(60)),
        )
        .unwrap();
        let b = verify(
            &key(),
            &issue(&key(), "a", Role::Admin, Duration::from_secs(60)),
        )
        .unwrap();
        assert_ne!(a.csrf, b.csrf);
        assert!(csrf_ok(&a, Some(&a.csrf)));
        assert!(!csrf_ok(&a, Some(&b.csrf)));
        assert!(!csrf_ok(&a, None));
    }

    /// The users file accepts argon2 hashes and names the line of a bad entry; passwords verify.
    #[test]
    fn users_file() {
        let h = hash_password("pw").unwrap();
        let t = UserTable::parse(&format!("# c\nann:admin:{h}\nbob:viewer:{h}\n")).unwrap();
        assert_eq!(t.verify("ann", "pw"), Some(Role::Admin));
        assert_eq!(t.verify("bob", "pw"), Some(Role::Viewer));
        assert_eq!(t.verify("ann", "nope"), None);
        assert_eq!(t.verify("zed", "pw"), None);
        let e = UserTable::parse(&format!("ann:root:{h}")).unwrap_err();
        assert!(e.contains("line 1") && e.contains("role"), "{e}");
        assert!(UserTable::parse("ann:admin:plaintext").is_err());
        assert!(!format!("{t:?}").contains("argon2"));
    }
}
