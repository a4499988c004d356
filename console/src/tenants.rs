//! The tenants page's data: each sidecar's `GET /status` (token state per tenant, never a
//! token), fetched with a short timeout so a dead sidecar only greys out its own rows.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `GET <probes>/status` as the sidecar serves it; unknown fields are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    pub tenants: BTreeMap<String, TenantStatus>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TenantStatus {
    /// `valid`, `expiring`, `failing` or `none`.
    pub state: String,
    pub expires_at_ms: Option<u64>,
    pub last_error: Option<String>,
    #[serde(default)]
    pub consecutive_failures: u64,
    #[serde(default)]
    pub fetches: Fetches,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Fetches {
    #[serde(default)]
    pub success: u64,
    #[serde(default)]
    pub failure: u64,
}

/// One row of the page.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub source: String,
    pub tenant: String,
    pub status: TenantStatus,
    /// `expires_at_ms` as UTC text, and seconds from now.
    pub expires_at: Option<String>,
    pub expires_in_s: Option<i64>,
}

/// What one sidecar answered.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    pub url: String,
    pub error: Option<String>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Formats milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn utc_text(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Fetches every configured sidecar's status.
pub async fn fetch_all(http: &reqwest::Client, urls: &[reqwest::Url]) -> (Vec<Row>, Vec<Source>) {
    let now = now_ms();
    let mut rows = Vec::new();
    let mut sources = Vec::new();
    let answers = futures_util::future::join_all(urls.iter().map(|u| async move {
        let r = http
            .get(u.clone())
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        match r {
            Ok(resp) => resp.json::<Status>().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }))
    .await;
    for (u, answer) in urls.iter().zip(answers) {
        // Never show credentials that might sit in a URL.
        let mut shown = u.clone();
        let _ = shown.set_password(None);
        let _ = shown.set_username("");
        let source = shown.to_string();
        match answer {
            Ok(status) => {
                for (tenant, st) in status.tenants {
                    rows.push(Row {
                        source: source.clone(),
                        tenant,
                        expires_at: st.expires_at_ms.map(utc_text),
                        expires_in_s: st.expires_at_ms.map(|e| (e as i64 - now as i64) / 1000),
                        status: st,
                    });
                }
                sources.push(Source {
                    url: source,
                    error: None,
                });
            }
            Err(e) => sources.push(Source {
                url: source,
                error: Some(e),
            }),
        }
    }
    rows.sort_by(|a, b| (&a.tenant, &a.source).cmp(&(&b.tenant, &b.source)));
    (rows, sources)
}

#[cfg(test)]
mod tests {
    /// Epoch milliseconds render as UTC calendar time.
    #[test]
    fn utc_text() {
        assert_eq!(super::utc_text(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc_text(1_709_210_096_000), "2024-02-29 12:34:56");
    }
}
