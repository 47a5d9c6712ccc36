//! The crate graph's absent edges (ARCHITECTURE.md, "Code map"), checked against each
//! `crates/*/Cargo.toml`: a dependency that must stay absent fails this test the day someone
//! adds it, instead of living on as a sentence nobody re-reads.

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// The normal (not dev, not build) dependencies a crate's manifest names.
    fn deps(krate: &str) -> BTreeSet<String> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("crates")
            .join(krate)
            .join("Cargo.toml");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let mut out = BTreeSet::new();
        let mut inside = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                inside = line == "[dependencies]";
                continue;
            }
            if inside && !line.is_empty() && !line.starts_with('#') {
                let name = line.split(['.', '=', ' ']).next().unwrap_or_default();
                out.insert(name.to_string());
            }
        }
        assert!(
            !out.is_empty(),
            "{krate} names no dependency: is {path:?} parsed right?"
        );
        out
    }

    fn lacks(krate: &str, forbidden: &[&str], why: &str) {
        let d = deps(krate);
        let bad: Vec<&&str> = forbidden.iter().filter(|f| d.contains(**f)).collect();
        assert!(bad.is_empty(), "{krate} must not depend on {bad:?}: {why}");
    }

    #[test]
    fn the_crate_graph_keeps_its_absent_edges() {
        // The parser sees the edges that exist.
        assert!(deps("cairn-node").contains("cairn-meta"));
        assert!(deps("cairn-gateway").contains("cairn-api"));
        const CAIRN: [&str; 10] = [
            "cairn-chunker",
            "cairn-store",
            "cairn-meta",
            "cairn-proto",
            "cairn-api",
            "cairn-fs",
            "cairn-node",
            "cairn-agent",
            "cairn-gateway",
            "cairn",
        ];
        lacks(
            "cairn-core",
            &[&CAIRN[..], &["sled", "openraft", "tonic", "tokio", "prost"]].concat(),
            "the domain model and pure rules do no IO",
        );
        lacks(
            "cairn-meta",
            &[
                "tonic",
                "prost",
                "cairn-proto",
                "cairn-store",
                "cairn-fs",
                "cairn-node",
            ],
            "the catalog knows nothing of gRPC, chunks or files",
        );
        lacks(
            "cairn-store",
            &["tokio", "tonic", "openraft", "cairn-meta", "cairn-proto"],
            "the chunk store knows nothing of raft or the network",
        );
        lacks(
            "cairn-fs",
            &["cairn-chunker", "blake3", "cairn-proto", "tonic"],
            "file-system access neither chunks nor hashes nor talks to the cluster",
        );
        for adapter in ["cairn-agent", "cairn-gateway"] {
            lacks(
                adapter,
                &[
                    "cairn-store",
                    "cairn-meta",
                    "cairn-node",
                    "sled",
                    "openraft",
                ],
                "agents and adapters reach the cluster over gRPC only",
            );
        }
        // Protobuf types stay behind the typed API: only `cairn-api` and the node (whose
        // service shims decode requests) see the wire; everyone else calls `cairn_api::Client`.
        for krate in CAIRN
            .iter()
            .filter(|k| !["cairn-api", "cairn-node", "cairn-proto"].contains(k))
        {
            lacks(
                krate,
                &["cairn-proto", "prost", "tonic"],
                "only cairn-api and the node's service shims touch protobuf types",
            );
        }
        lacks(
            "cairn-gateway",
            &["cairn-agent"],
            "the adapters call the cluster through cairn-api, not the agent's engines",
        );
        for krate in CAIRN.iter().filter(|k| **k != "cairn") {
            lacks(
                krate,
                &["cairn-node"],
                "only the binary depends on the storage node",
            );
        }
    }

    /// A module's name inside its crate (`xml::server`), from its path under `src/`.
    fn module_name(rel: &Path) -> String {
        let mut parts: Vec<String> = rel
            .with_extension("")
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if matches!(
            parts.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            parts.pop();
        }
        parts.join("::")
    }

    /// The modules of the crate whose `src` is `dir`, each with the modules of the same crate
    /// its code (not its unit tests, not its comments) names through `crate::` or `super::`.
    fn module_refs(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                if p.extension().is_none_or(|x| x != "rs") {
                    continue;
                }
                let name = module_name(p.strip_prefix(dir).unwrap());
                let text = std::fs::read_to_string(&p).unwrap();
                let code = text
                    .split("#[cfg(test)]\nmod tests")
                    .next()
                    .unwrap_or_default();
                let parent = name.rsplit_once("::").map_or("", |(a, _)| a).to_string();
                let mut refs = BTreeSet::new();
                for line in code.lines() {
                    let line = line.split("//").next().unwrap_or_default();
                    for (key, base) in [("crate::", String::new()), ("super::", parent.clone())] {
                        for (i, _) in line.match_indices(key) {
                            let rest = &line[i + key.len()..];
                            let first: String = rest
                                .chars()
                                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                                .collect();
                            if first.is_empty() {
                                continue;
                            }
                            let first_len = first.len();
                            let m = if base.is_empty() {
                                first
                            } else {
                                format!("{base}::{first}")
                            };
                            refs.insert(m.clone());
                            // `crate::xml::server`: the submodule too.
                            let sub: String = rest[first_len..]
                                .strip_prefix("::")
                                .unwrap_or_default()
                                .chars()
                                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                                .collect();
                            if !sub.is_empty() {
                                refs.insert(format!("{m}::{sub}"));
                            }
                        }
                    }
                }
                out.insert(name, refs);
            }
        }
        out
    }

    /// The pairs of modules in `refs` that use each other (a module and its own submodule
    /// excepted).
    fn mutual(refs: &BTreeMap<String, BTreeSet<String>>) -> Vec<(String, String)> {
        let mut found = Vec::new();
        for (a, ra) in refs {
            for b in ra {
                let nested = a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"));
                if a < b && !nested && refs.get(b).is_some_and(|rb| rb.contains(a)) {
                    found.push((a.clone(), b.clone()));
                }
            }
        }
        found
    }

    /// Modules of one crate that use each other. Shared items belong in a leaf module both
    /// sides use (errors, the clock, the read view, the appender's state, packet builders),
    /// so each module can be read and changed with what it depends on below it.
    #[test]
    fn no_two_modules_of_a_crate_use_each_other() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates");
        let mut found = Vec::new();
        for krate in std::fs::read_dir(&root).unwrap().flatten() {
            let k = krate.file_name().to_string_lossy().into_owned();
            for (a, b) in mutual(&module_refs(&krate.path().join("src"))) {
                found.push((k.clone(), a, b));
            }
        }
        assert!(
            found.is_empty(),
            "modules that use each other (move what they share into a leaf module): {found:?}"
        );
    }

    /// The checker above finds a pair that uses each other, through `crate::` and `super::`,
    /// and leaves a module and its submodule alone.
    #[test]
    fn the_cycle_checker_sees_a_cycle() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        std::fs::create_dir_all(src.join("net")).unwrap();
        std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod net;\n").unwrap();
        std::fs::write(src.join("a.rs"), "use crate::b::Thing;\n").unwrap();
        std::fs::write(src.join("b.rs"), "pub fn f() { crate::a::g() }\n").unwrap();
        std::fs::write(src.join("net/mod.rs"), "use self::wire::X;\nmod wire;\n").unwrap();
        std::fs::write(src.join("net/wire.rs"), "use super::Y; // crate::a\n").unwrap();
        let found = mutual(&module_refs(src));
        assert_eq!(found, vec![("a".to_string(), "b".to_string())]);
    }
}
