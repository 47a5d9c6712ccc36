//! The OpenAPI 3 document of the REST adapter: checked in at
//! `crates/cairn-gateway/openapi.json`, served at `/openapi.json`, and kept in sync with the
//! router ([`super::ROUTES`]) and the representations ([`super::model`]) by the tests below.

/// The document, as served.
pub const DOCUMENT: &str = include_str!("../../openapi.json");

#[cfg(test)]
mod tests {
    //! Each test fails when what it guards drifts from the document:
    //! - [`paths_are_exactly_the_routes`]: the document's paths and methods against
    //!   [`ROUTES`], and the shape of every operation (parameters, media types, errors);
    //! - [`router_answers_exactly_the_routes`]: the real router against [`ROUTES`] (405s and
    //!   `Allow`), and which operations need credentials;
    //! - [`roles_are_the_documented_ones`], [`request_media_types_are_the_accepted_ones`]:
    //!   the router against the document's roles, request media types and 413s;
    //! - [`schemas_match_the_representations`]: the schemas against what [`model`] serializes;
    //! - [`request_schemas_match_the_parsers`]: the body schemas against [`input`];
    //! - [`error_codes_are_the_documented_ones`]: `Message.code` against `error.rs`;
    //! - [`document_is_pretty_printed_canonically`]: the file's formatting.

    use std::collections::{BTreeMap, BTreeSet};

    use axum::body::Body;
    use axum::http::{header, HeaderMap, Request, StatusCode};
    use axum::Router;
    use base64::Engine;
    use cairn_core::job::{Job, JobKind, JobOptions, JobProgress, JobResult, JobState};
    use cairn_core::{BackupRecord, BackupType, EnvId};
    use serde_json::{json, Map, Value};
    use tower::ServiceExt;

    use super::DOCUMENT;
    use crate::rest::error::ApiError;
    use crate::rest::fixtures::{self, env, host, uris};
    use crate::rest::input::{self, BackupOp};
    use crate::rest::model;
    use crate::rest::ROUTES;
    use crate::users::Role;

    const EID: &str = "6f1c0d9e-2b1a-4d7e-9a55-0c3b8e1f7a21";
    const STAMP: &str = "20261122081500";
    const JOB: &str = "41a3c9a2-7d0e-4f5b-8c61-2e9d0b7f3a10";
    const HOST: &str = "h1";
    const PASSWORD: &str = "correct horse battery";
    const MAX_BODY: usize = 65536;

    /// The methods a path item may hold (OpenAPI 3.0).
    const HTTP_METHODS: &[&str] = &[
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    /// The methods every route is tried with.
    const TRIED: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH"];

    fn doc() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
    }

    fn messages_type() -> String {
        model::media(model::MESSAGES)
    }

