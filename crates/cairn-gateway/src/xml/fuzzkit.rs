//! What the XML adapter's property tests share: their settings and the seed corpus
//! (`tests/xml-corpus/`, one request packet per file, no NUL).
//!
//! The settings are `cases` cases from a fixed seed, so that every run (CI too) tries the same
//! inputs, and no failure files. For long fuzz runs (`scripts/fuzz-xml.sh`) two environment
//! variables override them: `CAIRN_FUZZ_CASES=N` replaces the case count and
//! `CAIRN_FUZZ_SEED=S` (a u64, decimal or `0x` hex) the seed, so that new inputs are explored.
//! A failure found that way reproduces with the same values:
//! `CAIRN_FUZZ_SEED=S CAIRN_FUZZ_CASES=N cargo test -p cairn-gateway --lib <test name>`.

use proptest::test_runner::{Config, RngSeed};

/// `cases` cases from `seed`, unless the environment overrides them (see the module note).
pub fn config(cases: u32, seed: u64) -> Config {
    Config {
        cases: fuzz_env("CAIRN_FUZZ_CASES").map_or(cases, |n| {
            u32::try_from(n).unwrap_or_else(|_| panic!("CAIRN_FUZZ_CASES: {n} is too large"))
        }),
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(fuzz_env("CAIRN_FUZZ_SEED").unwrap_or(seed)),
        ..Config::default()
    }
}

/// A u64 environment variable (decimal or `0x` hex); `None` when unset or empty, a panic
/// when it does not parse (a typo must not quietly fall back to the default).
fn fuzz_env(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let parsed = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => value.replace('_', "").parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={value:?}: not a u64: {e}")))
}

/// Every corpus file as (name, bytes), sorted by name; read once per process (the property
/// tests use it in every case).
pub fn corpus() -> &'static [(String, Vec<u8>)] {
    static FILES: std::sync::OnceLock<Vec<(String, Vec<u8>)>> = std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/xml-corpus");
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .expect("corpus directory")
            .map(|entry| {
                let path = entry.expect("corpus entry").path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&path).expect("corpus file"))
            })
            .collect();
        files.sort();
        assert!(files.len() >= 12, "corpus too small: {}", files.len());
        assert!(files.iter().all(|(_, p)| !p.contains(&0) && !p.is_empty()));
        files
    })
}

/// The corpus file `name`.
pub fn corpus_file(name: &str) -> Vec<u8> {
    corpus()
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no corpus file {name}"))
        .1
        .clone()
}
