//! The third party's export payload, as the importer fetches it:
//! `{"module_name", "data"}` where `data` is the base64 of a zip holding
//! `{module}.csv`.

use std::io::Write;

use base64::Engine;

/// A deflated zip holding one file.
pub fn zip_of(name: &str, body: &[u8]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file(name, options).expect("zip entry");
    zip.write_all(body).expect("zip write");
    zip.finish().expect("zip finish").into_inner()
}

/// The payload for one module's CSV.
pub fn payload(module: &str, csv: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "module_name": module,
        "data": base64::engine::general_purpose::STANDARD.encode(zip_of(&format!("{module}.csv"), csv)),
    })
}

/// An export API over a directory: `GET /exports/{module}` answers the
/// payload of `{dir}/{module}.csv`, or 404 `unknown_module`.
pub fn api(dir: std::path::PathBuf) -> axum::Router {
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    async fn export(State(dir): State<std::path::PathBuf>, Path(module): Path<String>) -> Response {
        match read(&dir, &module) {
            Some(csv) => axum::Json(payload(&module, &csv)).into_response(),
            None => {
                let body = serde_json::json!({"error": "unknown_module", "module": module});
                (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
            }
        }
    }
    axum::Router::new()
        .route("/exports/{module}", axum::routing::get(export))
        .with_state(dir)
}

/// `{dir}/{module}.csv` when `module` is a plain name and the file exists.
pub fn read(dir: &std::path::Path, module: &str) -> Option<Vec<u8>> {
    let valid = !module.is_empty()
        && module
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid
        .then(|| std::fs::read(dir.join(format!("{module}.csv"))).ok())
        .flatten()
}
