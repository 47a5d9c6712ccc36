//! The file browser of a backup over REST (a Cairn extension beyond the Sun Cloud spec):
//! `GET {backup}/files` is the backup's root, `GET {backup}/files/{path}` any path below it.
//!
//! - A directory answers one page of its children as JSON ([`model::Files`]): `?after=NAME`
//!   starts after that name, `?limit=N` takes at most N (default [`DEFAULT_LIMIT`], at most
//!   [`MAX_LIMIT`]; more is taken as the maximum), and `next_uri` is the next page's link.
//! - A regular file (or hardlink) answers its bytes: `application/octet-stream` with a
//!   `Content-Length` of its size, streamed chunk by chunk, every chunk verified.
//! - A directory with `?format=tar` answers `application/x-tar` (GNU tar, paths relative to the
//!   backup's root) with a `Content-Disposition` file name, streamed.
//!
//! Everything is read through `cairn_api::browse` with the client acting for the logged-in
//! user: the table's row (`ReadContent`: operators and admins) is checked before the handler
//! runs, and the cluster decides again when the chunks are read. Errors map by code through
//! `error.rs`'s table: a path the backup does not hold is 404 `not_found`, a bad path
//! (absolute, `..`) or a path that is neither a directory nor a file is 400 `invalid_value`
//! with `field` `path`. A download fails before its first byte when the backup, the path or
//! the first chunk cannot be read (an error answer); a chunk that fails later (no intact copy
//! anywhere) cuts the connection short of `Content-Length` (a tar: short of its end blocks), so
//! a client never takes a partial or wrong file for the file.
//!
//! Path names are UTF-8 in URIs: a name that is not UTF-8 can be listed (lossily) but not
//! named in a path.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use cairn_api::browse;
use cairn_core::manifest::EntryKind;
use cairn_core::{BackupId, ErrorCode};
use futures::{Stream, StreamExt};

use super::error::ApiError;
use super::handlers::{parse_backup, Ids, St};
use super::model::{self, Uris};
use super::{Rep, RestState};
use crate::users::Identity;

/// Children per page when the request names no `limit`.
pub const DEFAULT_LIMIT: usize = 200;
/// The most children one page holds.
pub const MAX_LIMIT: usize = 1000;

/// `GET /vms/{eid}/backups/{stamp}/files`: the backup's root.
pub(super) async fn root(
    State(s): St,
    Extension(u): Extension<Uris>,
    Extension(who): Extension<Identity>,
    Ids((eid, stamp)): Ids<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    answer(&s, &u, &who, &eid, &stamp, String::new(), query.as_deref()).await
}

/// `GET /vms/{eid}/backups/{stamp}/files/{path}`: a path of the backup.
pub(super) async fn path(
    State(s): St,
    Extension(u): Extension<Uris>,
    Extension(who): Extension<Identity>,
    Ids((eid, stamp, path)): Ids<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    answer(&s, &u, &who, &eid, &stamp, path, query.as_deref()).await
}

/// What a request's query asks for.
#[derive(Debug, PartialEq, Eq)]
struct Query {
    after: Option<String>,
    limit: usize,
    tar: bool,
}

/// Parses `after`, `limit` and `format`; any other parameter is refused (a misspelt one
/// would otherwise be silently ignored).
fn query(raw: Option<&str>) -> Result<Query, ApiError> {
    let mut q = Query {
        after: None,
        limit: DEFAULT_LIMIT,
        tar: false,
    };
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(&value.replace('+', " "))
            .decode_utf8()
            .map_err(|_| ApiError::bad("invalid_value", key, "not UTF-8 once decoded"))?
            .into_owned();
        match key {
            "after" => q.after = (!value.is_empty()).then_some(value),
            "limit" => {
                let n: usize = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    ApiError::bad("invalid_value", "limit", "limit is a whole number from 1")
                })?;
                q.limit = n.min(MAX_LIMIT);
            }
            "format" if value == "tar" => q.tar = true,
            "format" => {
                return Err(ApiError::bad(
                    "invalid_value",
                    "format",
                    "the only format is tar (a directory as a tar archive)",
                ))
            }
            _ => {
                let shown: String = key.chars().take(40).collect();
                return Err(ApiError::bad(
                    "unknown_field",
                    &shown,
                    format!("{shown:?} is not a parameter here (after, limit, format)"),
                ));
            }
        }
    }
    Ok(q)
}

