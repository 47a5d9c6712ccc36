//! Request bodies: checked field by field so that every refusal names the field at fault.
//!
//! A Backup body may carry every field of the Backup representation; the ones a client may
//! not set (`uri`, `created`, …) are ignored, as the spec says. A field the representation
//! does not have is refused (`unknown_field`), and so is a value of the wrong JSON type
//! (`wrong_type`). `null` counts as absent.

use axum::http::{header, HeaderMap};
use cairn_core::BackupType;
use serde_json::{Map, Value};

use super::error::ApiError;

/// Longest backup name, description and tag (characters) and most tags.
pub const MAX_NAME: usize = 256;
pub const MAX_DESCRIPTION: usize = 4096;
pub const MAX_TAG: usize = 256;
pub const MAX_TAGS: usize = 64;

/// The settable fields of a Backup body.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackupInput {
    pub name: Option<String>,
    pub description: Option<String>,
    pub kind: Option<BackupType>,
    pub tags: Option<Vec<String>>,
    /// Update only (an admin's PUT): protect the backup from every removal, or lift it.
    pub protected: Option<bool>,
}

/// Fields of the Backup representation a client may send but not set.
const READ_ONLY: &[&str] = &[
    "uri",
    "id",
    "created",
    "restore",
    "vm",
    "size",
    "stored_size",
    "state",
];

/// Which request a body belongs to: what is settable differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupOp {
    Create,
    Update,
}

/// Refuses a body whose `Content-Type` is not JSON; `also` lists the extra types the
/// request tolerates (a body-less request passes).
pub fn check_content_type(headers: &HeaderMap, body: &[u8], also: &[&str]) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::bad(
            "unsupported_media_type",
            "Content-Type",
            "a request body needs a Content-Type (application/json or the resource's type)",
        ));
    };
    let ct = ct
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let ok = ct == "application/json" || also.iter().any(|a| a.eq_ignore_ascii_case(&ct));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(
            "unsupported_media_type",
            "Content-Type",
            format!("Content-Type {ct:?} is not accepted here; send application/json"),
        ))
    }
}

/// Parses a body as a JSON object; an empty body is an empty object.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "malformed_json",
            "the body must be a JSON object",
        )),
    }
}

fn string(field: &str, v: &Value, max: usize) -> Result<String, ApiError> {
    let Value::String(s) = v else {
        return Err(ApiError::bad(
            "wrong_type",
            field,
            format!("{field} must be a string"),
        ));
    };
    if s.chars().count() > max {
        return Err(ApiError::bad(
            "invalid_value",
            field,
            format!("{field} is longer than {max} characters"),
        ));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ApiError::bad(
            "invalid_value",
            field,
            format!("{field} may not contain control characters"),
        ));
    }
    Ok(s.clone())
}

/// Parses a Backup body for a create or an update.
pub fn backup(body: &[u8], op: BackupOp) -> Result<BackupInput, ApiError> {
    let map = object(body)?;
    let mut out = BackupInput::default();
    for (k, v) in &map {
        if v.is_null() {
            continue;
        }
        match k.as_str() {
            "name" => {
                let n = string("name", v, MAX_NAME)?;
                if n.trim().is_empty() {
                    return Err(ApiError::bad(
                        "invalid_value",
                        "name",
                        "name may not be empty",
                    ));
                }
                out.name = Some(n);
            }
            "description" => out.description = Some(string("description", v, MAX_DESCRIPTION)?),
            // The type is chosen when the backup is made: an update ignores it, whatever it is.
            "type" if op == BackupOp::Update => {}
            "type" => {
                let t = string("type", v, 32)?;
                {
                    out.kind = Some(match t.as_str() {
                        "full" => BackupType::Full,
                        "incremental" => BackupType::Incremental,
                        "differential" => BackupType::Differential,
                        _ => {
                            return Err(ApiError::bad(
                                "invalid_value",
                                "type",
                                format!("type {t:?}: use full, incremental or differential"),
                            ))
                        }
                    });
                }
            }
            "tags" => {
                let Value::Array(items) = v else {
                    return Err(ApiError::bad(
                        "wrong_type",
                        "tags",
                        "tags must be an array of strings",
                    ));
                };
                if items.len() > MAX_TAGS {
                    return Err(ApiError::bad(
                        "invalid_value",
                        "tags",
                        format!("at most {MAX_TAGS} tags"),
                    ));
                }
                let mut tags = Vec::with_capacity(items.len());
                for t in items {
                    tags.push(string("tags", t, MAX_TAG)?);
                }
                out.tags = Some(tags);
            }
            "protected" => {
                let Value::Bool(p) = v else {
                    return Err(ApiError::bad(
                        "wrong_type",
                        "protected",
                        "protected must be true or false",
                    ));
                };
                match op {
                    BackupOp::Update => out.protected = Some(*p),
                    // A new backup is never protected: protecting is an admin's update.
                    BackupOp::Create if *p => {
                        return Err(ApiError::bad(
                            "invalid_value",
                            "protected",
                            "a new backup is not protected; an admin protects it with PUT",
                        ))
                    }
                    BackupOp::Create => {}
                }
            }
            k if READ_ONLY.contains(&k) => {}
            other => {
                return Err(ApiError::bad(
                    "unknown_field",
                    other,
                    format!("a Backup has no field {other:?}"),
                ))
            }
        }
    }
    Ok(out)
}

