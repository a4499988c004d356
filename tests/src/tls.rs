//! A throwaway certificate authority for one test, made with the `openssl`
//! command line: a server certificate for the fake third-party API (its SAN
//! is the host the production config pins) and client certificates with
//! SPIFFE URI SANs for the mTLS identity mode.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA in a temporary directory.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    /// The CA certificate (PEM), the bundle a verifier trusts.
    pub cert: PathBuf,
    key: PathBuf,
    name: String,
}

/// A certificate and its key, PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCa {
    /// A new CA named `name` (its subject CN).
    pub fn new(name: &str) -> TestCa {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa {
            cert: dir.path().join(format!("{name}.crt")),
            key: dir.path().join(format!("{name}.key")),
            name: name.to_string(),
            dir,
        };
        openssl(
            ca.dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                &ca.key.display().to_string(),
                "-out",
                &ca.cert.display().to_string(),
            ],
        );
        ca
    }

    /// Issues a certificate for `cn` with `san` (e.g. `DNS:api.example.com`
    /// or `URI:spiffe://cluster.local/ns/a/sa/b`), for server or client use.
    pub fn issue(&self, cn: &str, san: &str) -> Issued {
        let base = format!(
            "{}-{}",
            self.name,
            cn.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        );
        let dir = self.dir.path();
        let key = dir.join(format!("{base}.key"));
        let csr = dir.join(format!("{base}.csr"));
        let cert = dir.join(format!("{base}.crt"));
        let ext = dir.join(format!("{base}.ext"));
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={san}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=serverAuth,clientAuth\n"
            ),
        )
        .expect("write ext");
        let s = |p: &Path| p.display().to_string();
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &s(&key),
                "-out",
                &s(&csr),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &s(&csr),
                "-CA",
                &s(&self.cert),
                "-CAkey",
                &s(&self.key),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &s(&ext),
                "-out",
                &s(&cert),
            ],
        );
        Issued { cert, key }
    }
}
