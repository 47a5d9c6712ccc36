//! The crate graph's absent edges (ARCHITECTURE.md, "Code map"), checked against each
//! `crates/*/Cargo.toml`: a dependency that must stay absent fails this test the day someone
//! adds it, instead of living on as a sentence nobody re-reads.

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
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
}
