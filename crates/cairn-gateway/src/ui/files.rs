//! A backup's page and its file browser: walk the tree one directory page at a time,
//! download a file or a directory (as tar), and tick paths to restore.
//!
//! Everything here goes through `cairn_api::browse` with the client acting for the user, so
//! the cluster decides whether the user may read the backup's content (operators and admins
//! may, viewers may not: a viewer sees the backup's facts and is told so). Downloads are
//! streamed from the chunks as the browse API verifies them (decoded and re-hashed); a chunk
//! that fails mid-way ends the response early, so a client never receives a complete-looking
//! file with wrong bytes. The `Content-Length` of a file is its recorded size, so a cut
//! download is visibly short.

use std::fmt::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::Extension;
use cairn_api::browse::{self, Node};
use cairn_core::manifest::EntryKind;
use cairn_core::{BackupId, ErrorCode};
use futures::StreamExt;

use super::html::{self, enc, esc};
use super::pages::{backup_facts, backup_url, now_ms, parse_backup};
use super::state::{Ctx, Page, UiError, UiState};

/// Entries per page of a directory.
pub const PER_PAGE: usize = 100;

#[derive(serde::Deserialize, Default)]
pub struct Where {
    #[serde(default)]
    pub path: String,
    pub after: Option<String>,
}

fn kind(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
        EntryKind::Hardlink => "hardlink",
        EntryKind::Fifo => "fifo",
        EntryKind::CharDevice => "char device",
        EntryKind::BlockDevice => "block device",
        EntryKind::Socket => "socket",
    }
}

/// The link of a directory of the browser.
fn dir_link(id: &BackupId, path: &str) -> String {
    format!("{}?path={}", backup_url(id), enc(path))
}

/// `/ a / b` with each step a link.
fn crumbs(id: &BackupId, path: &str) -> String {
    let mut h = format!(
        "<nav class=\"crumbs\" aria-label=\"Path\"><a href=\"{}\">/</a>",
        esc(&dir_link(id, ""))
    );
    let mut so_far = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if !so_far.is_empty() {
            so_far.push('/');
        }
        so_far.push_str(part);
        let _ = write!(
            h,
            " <a href=\"{}\">{}</a> /",
            esc(&dir_link(id, &so_far)),
            esc(part)
        );
    }
    h.push_str("</nav>");
    h
}

pub async fn backup(
    State(_s): State<Arc<UiState>>,
    Extension(cx): Extension<Ctx>,
    Path((eid, stamp)): Path<(String, String)>,
    Query(w): Query<Where>,
) -> Page {
    let id = parse_backup(&eid, &stamp)?;
    let c = cx.cluster()?;
    let bk = c.show(&id).await.map_err(|e| {
        if e.code().family() == ErrorCode::NotFound {
            UiError::NotFound(format!("no backup {id}"))
        } else {
            e.into()
        }
    })?;
    let url = backup_url(&id);
    let mut b = backup_facts(&bk, now_ms());
    if cx.allows("POST /ui/backups/{eid}/{stamp}/restore") {
        let _ = write!(
            b,
            "<p class=\"actions\"><a href=\"{url}/restore\">Restore this backup…</a></p>"
        );
    }
    b.push_str("<h2 id=\"files\">Files</h2>");
    let path = w.path.trim_matches('/').to_string();
    let listing = match browse::list(c, &id, &path, w.after.as_deref(), PER_PAGE).await {
        Ok(l) => l,
        Err(e) if e.code() == ErrorCode::PermissionDenied => {
            b.push_str("<p class=\"muted\" id=\"no-content\">Reading a backup's files needs the operator role.</p>");
            return Ok(cx.page(&format!("Backup {}", id.stamp()), "/ui/hosts", &b));
        }
        Err(e) if e.code().family() == ErrorCode::NotFound => {
            return Err(UiError::NotFound(format!("{path:?} is not in backup {id}")));
        }
        Err(e) => return Err(e.into()),
    };
    b.push_str(&crumbs(&id, &path));
    let _ = write!(
        b,
        "<p class=\"actions\"><a id=\"tar\" href=\"{url}/tar?path={}\" download>Download this directory (tar)</a></p>",
        enc(&path)
    );
    let may_restore = cx.allows("POST /ui/backups/{eid}/{stamp}/restore");
    let _ = write!(
        b,
        "<form method=\"post\" action=\"{url}/restore\" id=\"browser\">{}<input type=\"hidden\" name=\"mode\" value=\"selective\"><div class=\"scroll\"><table class=\"files\"><thead><tr>",
        html::csrf_field(&cx.csrf)
    );
    if may_restore {
        b.push_str("<th scope=\"col\"><input type=\"checkbox\" id=\"all\" data-select-all aria-label=\"Select all\"></th>");
    }
    b.push_str("<th scope=\"col\">Name</th><th scope=\"col\">Kind</th><th scope=\"col\">Size</th><th scope=\"col\">Mode</th><th scope=\"col\">Owner</th><th scope=\"col\">Modified (UTC)</th></tr></thead><tbody>");
    if !path.is_empty() {
        let parent = path.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        let _ = write!(
            b,
            "<tr>{}<td><a href=\"{}\">..</a></td><td colspan=\"5\">parent directory</td></tr>",
            if may_restore { "<td></td>" } else { "" },
            esc(&dir_link(&id, parent))
        );
    }
    for n in &listing.entries {
        b.push_str(&entry_row(&id, n, may_restore));
    }
    if listing.entries.is_empty() {
        b.push_str("<tr><td colspan=\"7\" class=\"muted\">empty directory</td></tr>");
    }
    b.push_str("</tbody></table></div>");
    if may_restore {
        b.push_str("<p class=\"actions\"><button type=\"submit\" id=\"restore-selected\">Restore selected…</button> <small>into the environment's live tree, after a confirmation</small></p>");
    }
    b.push_str("</form>");
    if w.after.is_some() || listing.next.is_some() {
        b.push_str("<nav class=\"pager\" aria-label=\"Pages\">");
        if w.after.is_some() {
            let _ = write!(
                b,
                "<a href=\"{}\">First page</a>",
                esc(&dir_link(&id, &path))
            );
        }
        if let Some(next) = &listing.next {
            let _ = write!(
                b,
                "<a rel=\"next\" href=\"{}&amp;after={}\">Next page →</a>",
                esc(&dir_link(&id, &path)),
                enc(next)
            );
        }
        b.push_str("</nav>");
    }
    Ok(cx.page(&format!("Backup {}", id.stamp()), "/ui/hosts", &b))
}

