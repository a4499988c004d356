//! Fetches export payloads from the API base URL, which is the auth proxy.
//!
//! `GET {base}/exports/{module}?date=YYYY-MM-DD` with the tenant in a header (`x-tenant-id` by
//! default). The importer never sees a token: the proxy injects it. The body streams into an
//! anonymous temp file; with `--caller-token-file` each request also carries the importer's own
//! identity (`Authorization: Bearer <ServiceAccount token>`), which the proxy verifies and then
//! replaces with the tenant's token; transient failures (connect errors, timeouts, 5xx, 429, a body that
//! breaks off) retry with exponential backoff and jitter. An answer that isn't a JSON payload
//! (an HTML error page, a bare CSV or zip) is refused naming what arrived.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use rand::Rng;
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::{StatusCode, Url};
use tokio::io::AsyncWriteExt;

/// Attempts per export, the first included.
const ATTEMPTS: u32 = 3;

/// Why an export couldn't be fetched. Messages start with the layer (HTTP).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("HTTP: GET {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("HTTP: GET {url}: the body broke off after {bytes} bytes: {source}")]
    Body {
        url: String,
        bytes: u64,
        source: reqwest::Error,
    },
    #[error("HTTP: GET {url}: status {status}{hint}")]
    Status {
        url: String,
        status: StatusCode,
        hint: &'static str,
    },
    #[error(
        "HTTP: GET {url}: expected a JSON payload (Content-Type application/json), got {what}"
    )]
    NotJson { url: String, what: String },
    #[error("HTTP: GET {url}: spool: {source}")]
    Spool { url: String, source: std::io::Error },
    #[error("caller token {path}: {why}")]
    CallerToken { path: String, why: String },
}

impl FetchError {
    fn transient(&self) -> bool {
        match self {
            Self::Http { source, .. } => {
                source.is_connect()
                    || source.is_timeout()
                    || source.is_body()
                    || source.is_request()
            }
            Self::Body { .. } => true,
            Self::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            Self::NotJson { .. } | Self::Spool { .. } | Self::CallerToken { .. } => false,
        }
    }
}

/// A short, printable description of a body's first bytes.
fn describe(head: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(&head[..head.len().min(40)])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if head.starts_with(b"PK\x03\x04") {
        "a zip file".to_string()
    } else if head.is_empty() {
        "an empty body".to_string()
    } else {
        format!("a body starting {:?}", text.trim())
    }
}

/// An HTTP client for the export API.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    base: Url,
    tenant_header: HeaderName,
    /// The importer's own identity towards the auth proxy (a projected
    /// ServiceAccount token), re-read for every request because the kubelet
    /// rotates it.
    caller_token: Option<PathBuf>,
}

