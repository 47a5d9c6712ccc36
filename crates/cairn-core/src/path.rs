//! Paths inside a backup: raw bytes, relative, `/`-separated, never escaping the root.
//!
//! Names are kept as bytes because Linux file names need not be UTF-8. Every path that comes
//! out of a manifest is checked here before a restore touches the file system: no absolute
//! paths, no `..`, no `.`, no empty components, no NUL. The root of the tree is the empty path.

use std::cmp::Ordering;

/// Why a manifest path was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("path {0:?} is absolute")]
    Absolute(String),
    #[error("path {0:?} has a '..', '.' or empty component")]
    Traversal(String),
    #[error("path {0:?} contains a NUL byte")]
    Nul(String),
}

/// Shows a raw path for messages (lossy: only for humans).
pub fn display(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// Checks that `path` is a safe relative path (the empty path is the root).
pub fn validate(path: &[u8]) -> Result<(), PathError> {
    if path.is_empty() {
        return Ok(());
    }
    if path[0] == b'/' {
        return Err(PathError::Absolute(display(path)));
    }
    if path.contains(&0) {
        return Err(PathError::Nul(display(path)));
    }
    for comp in path.split(|b| *b == b'/') {
        if comp.is_empty() || comp == b"." || comp == b".." {
            return Err(PathError::Traversal(display(path)));
        }
    }
    Ok(())
}

/// Returns the parent of a relative path (`a/b` → `a`, `a` → the root, ``).
pub fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

/// Joins a relative directory path and a name.
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(dir.len() + 1 + name.len());
    out.extend_from_slice(dir);
    if !dir.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

/// Orders paths the way a depth-first walk with byte-sorted directory entries visits them:
/// component by component. Manifests are written in this order, which lets a new walk be
/// merged against the parent backup's manifest without holding either in memory.
pub fn walk_cmp(a: &[u8], b: &[u8]) -> Ordering {
    let mut ai = a.split(|c| *c == b'/').filter(|c| !c.is_empty());
    let mut bi = b.split(|c| *c == b'/').filter(|c| !c.is_empty());
    loop {
        match (ai.next(), bi.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => match x.cmp(y) {
                Ordering::Equal => continue,
                o => return o,
            },
        }
    }
}

/// True when `path` equals `prefix` or lies below it.
pub fn is_within(path: &[u8], prefix: &[u8]) -> bool {
    prefix.is_empty()
        || path == prefix
        || (path.len() > prefix.len() && path.starts_with(prefix) && path[prefix.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn refuses_escapes() {
        for bad in [
            &b"/etc/passwd"[..],
            b"..",
            b"a/../../b",
            b"a/./b",
            b"a//b",
            b"a/",
            b"a\0b",
            b"./a",
        ] {
            assert!(validate(bad).is_err(), "{:?} accepted", display(bad));
        }
        for ok in [&b""[..], b"a", b"a/b", b"..a", b"a..", b"\xff\xfe/x"] {
            assert!(validate(ok).is_ok(), "{:?} refused", display(ok));
        }
    }

    #[test]
    fn parent_and_join() {
        assert_eq!(parent(b"a/b/c"), b"a/b");
        assert_eq!(parent(b"a"), b"");
        assert_eq!(join(b"", b"a"), b"a");
        assert_eq!(join(b"a", b"b"), b"a/b");
    }

    #[test]
    fn walk_order_puts_subtrees_before_siblings_with_longer_names() {
        let mut v: Vec<&[u8]> = vec![b"a.c", b"a/b", b"a", b"", b"a/b/c", b"b"];
        v.sort_by(|a, b| walk_cmp(a, b));
        assert_eq!(v, vec![&b""[..], b"a", b"a/b", b"a/b/c", b"a.c", b"b"]);
    }

    #[test]
    fn within() {
        assert!(is_within(b"a/b", b"a"));
        assert!(is_within(b"a", b"a"));
        assert!(!is_within(b"ab", b"a"));
        assert!(is_within(b"x", b""));
    }

    proptest! {
        #[test]
        fn validated_paths_never_escape(p in proptest::collection::vec(any::<u8>(), 0..40)) {
            if validate(&p).is_ok() {
                prop_assert!(!p.starts_with(b"/"));
                prop_assert!(!p.split(|b| *b == b'/').any(|c| c == b".."));
            }
        }

        #[test]
        fn walk_cmp_is_a_total_order(a in "[ab/]{0,6}", b in "[ab/]{0,6}", c in "[ab/]{0,6}") {
            let (a, b, c) = (a.as_bytes(), b.as_bytes(), c.as_bytes());
            prop_assert_eq!(walk_cmp(a, b), walk_cmp(b, a).reverse());
            if walk_cmp(a, b).is_le() && walk_cmp(b, c).is_le() {
                prop_assert!(walk_cmp(a, c).is_le());
            }
        }
    }
}