fn entry_row(id: &BackupId, n: &Node, may_restore: bool) -> String {
    let url = backup_url(id);
    let name = match n.kind {
        EntryKind::Dir => format!(
            "<a class=\"dir\" href=\"{}\">{}/</a>",
            esc(&dir_link(id, &n.path)),
            esc(&n.name)
        ),
        EntryKind::File | EntryKind::Hardlink => format!(
            "<a class=\"file\" href=\"{url}/file?path={}\" download=\"{}\">{}</a>",
            enc(&n.path),
            esc(&n.name),
            esc(&n.name)
        ),
        _ => esc(&n.name),
    };
    let target = match &n.link_target {
        Some(t) => format!(" <small>→ {}</small>", esc(t)),
        None => String::new(),
    };
    let pick = if may_restore {
        format!(
            "<td><input type=\"checkbox\" name=\"path\" value=\"{}\" aria-label=\"select {}\"></td>",
            esc(&n.path),
            esc(&n.name)
        )
    } else {
        String::new()
    };
    format!(
        "<tr>{pick}<td>{name}{target}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}:{}</td><td>{}</td></tr>",
        kind(n.kind),
        if n.kind == EntryKind::Dir { "—".to_string() } else { html::bytes(n.size) },
        html::mode(n.mode),
        n.uid,
        n.gid,
        html::time(n.mtime_ns / 1_000_000)
    )
}

/// `Content-Disposition: attachment` with the name in both forms (RFC 6266).
fn attachment(name: &str) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        enc(name)
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

fn content_error(e: cairn_api::Error, path: &str, id: &BackupId) -> UiError {
    match e.code().family() {
        ErrorCode::NotFound => UiError::NotFound(format!("{path:?} is not in backup {id}")),
        ErrorCode::InvalidArgument => UiError::BadRequest(e.to_string()),
        _ => e.into(),
    }
}

fn stream_body(
    s: impl futures::Stream<Item = Result<Vec<u8>, cairn_api::Error>> + Send + 'static,
) -> Body {
    Body::from_stream(s.map(|r| {
        r.map(axum::body::Bytes::from).map_err(|e| {
            tracing::warn!(error = %e, "dashboard: a download ended early");
            std::io::Error::other(e.to_string())
        })
    }))
}

pub async fn file(
    Extension(cx): Extension<Ctx>,
    Path((eid, stamp)): Path<(String, String)>,
    Query(w): Query<Where>,
) -> Page {
    let id = parse_backup(&eid, &stamp)?;
    let c = cx.cluster()?;
    let path = w.path.trim_matches('/').to_string();
    let node = browse::stat(c, &id, &path)
        .await
        .map_err(|e| content_error(e, &path, &id))?;
    if !matches!(node.kind, EntryKind::File | EntryKind::Hardlink) {
        return Err(UiError::BadRequest(format!(
            "{path:?} is a {}, not a file",
            kind(node.kind)
        )));
    }
    let body = stream_body(browse::file_stream(c.clone(), id, path));
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(node.size));
    h.insert(header::CONTENT_DISPOSITION, attachment(&node.name));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

pub async fn tar(
    Extension(cx): Extension<Ctx>,
    Path((eid, stamp)): Path<(String, String)>,
    Query(w): Query<Where>,
) -> Page {
    let id = parse_backup(&eid, &stamp)?;
    let c = cx.cluster()?;
    let path = w.path.trim_matches('/').to_string();
    let node = browse::stat(c, &id, &path)
        .await
        .map_err(|e| content_error(e, &path, &id))?;
    if node.kind != EntryKind::Dir {
        return Err(UiError::BadRequest(format!(
            "{path:?} is a {}, not a directory",
            kind(node.kind)
        )));
    }
    let name = format!(
        "{}-{}{}.tar",
        &id.env.to_string()[..8],
        id.stamp(),
        if node.name.is_empty() {
            String::new()
        } else {
            format!("-{}", node.name)
        }
    );
    let body = stream_body(browse::tar_stream(c.clone(), id, path));
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    h.insert(header::CONTENT_DISPOSITION, attachment(&name));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_names_are_safe_headers() {
        let v = attachment("a \"b\".txt");
        let s = v.to_str().unwrap();
        assert!(s.starts_with("attachment; filename=\"a__b_.txt\""), "{s}");
        assert!(s.contains("filename*=UTF-8''a%20%22b%22.txt"), "{s}");
        assert!(attachment("ü\r\n")
            .to_str()
            .unwrap()
            .contains("%C3%BC%0D%0A"));
    }
}
