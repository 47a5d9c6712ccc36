//! Change detection: may a file's chunk list be reused from the parent backup unread?

use crate::manifest::{Entry, EntryKind};

/// Returns true when `now` (fresh metadata, no content yet) describes the same file content
/// as `before` (from the parent manifest), so its chunks can be reused without reading it.
///
/// The rule is the classic one (restic, borg, PBS): same type, size, mtime, ctime, inode,
/// mode, owner. ctime catches writes that restored an old mtime; the inode catches a file
/// replaced by another with identical times.
pub fn unchanged(before: &Entry, now: &Entry) -> bool {
    before.path == now.path
        && matches!(before.kind, EntryKind::File | EntryKind::Hardlink)
        && before.kind == now.kind
        && before.size == now.size
        && before.mtime_ns == now.mtime_ns
        && before.ctime_ns == now.ctime_ns
        && before.ino == now.ino
        && before.mode == now.mode
        && before.uid == now.uid
        && before.gid == now.gid
        && (before.kind != EntryKind::Hardlink || before.link_target == now.link_target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChunkId, ChunkRef};

    fn f() -> Entry {
        let mut e = Entry::new(b"a".to_vec(), EntryKind::File);
        e.size = 5;
        e.mtime_ns = 10;
        e.ctime_ns = 11;
        e.ino = 7;
        e.mode = 0o644;
        e.chunks = vec![ChunkRef {
            id: ChunkId::of(b"x"),
            len: 5,
        }];
        e
    }

    #[test]
    fn same_metadata_is_unchanged() {
        let mut now = f();
        now.chunks.clear();
        assert!(unchanged(&f(), &now));
    }

    #[test]
    fn any_relevant_field_changes_it() {
        let muts: Vec<fn(&mut Entry)> = vec![
            |e| e.size += 1,
            |e| e.mtime_ns += 1,
            |e| e.ctime_ns += 1,
            |e| e.ino += 1,
            |e| e.mode = 0o600,
            |e| e.uid = 1,
            |e| e.gid = 1,
            |e| e.kind = EntryKind::Symlink,
            |e| e.path = b"b".to_vec(),
        ];
        for m in muts {
            let mut now = f();
            m(&mut now);
            assert!(!unchanged(&f(), &now));
        }
        let mut d = f();
        d.kind = EntryKind::Dir;
        assert!(!unchanged(&d, &d.clone()));
    }
}