async fn answer(
    s: &Arc<RestState>,
    u: &Uris,
    who: &Identity,
    eid: &str,
    stamp: &str,
    path: String,
    raw_query: Option<&str>,
) -> Result<Response, ApiError> {
    let id = parse_backup(eid, stamp)?;
    let q = query(raw_query)?;
    let client = s.call(who)?.cluster()?.clone();
    browse::parse_path(&path).map_err(|e| ApiError::from(e).field("path"))?;
    if q.tar {
        return tar(client, id, path).await;
    }
    match browse::list(&client, &id, &path, q.after.as_deref(), q.limit).await {
        Ok(listing) => Ok(Rep::ok("json", &model::files(u, &id, listing, q.limit)).into_response()),
        // The path is well formed (checked above): it names something other than a
        // directory, which a file answers with its bytes.
        Err(e) if e.code() == ErrorCode::InvalidArgument => file(client, id, path).await,
        Err(e) => Err(e.into()),
    }
}

async fn file(client: cairn_api::Client, id: BackupId, path: String) -> Result<Response, ApiError> {
    let node = browse::stat(&client, &id, &path).await?;
    if !matches!(node.kind, EntryKind::File | EntryKind::Hardlink) {
        return Err(ApiError::bad(
            "invalid_value",
            "path",
            format!(
                "{path:?} is a {:?}: only directories are listed and files downloaded",
                node.kind
            ),
        ));
    }
    let body = started(browse::file_stream(client, id, path.clone()), &path).await?;
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(node.size));
    if let Ok(v) = HeaderValue::from_str(&disposition(&file_name(&id, &path, ""))) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

async fn tar(client: cairn_api::Client, id: BackupId, path: String) -> Result<Response, ApiError> {
    let body = started(browse::tar_stream(client, id, path.clone()), &path).await?;
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition(&file_name(&id, &path, ".tar"))) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

/// The body of a stream whose first block (or end) has come: an error before it is the
/// answer; an error after it cuts the body short (logged).
async fn started(
    stream: impl Stream<Item = Result<Vec<u8>, cairn_api::Error>> + Send + 'static,
    path: &str,
) -> Result<Body, ApiError> {
    let mut stream = Box::pin(stream);
    let first = stream.next().await.transpose()?;
    let path = path.to_string();
    let rest = futures::stream::iter(first.map(Ok))
        .chain(stream)
        .map(move |block| {
            block.map(Bytes::from).inspect_err(|e| {
                tracing::warn!(path = %path, code = %e.code(), error = %e, "download cut short");
            })
        });
    Ok(Body::from_stream(rest))
}

/// The name a download is saved under: the path's last name (for the root, the backup's
/// `EID-STAMP`), with `suffix`, kept to characters every file system and header takes.
fn file_name(id: &BackupId, path: &str, suffix: &str) -> String {
    let last = path.rsplit('/').find(|n| !n.is_empty());
    let base = match last {
        Some(n) => n.to_string(),
        None => format!("{}-{}", id.env, id.stamp()),
    };
    let safe: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}{suffix}")
}

fn disposition(name: &str) -> String {
    format!("attachment; filename=\"{name}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_takes_after_limit_and_format_only() {
        assert_eq!(
            query(None).unwrap(),
            Query {
                after: None,
                limit: DEFAULT_LIMIT,
                tar: false
            }
        );
        let q = query(Some("after=caf%C3%A9+bar&limit=2")).unwrap();
        assert_eq!(q.after.as_deref(), Some("café bar"));
        assert_eq!(q.limit, 2);
        assert_eq!(query(Some("limit=100000")).unwrap().limit, MAX_LIMIT);
        assert!(query(Some("format=tar")).unwrap().tar);
        for (bad, field) in [
            ("limit=0", "limit"),
            ("limit=-1", "limit"),
            ("limit=x", "limit"),
            ("format=zip", "format"),
            ("limt=2", "limt"),
            ("after=%FF", "after"),
        ] {
            let e = query(Some(bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(e.field.as_deref(), Some(field), "{bad}");
        }
    }

    #[test]
    fn download_names_are_safe() {
        let id: BackupId = "6f1c0d9e-2b1a-4d7e-9a55-0c3b8e1f7a21/20261122081500"
            .parse()
            .unwrap();
        assert_eq!(file_name(&id, "etc/nginx", ".tar"), "nginx.tar");
        assert_eq!(
            file_name(&id, "", ".tar"),
            "6f1c0d9e-2b1a-4d7e-9a55-0c3b8e1f7a21-20261122081500.tar"
        );
        assert_eq!(file_name(&id, "a/we\"ird name;", ""), "we_ird_name_");
    }
}