/// The name/value pairs of a restore: `note` (logged) and `force` (default true: the
/// restore replaces the VM's files even when they changed since the backup — that is what
/// the caller asked for; `false` refuses instead when the tree changed or is in use). The
/// specification's body is any name/value pairs, `note` by convention: other names are
/// accepted, logged by name and otherwise ignored.
#[derive(Clone, Debug, PartialEq)]
pub struct RestoreInput {
    pub note: Option<String>,
    pub force: bool,
    /// The names of the other pairs, sorted.
    pub ignored: Vec<String>,
}

pub fn restore(body: &[u8]) -> Result<RestoreInput, ApiError> {
    let map = object(body)?;
    let mut out = RestoreInput {
        note: None,
        force: true,
        ignored: Vec::new(),
    };
    for (k, v) in &map {
        if v.is_null() {
            continue;
        }
        match k.as_str() {
            "note" => out.note = Some(string("note", v, MAX_DESCRIPTION)?),
            "force" => {
                out.force = match v {
                    Value::Bool(b) => *b,
                    Value::String(s) if s == "true" => true,
                    Value::String(s) if s == "false" => false,
                    _ => {
                        return Err(ApiError::bad(
                            "wrong_type",
                            "force",
                            "force must be true or false",
                        ))
                    }
                }
            }
            other => out.ignored.push(other.chars().take(MAX_TAG).collect()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(e: &ApiError) -> (&str, Option<&str>) {
        (e.code, e.field.as_deref())
    }

    #[test]
    fn backup_bodies_are_checked_field_by_field() {
        let b = backup(
            br#"{"name":"n","description":"d","type":"incremental","tags":["a"],"uri":"x","size":3}"#,
            BackupOp::Create,
        )
        .unwrap();
        assert_eq!(b.name.as_deref(), Some("n"));
        assert_eq!(b.kind, Some(BackupType::Incremental));
        assert_eq!(b.tags, Some(vec!["a".to_string()]));
        assert_eq!(
            backup(b"", BackupOp::Create).unwrap(),
            BackupInput::default()
        );
        assert_eq!(
            backup(br#"{"name":null}"#, BackupOp::Update).unwrap(),
            BackupInput::default()
        );
        // The type is ignored on update.
        assert_eq!(
            backup(br#"{"type":"bogus"}"#, BackupOp::Update)
                .unwrap()
                .kind,
            None
        );

        type Case<'a> = (&'a [u8], (&'a str, Option<&'a str>));
        let cases: &[Case] = &[
            (b"{", ("malformed_json", None)),
            (b"[1]", ("malformed_json", None)),
            (br#"{"name":5}"#, ("wrong_type", Some("name"))),
            (br#"{"tags":"a"}"#, ("wrong_type", Some("tags"))),
            (br#"{"tags":[1]}"#, ("wrong_type", Some("tags"))),
            (br#"{"nmae":"x"}"#, ("unknown_field", Some("nmae"))),
            (br#"{"type":"weekly"}"#, ("invalid_value", Some("type"))),
            (br#"{"name":"  "}"#, ("invalid_value", Some("name"))),
            (br#"{"name":"a\u0000b"}"#, ("invalid_value", Some("name"))),
        ];
        for (body, want) in cases {
            let e = backup(body, BackupOp::Create).unwrap_err();
            assert_eq!(field(&e), *want, "{}", String::from_utf8_lossy(body));
        }
        let long = format!(r#"{{"name":"{}"}}"#, "x".repeat(MAX_NAME + 1));
        assert_eq!(
            field(&backup(long.as_bytes(), BackupOp::Create).unwrap_err()),
            ("invalid_value", Some("name"))
        );
    }

    #[test]
    fn restore_bodies() {
        assert_eq!(
            restore(br#"{"note":"hi"}"#).unwrap(),
            RestoreInput {
                note: Some("hi".into()),
                force: true,
                ignored: Vec::new(),
            }
        );
        assert!(!restore(br#"{"force":"false"}"#).unwrap().force);
        assert_eq!(restore(br#"{"force":1}"#).unwrap_err().code, "wrong_type");
    }

    #[test]
    fn a_restore_body_is_any_name_value_pairs() {
        let r =
            restore(br#"{"note":"Restore to known state","ticket":"OPS-7","dry":false,"n":[1]}"#)
                .unwrap();
        assert_eq!(r.note.as_deref(), Some("Restore to known state"));
        assert!(r.force);
        assert_eq!(r.ignored, ["dry", "n", "ticket"]);
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert!(check_content_type(&h, b"", &[]).is_ok());
        assert_eq!(
            check_content_type(&h, b"{}", &[]).unwrap_err().code,
            "unsupported_media_type"
        );
        h.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(check_content_type(&h, b"{}", &[]).is_ok());
        h.insert(
            header::CONTENT_TYPE,
            "application/vnd.com.sun.Backup.VM+json".parse().unwrap(),
        );
        assert!(check_content_type(&h, b"{}", &[]).is_err());
        assert!(check_content_type(&h, b"{}", &["application/vnd.com.sun.Backup.VM+json"]).is_ok());
    }
}
