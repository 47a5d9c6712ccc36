//! The conformance table (`CONFORMANCE.md`) kept honest: every row names tests that exist
//! and, unless implemented, says why; every call, alias, route, media type and
//! representation field the adapters serve has a row. The XML answer elements are checked
//! against the table beside the code that builds them (`xml::backupm`'s tests use
//! [`row_ids`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The table, as checked in.
const TABLE: &str = include_str!("../CONFORMANCE.md");

/// One row of the table.
#[derive(Debug)]
pub(crate) struct Row {
    pub id: String,
    pub status: String,
    pub why: String,
    pub tests: Vec<String>,
}

/// Every row of every table in `CONFORMANCE.md`, in order.
pub(crate) fn rows() -> Vec<Row> {
    TABLE
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| id |"))
        .map(|l| {
            let cells: Vec<&str> = l
                .trim()
                .trim_start_matches('|')
                .trim_end_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            assert_eq!(cells.len(), 5, "a row has five cells: {l}");
            Row {
                id: cells[0].to_string(),
                status: cells[2].to_string(),
                why: cells[3].to_string(),
                tests: cells[4]
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect(),
            }
        })
        .collect()
}

/// The ids of the table's rows.
pub(crate) fn row_ids() -> BTreeSet<String> {
    rows().into_iter().map(|r| r.id).collect()
}