    /// Follows `$ref`s (local JSON pointers); also returns the name the last one pointed at.
    fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> (&'a Value, Option<&'a str>) {
        let mut name = None;
        while let Some(r) = v.get("$ref").and_then(Value::as_str) {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("$ref {r} is not local"));
            name = r.rsplit('/').next();
            v = doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("$ref {r} points at nothing"));
        }
        (v, name)
    }

    fn keys(v: &Value) -> BTreeSet<String> {
        v.as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every operation: (path, lower-case method, operation).
    fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths is an object") {
            for (method, op) in item.as_object().expect("a path item is an object") {
                if HTTP_METHODS.contains(&method.as_str()) {
                    out.push((path.clone(), method.clone(), op));
                }
            }
        }
        out
    }

    /// A route's path with every parameter filled with a valid-looking value.
    fn fill(path: &str) -> String {
        let filled = path
            .replace("{eid}", EID)
            .replace("{stamp}", STAMP)
            .replace("{host}", HOST)
            .replace("{id}", JOB)
            .replace("{path}", "etc/nginx");
        assert!(
            !filled.contains('{'),
            "{path}: a path parameter the tests do not know; give it a value in fill()"
        );
        filled
    }

    // ---------------------------------------------------------------------------------
    // 1. The document's paths are the routes.

    #[test]
    fn paths_are_exactly_the_routes() {
        let doc = doc();
        let version = doc["openapi"].as_str().expect("openapi is a string");
        assert!(version.starts_with("3."), "openapi {version:?} is not 3.x");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(
            doc["info"]["title"],
            "Cairn REST adapter (Sun Cloud API backup model)"
        );

        let mut documented: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (path, item) in doc["paths"].as_object().expect("paths is an object") {
            let methods = documented.entry(path.clone()).or_default();
            for key in item.as_object().expect("a path item is an object").keys() {
                if HTTP_METHODS.contains(&key.as_str()) {
                    methods.insert(key.clone());
                } else {
                    assert!(
                        ["summary", "description", "parameters", "servers"].contains(&key.as_str()),
                        "{path}: {key:?} is neither a method nor a path item field"
                    );
                }
            }
        }
        let routed: BTreeMap<String, BTreeSet<String>> = ROUTES
            .iter()
            .map(|(p, ms)| {
                (
                    p.to_string(),
                    ms.iter().map(|m| m.to_ascii_lowercase()).collect(),
                )
            })
            .collect();
        assert_eq!(documented, routed, "the document's paths are not ROUTES");

        // Every operation is complete and uses the adapter's media types.
        assert_eq!(doc["security"], json!([{ "basicAuth": [] }]));
        assert_eq!(
            doc["components"]["securitySchemes"]["basicAuth"]["type"],
            "http"
        );
        assert_eq!(
            doc["components"]["securitySchemes"]["basicAuth"]["scheme"],
            "basic"
        );
        let mut ids = BTreeSet::new();
        for (path, method, op) in operations(&doc) {
            let at = format!("{} {path}", method.to_uppercase());
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{at}: no summary"
            );
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(ids.insert(id.to_string()), "{at}: operationId {id:?} again");
            match op.get("security") {
                Some(s) => assert_eq!(s, &json!([]), "{at}: security is either global or none"),
                None => assert!(
                    ["viewer", "operator", "admin"]
                        .contains(&op["x-cairn-role"].as_str().unwrap_or("")),
                    "{at}: an operation that needs credentials names its role (x-cairn-role)"
                ),
            }

            // The path parameters are exactly the template's.
            let template: BTreeSet<String> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .map(str::to_string)
                .collect();
            let mut declared = BTreeSet::new();
            for p in op["parameters"].as_array().into_iter().flatten() {
                let (p, _) = resolve(&doc, p);
                if p["in"] == "path" {
                    assert_eq!(p["required"], true, "{at}: path parameters are required");
                    assert!(
                        p["description"].as_str().is_some_and(|d| !d.is_empty()),
                        "{at}: parameter {} is not described",
                        p["name"]
                    );
                    declared.insert(p["name"].as_str().unwrap_or_default().to_string());
                }
            }
            assert_eq!(declared, template, "{at}: path parameters");

            let responses = op["responses"].as_object().expect("responses");
            assert!(!responses.is_empty(), "{at}: no responses");
            assert!(responses.contains_key("405"), "{at}: the 405 of the path");
            for (code, resp) in responses {
                let (resp, _) = resolve(&doc, resp);
                let at = format!("{at} → {code}");
                assert!(
                    resp["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{at}: not described"
                );
                let content = &resp["content"];
                let schema_of = |media: &str| resolve(&doc, &content[media]["schema"]).1;
                if code.starts_with('4') || code.starts_with('5') {
                    assert_eq!(keys(content), BTreeSet::from([messages_type()]), "{at}");
                    assert_eq!(schema_of(&messages_type()), Some("Messages"), "{at}");
                } else if code == "202" {
                    assert_eq!(
                        keys(content),
                        BTreeSet::from([model::media("Status")]),
                        "{at}"
                    );
                    assert_eq!(schema_of(&model::media("Status")), Some("Status"), "{at}");
                    assert!(resp["headers"].get("Location").is_some(), "{at}: Location");
                } else if code == "200" {
                    for media in keys(content) {
                        let Some(kind) = media
                            .strip_prefix("application/vnd.com.sun.cloud.")
                            .and_then(|m| m.strip_suffix("+json"))
                        else {
                            continue;
                        };
                        assert_eq!(schema_of(&media), Some(kind), "{at}: {media}");
                        assert_eq!(
                            content["application/json"],
                            content[media.as_str()],
                            "{at}: application/json is the same representation"
                        );
                    }
                } else {
                    panic!("{at}: the adapter never answers {code}");
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // 2. The router is the routes; the document's roles, media types and security are
    //    the router's.

    fn app(users: &[(&str, Role)]) -> Router {
        let users: Vec<(&str, Role, &str)> =
            users.iter().map(|(n, r)| (*n, *r, PASSWORD)).collect();
        fixtures::router(&users, None, MAX_BODY)
    }

    struct Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: Vec<u8>,
    }

    impl Answer {
        /// The `code` of an error answer, checking it is a Messages body.
        fn code(&self, at: &str) -> String {
            assert_eq!(
                self.headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok()),
                Some(messages_type().as_str()),
                "{at}: an error answers with a Messages body"
            );
            let v: Value = serde_json::from_slice(&self.body)
                .unwrap_or_else(|e| panic!("{at}: the Messages body is not JSON: {e}"));
            v["message"][0]["code"]
                .as_str()
                .unwrap_or_else(|| panic!("{at}: no message[0].code in {v}"))
                .to_string()
        }
    }

    async fn send(
        app: &Router,
        method: &str,
        path: &str,
        user: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(user) = user {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{PASSWORD}"));
            req = req.header(header::AUTHORIZATION, format!("Basic {token}"));
        }
        let req = match body {
            Some((content_type, bytes)) => req
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(bytes)),
            None => req.body(Body::empty()),
        }
        .expect("a request");
        let resp = app.clone().oneshot(req).await.expect("the router answers");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("a body")
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    #[tokio::test]
    async fn router_answers_exactly_the_routes() {
        let app = app(&[("admin", Role::Admin)]);
        for (path, methods) in ROUTES {
            let uri = fill(path);
            let listed: BTreeSet<String> = methods.iter().map(|m| m.to_string()).collect();
            for method in TRIED {
                let at = format!("{method} {uri}");
                let a = send(&app, method, &uri, Some("admin"), None).await;
                if listed.contains(*method) {
                    assert_ne!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{at}");
                    // With the cluster unreachable every handler answers before it looks
                    // anything up: a 404 here is the router's "no such route".
                    assert_ne!(a.status, StatusCode::NOT_FOUND, "{at}: not routed");
                    continue;
                }
                assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{at}");
                let allow: BTreeSet<String> = a
                    .headers
                    .get(header::ALLOW)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_else(|| panic!("{at}: a 405 without Allow"))
                    .split(',')
                    .map(|m| m.trim().to_ascii_uppercase())
                    .filter(|m| !m.is_empty())
                    // axum answers HEAD wherever GET is routed.
                    .filter(|m| !(m == "HEAD" && listed.contains("GET")))
                    .collect();
                assert_eq!(allow, listed, "{at}: Allow");
                assert_eq!(a.code(&at), "method_not_allowed", "{at}");
            }
        }

        // The operations the document leaves open (security: []) are the ones the gate
        // lets through without credentials.
        let doc = doc();
        for (path, method, op) in operations(&doc) {
            let uri = fill(&path);
            let method = method.to_uppercase();
            let at = format!("{method} {uri} without credentials");
            let a = send(&app, &method, &uri, None, None).await;
            if op.get("security") == Some(&json!([])) {
                assert_ne!(a.status, StatusCode::UNAUTHORIZED, "{at}: documented open");
            } else {
                assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{at}");
                assert_eq!(a.code(&at), "unauthenticated", "{at}");
                assert!(a.headers.contains_key(header::WWW_AUTHENTICATE), "{at}");
                assert!(
                    op["responses"].get("401").is_some(),
                    "{at}: 401 undocumented"
                );
                // A login is refused as busy when too many are being checked.
                assert!(
                    op["responses"].get("503").is_some(),
                    "{at}: 503 (busy) undocumented"
                );
            }
        }
    }

    #[tokio::test]
    async fn roles_are_the_documented_ones() {
        let app = app(&[
            ("viewer", Role::Viewer),
            ("operator", Role::Operator),
            ("admin", Role::Admin),
        ]);
        let doc = doc();
        for (path, method, op) in operations(&doc) {
            let Some(needed) = op["x-cairn-role"].as_str() else {
                continue;
            };
            let needed = Role::parse(needed).expect("x-cairn-role names a role");
            let uri = fill(&path);
            let method = method.to_uppercase();
            for role in Role::ALL {
                let at = format!("{method} {uri} as {role}");
                let a = send(&app, &method, &uri, Some(role.as_str()), None).await;
                if role.allows(needed) {
                    assert_ne!(a.status, StatusCode::FORBIDDEN, "{at}");
                } else {
                    assert_eq!(a.status, StatusCode::FORBIDDEN, "{at}");
                    assert_eq!(a.code(&at), "forbidden", "{at}");
                }
            }
            assert_eq!(
                op["responses"].get("403").is_some(),
                needed != Role::Viewer,
                "{method} {path}: a 403 is documented exactly when a role can be refused"
            );
        }
    }

    #[tokio::test]
    async fn request_media_types_are_the_accepted_ones() {
        let app = app(&[("admin", Role::Admin)]);
        let doc = doc();
        let ops = operations(&doc);
        // Every type any operation documents, and one none does.
        let mut candidates: BTreeSet<String> = ops
            .iter()
            .flat_map(|(_, _, op)| keys(&op["requestBody"]["content"]))
            .collect();
        // And the types a client might try: every representation's, the PUT type the spec
        // misspells, plain text.
        candidates.extend(
            keys(&doc["components"]["schemas"])
                .iter()
                .map(|s| model::media(s)),
        );
        candidates.insert("application/vnd.com.sun.Backup.VM+json".to_string());
        candidates.insert("text/plain".to_string());
        for (path, method, op) in &ops {
            let uri = fill(path);
            let method = method.to_uppercase();
            let documented = keys(&op["requestBody"]["content"]);
            if documented.is_empty() {
                continue;
            }
            for media in &candidates {
                let at = format!("{method} {uri} with {media}");
                let a = send(
                    &app,
                    &method,
                    &uri,
                    Some("admin"),
                    Some((media, b"{}".to_vec())),
                )
                .await;
                if documented.contains(media) {
                    assert_ne!(
                        a.status,
                        StatusCode::BAD_REQUEST,
                        "{at}: documented as accepted"
                    );
                    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{at}");
                } else {
                    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{at}: undocumented type");
                    assert_eq!(a.code(&at), "unsupported_media_type", "{at}");
                }
            }
            let at = format!("{method} {uri} with a body over the cap");
            let big = vec![b' '; MAX_BODY + 1];
            let a = send(
                &app,
                &method,
                &uri,
                Some("admin"),
                Some(("application/json", big)),
            )
            .await;
            assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{at}");
            assert_eq!(a.code(&at), "body_too_large", "{at}");
            assert!(
                op["responses"].get("413").is_some(),
                "{at}: 413 undocumented"
            );
            assert!(
                op["responses"].get("400").is_some(),
                "{at}: 400 undocumented"
            );
        }
    }

    // ---------------------------------------------------------------------------------
    // 3. The schemas are the representations.

    fn record() -> BackupRecord {
        let mut b = fixtures::backup_at(STAMP, "web01-nightly");
        b.kind = BackupType::Incremental;
        b
    }

    /// Statuses of a running, a queued, a succeeded and a failed job.
    fn statuses() -> Vec<Value> {
        let u = uris();
        let env: EnvId = EID.parse().unwrap();
        let backup = record().id;
        let job = |kind, options| {
            Job::new(
                JOB.parse().unwrap(),
                kind,
                env,
                HOST.to_string(),
                "rest:admin".to_string(),
                options,
                1_000,
                60_000,
            )
        };
        let mut running = job(JobKind::Backup, JobOptions::default());
        running.claim(HOST, 2_000, 60_000).unwrap();
        let progress = JobProgress {
            phase: "reading".to_string(),
            percent: 40,
            ..JobProgress::default()
        };
        running.report(HOST, progress, 70_000, 65_000).unwrap();
        let mut succeeded = running.clone();
        let result = JobResult {
            backup: Some(backup),
            ..JobResult::default()
        };
        succeeded
            .finish(
                Some(HOST),
                JobState::Succeeded,
                String::new(),
                None,
                result,
                3_000,
            )
            .unwrap();
        let on_backup = JobOptions {
            backup: Some(backup),
            ..JobOptions::default()
        };
        let queued = job(JobKind::Delete, on_backup.clone());
        let mut failed = job(JobKind::Restore, on_backup);
        failed.claim(HOST, 2_000, 60_000).unwrap();
        failed
            .finish(
                Some(HOST),
                JobState::Failed,
                "the target is in use".to_string(),
                Some(cairn_core::ErrorCode::TargetInUse),
                JobResult::default(),
                3_000,
            )
            .unwrap();

        let running = serde_json::to_value(model::status(&u, &running)).unwrap();
        let succeeded = serde_json::to_value(model::status(&u, &succeeded)).unwrap();
        // The optional fields differ: both shapes are checked.
        assert!(running.get("status").is_none() && running.get("message").is_none());
        assert!(succeeded.get("status").is_some() && succeeded.get("message").is_some());
        vec![
            running,
            serde_json::to_value(model::status(&u, &queued)).unwrap(),
            succeeded,
            serde_json::to_value(model::status(&u, &failed)).unwrap(),
        ]
    }

    /// A first page (a directory, a file and a symlink, more to come) and a last one.
    fn files_pages() -> Vec<Value> {
        use cairn_api::browse::{Listing, Node};
        use cairn_core::manifest::EntryKind;
        let node = |path: &str, kind, link: Option<&str>| Node {
            path: path.to_string(),
            name: path.rsplit('/').next().unwrap_or("").to_string(),
            kind,
            size: if kind == EntryKind::File { 1234 } else { 0 },
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime_ns: 1_763_799_300_123_456_789,
            link_target: link.map(str::to_string),
        };
        let first = Listing {
            dir: node("etc", EntryKind::Dir, None),
            entries: vec![
                node("etc/nginx", EntryKind::Dir, None),
                node("etc/passwd", EntryKind::File, None),
                node("etc/rc", EntryKind::Symlink, Some("rc.d")),
            ],
            next: Some("rc".to_string()),
        };
        let last = Listing {
            dir: node("", EntryKind::Dir, None),
            entries: vec![],
            next: None,
        };
        let id = record().id;
        [first, last]
            .into_iter()
            .map(|l| serde_json::to_value(model::files(&uris(), &id, l, 3)).unwrap())
            .collect()
    }

    fn error_bodies() -> Vec<Value> {
        let with_hint = model::Messages {
            message: vec![model::Message {
                text: "name is longer than 256 characters".to_string(),
                code: "invalid_value".to_string(),
                field: Some("name".to_string()),
                // No error sets a hint yet; the schema has it, so it is checked too.
                hint: Some("shorten it".to_string()),
                severity: "SEVERE".to_string(),
            }],
        };
        vec![
            serde_json::to_value(ApiError::bad("unknown_field", "nmae", "no field nmae").body())
                .unwrap(),
            serde_json::to_value(ApiError::for_status(StatusCode::SERVICE_UNAVAILABLE).body())
                .unwrap(),
            serde_json::to_value(with_hint).unwrap(),
        ]
    }

    /// Walks a value against a schema, remembering which properties of each named schema
    /// were seen.
    struct Checker<'a> {
        doc: &'a Value,
        seen: BTreeMap<String, BTreeSet<String>>,
    }

    impl<'a> Checker<'a> {
        fn check(&mut self, schema: &'a Value, v: &Value, at: &str) {
            let (schema, name) = resolve(self.doc, schema);
            if v.is_null() {
                assert_eq!(schema["nullable"], true, "{at}: null where not nullable");
                return;
            }
            if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
                assert!(allowed.contains(v), "{at}: {v} is not one of {allowed:?}");
            }
            match schema.get("type").and_then(Value::as_str) {
                Some("object") => {
                    let obj = v
                        .as_object()
                        .unwrap_or_else(|| panic!("{at}: {v} is not an object"));
                    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                        return; // a free-form object
                    };
                    for (k, x) in obj {
                        let p = props.get(k).unwrap_or_else(|| {
                            panic!(
                                "{at}: field {k:?} is not a property of schema {}",
                                name.unwrap_or("(inline)")
                            )
                        });
                        self.check(p, x, &format!("{at}.{k}"));
                    }
                    for r in schema["required"].as_array().into_iter().flatten() {
                        let r = r.as_str().expect("required names are strings");
                        assert!(
                            obj.contains_key(r),
                            "{at}: required field {r:?} of schema {} is missing",
                            name.unwrap_or("(inline)")
                        );
                    }
                    if let Some(n) = name {
                        self.seen
                            .entry(n.to_string())
                            .or_default()
                            .extend(obj.keys().cloned());
                    }
                }
                Some("array") => {
                    let items = v
                        .as_array()
                        .unwrap_or_else(|| panic!("{at}: {v} is not an array"));
                    for (i, x) in items.iter().enumerate() {
                        self.check(&schema["items"], x, &format!("{at}[{i}]"));
                    }
                }
                Some("string") => {
                    let s = v
                        .as_str()
                        .unwrap_or_else(|| panic!("{at}: {v} is not a string"));
                    match schema["format"].as_str() {
                        Some("uri") => assert!(s.starts_with("http://"), "{at}: {s} is no URI"),
                        Some("uuid") => assert!(uuid::Uuid::parse_str(s).is_ok(), "{at}: {s}"),
                        Some("date-time") => assert!(
                            chrono::DateTime::parse_from_rfc3339(s).is_ok(),
                            "{at}: {s} is no date-time"
                        ),
                        _ => {}
                    }
                    let n = s.chars().count() as u64;
                    if let Some(max) = schema["maxLength"].as_u64() {
                        assert!(n <= max, "{at}: longer than {max}");
                    }
                    if let Some(min) = schema["minLength"].as_u64() {
                        assert!(n >= min, "{at}: shorter than {min}");
                    }
                }
                Some("integer") => {
                    let n = v
                        .as_i64()
                        .unwrap_or_else(|| panic!("{at}: {v} is not an integer"));
                    if let Some(min) = schema["minimum"].as_i64() {
                        assert!(n >= min, "{at}: {n} < {min}");
                    }
                    if let Some(max) = schema["maximum"].as_i64() {
                        assert!(n <= max, "{at}: {n} > {max}");
                    }
                }
                Some("boolean") => assert!(v.is_boolean(), "{at}: {v} is not a boolean"),
                Some("number") => assert!(v.is_number(), "{at}: {v} is not a number"),
                Some(t) => panic!("{at}: unexpected schema type {t:?}"),
                None => {} // any value
            }
        }
    }

    #[test]
    fn schemas_match_the_representations() {
        let doc = doc();
        let u = uris();
        let (env, host, rec) = (env(), host(), record());
        let mut vm_running = model::vm(&u, &env, std::slice::from_ref(&rec));
        // Agents report no run status yet; the schema has it, so it is checked too.
        vm_running.run_status = Some("STARTED".to_string());
        fn v<T: serde::Serialize>(x: &T) -> Value {
            serde_json::to_value(x).expect("a representation serializes")
        }

        // What each operation's 200 answers with, from the pure functions of `model`.
        let ok: BTreeMap<(&str, &str), Vec<Value>> = BTreeMap::from([
            (("/", "get"), vec![v(&model::cloud(&u, "cairn-1a2b3c4d"))]),
            (("/versions", "get"), vec![v(&model::versions(&u))]),
            (
                ("/vdc", "get"),
                vec![v(&model::vdc(
                    &u,
                    "cairn-1a2b3c4d",
                    3,
                    std::slice::from_ref(&host),
                ))],
            ),
            (
                ("/clusters", "get"),
                vec![v(&model::root_cluster(&u, std::slice::from_ref(&host)))],
            ),
            (
                ("/clusters/{host}", "get"),
                vec![v(&model::host_cluster(
                    &u,
                    &host,
                    true,
                    std::slice::from_ref(&env),
                    std::slice::from_ref(&rec),
                ))],
            ),
            (
                ("/vms/{eid}", "get"),
                vec![
                    v(&model::vm(&u, &env, std::slice::from_ref(&rec))),
                    v(&vm_running),
                ],
            ),
            (
                ("/vms/{eid}/backups", "get"),
                vec![v(&model::vm(&u, &env, std::slice::from_ref(&rec)).backups)],
            ),
            (
                ("/vms/{eid}/backups/{stamp}", "get"),
                vec![v(&model::backup(&u, &rec))],
            ),
            (("/statuses/{id}", "get"), statuses()),
            (("/vms/{eid}/backups/{stamp}/files", "get"), files_pages()),
            (
                ("/vms/{eid}/backups/{stamp}/files/{path}", "get"),
                files_pages(),
            ),
            (("/openapi.json", "get"), vec![doc.clone()]),
        ]);

        let mut checker = Checker {
            doc: &doc,
            seen: BTreeMap::new(),
        };
        for (path, method, op) in operations(&doc) {
            for (code, resp) in op["responses"].as_object().expect("responses") {
                let (resp, _) = resolve(&doc, resp);
                let samples = match code.as_str() {
                    "200" => {
                        let json = keys(&resp["content"])
                            .into_iter()
                            .any(|m| m.ends_with("json"));
                        if !json {
                            continue; // text/plain: /healthz and /metrics
                        }
                        ok.get(&(path.as_str(), method.as_str()))
                            .cloned()
                            .unwrap_or_else(|| {
                                panic!("{method} {path}: no sample for its 200; add one")
                            })
                    }
                    "202" => statuses(),
                    _ => error_bodies(),
                };
                for (media, content) in resp["content"].as_object().expect("content") {
                    if !media.ends_with("json") {
                        continue; // a file's bytes, a tar archive
                    }
                    for (i, sample) in samples.iter().enumerate() {
                        let at = format!("{method} {path} {code} {media} #{i}");
                        checker.check(&content["schema"], sample, &at);
                    }
                }
            }
        }

        // Every property of every response schema appears in some sample: a field the
        // representation no longer has is caught too.
        let schemas = doc["components"]["schemas"]
            .as_object()
            .expect("components.schemas");
        let requests = BTreeSet::from(["BackupInput".to_string(), "RestoreInput".to_string()]);
        let all: BTreeSet<String> = schemas.keys().cloned().collect();
        let seen: BTreeSet<String> = checker.seen.keys().cloned().collect();
        assert_eq!(
            seen,
            all.difference(&requests).cloned().collect(),
            "response schemas no sample reached (or request schemas in responses)"
        );
        for (name, fields) in &checker.seen {
            assert_eq!(
                fields,
                &keys(&schemas[name]["properties"]),
                "schema {name}: properties no representation has"
            );
            for (prop, schema) in schemas[name]["properties"].as_object().unwrap() {
                assert!(
                    schema["description"]
                        .as_str()
                        .is_some_and(|d| !d.is_empty())
                        || schema.get("$ref").is_some(),
                    "{name}.{prop} is not described"
                );
            }
        }
    }

    #[test]
    fn request_schemas_match_the_parsers() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];

        // A Backup body may carry every field of the representation, and no other.
        let bi = &schemas["BackupInput"];
        assert_eq!(bi["additionalProperties"], false);
        assert_eq!(
            keys(&bi["properties"]),
            keys(&schemas["Backup"]["properties"]),
            "BackupInput's fields are Backup's"
        );
        let whole = serde_json::to_vec(&model::backup(&uris(), &record())).unwrap();
        for op in [BackupOp::Create, BackupOp::Update] {
            let b = input::backup(&whole, op).expect("a whole Backup is a valid body");
            assert_eq!(b.name.as_deref(), Some("web01-nightly"));
            let e = input::backup(br#"{"not_a_field":1}"#, op).unwrap_err();
            assert_eq!(e.code, "unknown_field");
            // Everything is optional and null is absent.
            let nulls: Map<String, Value> = keys(&bi["properties"])
                .into_iter()
                .map(|k| (k, Value::Null))
                .collect();
            let nulls = serde_json::to_vec(&nulls).unwrap();
            assert_eq!(
                input::backup(&nulls, op).unwrap(),
                input::BackupInput::default()
            );
        }
        let kinds: BTreeSet<String> = bi["properties"]["type"]["enum"]
            .as_array()
            .expect("type is an enum")
            .iter()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect();
        assert_eq!(
            kinds.iter().map(String::as_str).collect::<BTreeSet<_>>(),
            schemas["Backup"]["properties"]["type"]["enum"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect(),
        );
        for k in &kinds {
            let body = serde_json::to_vec(&json!({ "type": k })).unwrap();
            let b = input::backup(&body, BackupOp::Create).unwrap();
            assert_eq!(b.kind.map(|t| t.as_str()), Some(k.as_str()));
        }
        let e = input::backup(br#"{"type":"weekly"}"#, BackupOp::Create).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("invalid_value", Some("type"))
        );
        // The documented limits are the parser's.
        let p = &bi["properties"];
        assert_eq!(p["name"]["maxLength"], input::MAX_NAME);
        assert_eq!(p["description"]["maxLength"], input::MAX_DESCRIPTION);
        assert_eq!(p["tags"]["maxItems"], input::MAX_TAGS);
        assert_eq!(p["tags"]["items"]["maxLength"], input::MAX_TAG);

        // A restore takes the documented pairs, and any others (logged, ignored).
        let ri = &schemas["RestoreInput"];
        assert_eq!(ri["additionalProperties"], true);
        for (k, schema) in ri["properties"].as_object().expect("properties") {
            let value = match schema["type"].as_str() {
                Some("string") => json!("x"),
                Some("boolean") => json!(false),
                t => panic!("RestoreInput.{k}: a type the test does not know: {t:?}"),
            };
            for value in [value, Value::Null] {
                let pair = Map::from_iter([(k.clone(), value.clone())]);
                let body = serde_json::to_vec(&pair).unwrap();
                input::restore(&body).unwrap_or_else(|e| panic!("{k}: {value}: {e:?}"));
            }
        }
        let other = input::restore(br#"{"not_a_field":1}"#).unwrap();
        assert_eq!(other.ignored, ["not_a_field"]);
        assert_eq!(
            ri["properties"]["force"]["default"],
            input::restore(b"").unwrap().force
        );
        assert_eq!(
            ri["properties"]["note"]["maxLength"],
            input::MAX_DESCRIPTION
        );
    }

    // ---------------------------------------------------------------------------------
    // 4. The error codes, and the file's formatting.

    #[test]
    fn error_codes_are_the_documented_ones() {
        // The table of stable codes in error.rs's module doc: "//! | `code` | HTTP | …".
        let table: BTreeSet<String> = include_str!("error.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! | `"))
            .filter_map(|rest| rest.split('`').next())
            .map(str::to_string)
            .collect();
        assert!(table.len() >= 10, "error.rs's table of codes was not found");
        let doc = doc();
        let code = &doc["components"]["schemas"]["Message"]["properties"]["code"];
        let documented: BTreeSet<String> = code["enum"]
            .as_array()
            .expect("Message.code is an enum")
            .iter()
            .map(|c| c.as_str().expect("codes are strings").to_string())
            .collect();
        assert_eq!(documented, table, "Message.code's enum is error.rs's table");
        let description = code["description"].as_str().unwrap_or_default();
        for c in &table {
            assert!(
                description.contains(&format!("`{c}`")),
                "Message.code's description does not explain {c}"
            );
        }
        for s in 400..600 {
            if let Ok(status) = StatusCode::from_u16(s) {
                let c = ApiError::for_status(status).code;
                assert!(documented.contains(c), "{s} answers undocumented code {c}");
            }
        }
    }

    #[test]
    fn document_is_pretty_printed_canonically() {
        // serde_json (without preserve_order) writes object keys sorted; a file with sorted
        // keys is canonical either way.
        let parsed: Value = serde_json::from_str(DOCUMENT).expect("openapi.json is JSON");
        let canonical = serde_json::to_string_pretty(&parsed).unwrap() + "\n";
        if canonical != DOCUMENT {
            let line = canonical
                .lines()
                .zip(DOCUMENT.lines())
                .position(|(a, b)| a != b)
                .map_or_else(
                    || "the end".to_string(),
                    |i| {
                        format!(
                            "line {}: {:?}, canonically {:?}",
                            i + 1,
                            DOCUMENT.lines().nth(i).unwrap_or(""),
                            canonical.lines().nth(i).unwrap_or("")
                        )
                    },
                );
            panic!(
                "openapi.json is not pretty-printed canonically (2-space indent, sorted keys, \
                 trailing newline) at {line}; reformat it, e.g. with \
                 `python3 -m json.tool --indent 2 --sort-keys --no-ensure-ascii`"
            );
        }
    }
}