/// Reads the caller token file into an `Authorization` value, marked
/// sensitive so it never shows in a `Debug` of the request.
pub fn caller_authorization(path: &Path) -> Result<HeaderValue, FetchError> {
    let err = |why: String| FetchError::CallerToken {
        path: path.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(err("is empty or not a bearer token".into()));
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| err("is not a valid header value".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

impl Fetcher {
    pub fn new(
        base: Url,
        tenant_header: HeaderName,
        caller_token: Option<PathBuf>,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .build()?;
        Ok(Self {
            client,
            base,
            tenant_header,
            caller_token,
        })
    }

    /// The export's URL.
    pub fn url(&self, module: &str, date: &str) -> Url {
        let mut url = self.base.clone();
        let path = format!("{}/exports/{module}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url.query_pairs_mut().clear().append_pair("date", date);
        url
    }

    /// Downloads one export into an anonymous file in `dir`; `None` when there is none (404).
    pub async fn fetch(
        &self,
        tenant: &str,
        module: &str,
        date: &str,
        dir: &Path,
    ) -> Result<Option<File>, FetchError> {
        let url = self.url(module, date);
        let mut attempt = 1;
        loop {
            match self.try_fetch(&url, tenant, dir).await {
                Err(e) if e.transient() && attempt < ATTEMPTS => {
                    let base = 250u64 << attempt;
                    let jitter = rand::thread_rng().gen_range(0..=base / 2);
                    tracing::warn!(tenant = %tenant, module = %module, attempt, cause = %e, "fetch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn try_fetch(
        &self,
        url: &Url,
        tenant: &str,
        dir: &Path,
    ) -> Result<Option<File>, FetchError> {
        let http = |source| FetchError::Http {
            url: url.to_string(),
            source,
        };
        let mut req = self
            .client
            .get(url.clone())
            .header(&self.tenant_header, tenant);
        if let Some(path) = &self.caller_token {
            req = req.header(AUTHORIZATION, caller_authorization(path)?);
        }
        let resp = req.send().await.map_err(http)?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let hint = match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    " (the auth proxy should inject the token; is the base URL the proxy?)"
                }
                _ => "",
            };
            return Err(FetchError::Status {
                url: url.to_string(),
                status,
                hint,
            });
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let spool = |source| FetchError::Spool {
            url: url.to_string(),
            source,
        };
        let file = tempfile::tempfile_in(dir).map_err(spool)?;
        let mut out = tokio::io::BufWriter::with_capacity(
            256 * 1024,
            tokio::fs::File::from_std(file.try_clone().map_err(spool)?),
        );
        let mut body = resp.bytes_stream();
        let mut bytes = 0u64;
        let mut head = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|source| FetchError::Body {
                url: url.to_string(),
                bytes,
                source,
            })?;
            if head.len() < 64 {
                head.extend_from_slice(&chunk[..chunk.len().min(64 - head.len())]);
            }
            bytes += chunk.len() as u64;
            out.write_all(&chunk).await.map_err(spool)?;
        }
        out.flush().await.map_err(spool)?;
        let starts_json = head
            .iter()
            .find(|c| !c.is_ascii_whitespace())
            .is_some_and(|&c| c == b'{');
        match content_type.as_deref() {
            Some("application/json") if starts_json => Ok(Some(file)),
            Some("application/json") => Err(FetchError::NotJson {
                url: url.to_string(),
                what: format!("application/json with {}", describe(&head)),
            }),
            other => Err(FetchError::NotJson {
                url: url.to_string(),
                what: format!(
                    "Content-Type {} with {}",
                    other.unwrap_or("(none)"),
                    describe(&head)
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With a caller token file, every request carries `Authorization:
    /// Bearer <file contents>`, re-read each time (the kubelet rotates the
    /// projected token); a missing file is an error naming it, not a request
    /// without identity.
    #[tokio::test]
    async fn caller_token_is_sent_and_reread() {
        use std::sync::{Arc, Mutex};
        let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(
                    headers
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned()),
                );
                axum::http::StatusCode::NOT_FOUND
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "first.jwt\n").unwrap();
        let f = Fetcher::new(
            Url::parse(&format!("http://{addr}/")).unwrap(),
            HeaderName::from_static("x-tenant-id"),
            Some(token.clone()),
        )
        .unwrap();
        assert!(f
            .fetch("acme", "orders", "2026-11-27", dir.path())
            .await
            .unwrap()
            .is_none());
        std::fs::write(&token, "second.jwt").unwrap();
        assert!(f
            .fetch("acme", "orders", "2026-11-27", dir.path())
            .await
            .unwrap()
            .is_none());
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                Some("Bearer first.jwt".into()),
                Some("Bearer second.jwt".into())
            ]
        );
        std::fs::remove_file(&token).unwrap();
        let err = f
            .fetch("acme", "orders", "2026-11-27", dir.path())
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::CallerToken { .. }), "{err}");
        assert!(err.to_string().contains("token"), "{err}");
        assert_eq!(seen.lock().unwrap().len(), 2, "no request without identity");
    }

    /// Export URLs keep the base path and carry the date as a query parameter.
    #[test]
    fn urls() {
        let f = Fetcher::new(
            Url::parse("http://proxy:8080/api/").unwrap(),
            HeaderName::from_static("x-tenant-id"),
            None,
        )
        .unwrap();
        assert_eq!(
            f.url("orders", "2026-11-27").as_str(),
            "http://proxy:8080/api/exports/orders?date=2026-11-27"
        );
    }
}