/// Panics naming the ids `wanted` that have no row.
pub(crate) fn assert_rows(what: &str, wanted: impl IntoIterator<Item = String>) {
    let ids = row_ids();
    let missing: Vec<String> = wanted.into_iter().filter(|w| !ids.contains(w)).collect();
    assert!(
        missing.is_empty(),
        "{what} without a row in CONFORMANCE.md: {missing:?}"
    );
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn repo_dir() -> PathBuf {
    crate_dir().join("../..")
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Whether a test reference names something that exists (see the table's header).
fn check_test(r: &str) -> Result<(), String> {
    if let Some(name) = r.strip_prefix("golden:") {
        let response = repo_dir().join(format!("tests/xml-golden/{name}.response"));
        if !response.exists() {
            return Err(format!("{} does not exist", response.display()));
        }
        let runner = read(&repo_dir().join("tests/xml.rs"))?;
        if !runner.contains(&format!("\"{name}\"")) {
            return Err(format!("tests/xml.rs never sends the golden {name:?}"));
        }
        return Ok(());
    }
    if let Some(path) = r.strip_prefix("rest-golden:") {
        let file = crate_dir().join("tests/golden").join(path);
        return if file.exists() {
            Ok(())
        } else {
            Err(format!("{} does not exist", file.display()))
        };
    }
    let (file, name) = r
        .split_once("::")
        .ok_or_else(|| format!("{r:?} is not FILE::TEST, golden:NAME or rest-golden:PATH"))?;
    let path = if file.starts_with("tests/") {
        repo_dir().join(format!("{file}.rs"))
    } else if file.starts_with("src/") {
        crate_dir().join(format!("{file}.rs"))
    } else {
        return Err(format!("{r:?}: a test lives under tests/ or src/"));
    };
    let text = read(&path)?;
    // A test function: `fn NAME(` after a test attribute or inside `proptest!`.
    let at = text
        .find(&format!("fn {name}("))
        .ok_or_else(|| format!("{} has no fn {name}", path.display()))?;
    let before = &text[..at];
    let attribute = before
        .rfind("#[test]")
        .into_iter()
        .chain(before.rfind("#[tokio::test"))
        .chain(before.rfind("proptest!"))
        .max();
    match attribute {
        // Nothing but the attribute's line and the signature's start between them.
        Some(a) if before[a..].lines().count() <= 3 || before[a..].starts_with("proptest!") => {
            Ok(())
        }
        _ => Err(format!(
            "fn {name} in {} is not a test function",
            path.display()
        )),
    }
}

#[test]
fn every_row_names_tests_that_exist() {
    let rows = rows();
    assert!(rows.len() > 100, "the table is read: {} rows", rows.len());
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for r in &rows {
        if !seen.insert(r.id.clone()) {
            problems.push(format!("{}: the id appears twice", r.id));
        }
        match r.status.as_str() {
            "implemented" => {}
            "deviation" | "n/a" if !r.why.is_empty() => {}
            "deviation" | "n/a" => {
                problems.push(format!("{}: {} without a reason", r.id, r.status))
            }
            other => problems.push(format!("{}: status {other:?}", r.id)),
        }
        if r.tests.is_empty() {
            problems.push(format!("{}: no test", r.id));
        }
        for t in &r.tests {
            if let Err(e) = check_test(t) {
                problems.push(format!("{}: {e}", r.id));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_reference_to_a_missing_test_is_caught() {
    assert!(check_test("tests/xml::no_such_test").is_err());
    assert!(check_test("src/conformance::rows").is_err(), "not a test");
    assert!(check_test("golden:no-such-golden").is_err());
    assert!(check_test("rest-golden:nothing.json").is_err());
    assert!(check_test("whatever").is_err());
    assert!(check_test("src/conformance::every_row_names_tests_that_exist").is_ok());
    assert!(check_test("golden:login").is_ok());
}

#[test]
fn every_call_and_alias_has_a_row() {
    use crate::xml::{backupm, server};
    assert_rows(
        "calls",
        backupm::CALLS
            .iter()
            .chain(&server::SYSTEM_CALLS)
            .chain(backupm::ALIASES.iter().map(|(alias, _)| alias))
            .map(|c| format!("xml.call.{c}")),
    );
}

#[test]
fn every_route_has_a_row() {
    assert_rows(
        "routes",
        crate::rest::ROUTES.iter().flat_map(|(path, methods)| {
            methods
                .iter()
                .map(move |m| format!("rest.route.{m} {path}"))
        }),
    );
}

#[test]
fn every_media_type_answered_has_a_row() {
    // Every kind a handler answers with (`Rep::ok("Kind", …)`), the Status and the errors.
    let handlers = include_str!("rest/handlers.rs");
    let mut kinds: BTreeSet<String> = handlers
        .split("Rep::ok(\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|k| *k != "json")
        .map(str::to_string)
        .collect();
    assert!(kinds.contains("Backup"), "{kinds:?}");
    kinds.insert("Status".into());
    kinds.insert(crate::rest::model::MESSAGES.into());
    kinds.insert("json".into());
    assert_rows(
        "media types",
        kinds.into_iter().map(|k| format!("rest.media.{k}")),
    );
}

/// The keys of a representation, as `rest.field.TYPE.KEY`.
fn fields<T: serde::Serialize>(kind: &str, v: &T) -> Vec<String> {
    let value = serde_json::to_value(v).expect("a representation is JSON");
    value
        .as_object()
        .expect("a representation is an object")
        .keys()
        .map(|k| format!("rest.field.{kind}.{k}"))
        .collect()
}

#[test]
fn every_representation_field_has_a_row() {
    use crate::rest::fixtures::{backup_at, env, host, uris};
    use crate::rest::model;
    let u = uris();
    let b = backup_at("20261122081500", "web01-nightly");
    let status = model::Status {
        op: "back_up".into(),
        progress: 100,
        target_uri: String::new(),
        status_uri: String::new(),
        status: Some(201),
        message: Some(String::new()),
    };
    let mut wanted = Vec::new();
    wanted.extend(fields("Cloud", &model::cloud(&u, "c")));
    wanted.extend(fields("VDC", &model::vdc(&u, "c", 3, &[host()])));
    wanted.extend(fields(
        "Cluster",
        &model::host_cluster(&u, &host(), true, &[env()], std::slice::from_ref(&b)),
    ));
    wanted.extend(fields("Cluster", &model::root_cluster(&u, &[host()])));
    wanted.extend(fields(
        "VM",
        &model::vm(&u, &env(), std::slice::from_ref(&b)),
    ));
    wanted.extend(fields("Backup", &model::backup(&u, &b)));
    wanted.extend(fields("Status", &status));
    assert_rows("representation fields", wanted);
}
