//! The dashboard's two static files, embedded at build time (no build step, no CDN): one
//! stylesheet and one small script. They are served with a content hash as `ETag` and may
//! be cached; the pages reference them by a fixed path.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The stylesheet.
pub const CSS: &str = include_str!("assets/app.css");
/// The script: live progress bars (server-sent events) and "select all" in the file browser.
pub const JS: &str = include_str!("assets/app.js");

pub async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let (body, ct) = match name.as_str() {
        "app.css" => (CSS, "text/css; charset=utf-8"),
        "app.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let etag = format!("\"{}\"", &blake3::hash(body.as_bytes()).to_hex()[..16]);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    r
}
