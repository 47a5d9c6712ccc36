//! Reading objects for a backup: metadata into an [`Entry`], sparse holes, and data regions.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::Path;

use cairn_core::{Entry, EntryKind};

use crate::error::FsError;

/// Nanoseconds since the epoch from the seconds and nanoseconds `stat` reports.
fn ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// Reads the metadata of the object at `abs` (already `lstat`ed into `md`) into an entry
/// named `rel`: kind, mode, owner, times, inode, size (files), device number (devices),
/// symlink target (raw bytes) and every readable extended attribute.
///
/// Hardlinks are not detected here: the caller sees every name of an inode and decides which
/// one is the first.
pub fn read_entry(abs: &Path, rel: Vec<u8>, md: &Metadata) -> Result<Entry, FsError> {
    let ft = md.file_type();
    let kind = if ft.is_file() {
        EntryKind::File
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else if ft.is_char_device() {
        EntryKind::CharDevice
    } else if ft.is_block_device() {
        EntryKind::BlockDevice
    } else if ft.is_socket() {
        EntryKind::Socket
    } else {
        return Err(FsError::Invalid {
            path: abs.display().to_string(),
            why: format!("unknown file type (mode {:o})", md.mode()),
        });
    };
    let mut e = Entry::new(rel, kind);
    e.mode = md.mode() & 0o7777;
    e.uid = md.uid();
    e.gid = md.gid();
    e.mtime_ns = ns(md.mtime(), md.mtime_nsec());
    e.atime_ns = ns(md.atime(), md.atime_nsec());
    e.ctime_ns = ns(md.ctime(), md.ctime_nsec());
    e.ino = md.ino();
    match kind {
        EntryKind::File => e.size = md.len(),
        EntryKind::CharDevice | EntryKind::BlockDevice => e.rdev = md.rdev(),
        EntryKind::Symlink => {
            e.link_target = std::fs::read_link(abs)
                .map_err(|err| FsError::io(abs.display().to_string(), "read the symlink", err))?
                .into_os_string()
                .into_vec();
        }
        _ => {}
    }
    e.xattrs = read_xattrs(abs)
        .map_err(|err| FsError::io(abs.display().to_string(), "read extended attributes", err))?;
    Ok(e)
}

/// Reads every extended attribute of `abs` without following a symlink, sorted by name.
/// A file system without extended attributes yields none; an attribute removed between
/// listing and reading is left out.
pub fn read_xattrs(abs: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = match xattr::list(abs) {
        Ok(n) => n,
        Err(e) if unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        match xattr::get(abs, &name) {
            Ok(Some(v)) => out.push((name.as_bytes().to_vec(), v)),
            Ok(None) => {}
            Err(e) if unsupported(&e) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENOSYS))
        || e.raw_os_error() == Some(libc::EOPNOTSUPP)
}

/// Returns the sparse holes of `file` (whose apparent size is `size`) as sorted,
/// non-overlapping, merged `(offset, length)` pairs within `0..size`.
///
/// A file with at least `size` bytes allocated has no holes and is not probed. Otherwise the
/// file is scanned with `lseek(SEEK_DATA / SEEK_HOLE)`; a file system without hole support
/// reports none. The scan moves the file offset: read the data with positional reads
/// (as [`DataReader`] does).
pub fn holes(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    if size == 0 {
        return Ok(Vec::new());
    }
    let md = file.metadata()?;
    if md.blocks().saturating_mul(512) >= size {
        return Ok(Vec::new());
    }
    let fd = file.as_raw_fd();
    let seek = |pos: u64, whence: libc::c_int| -> io::Result<Option<u64>> {
        let pos = libc::off_t::try_from(pos).map_err(io::Error::other)?;
        // SAFETY: lseek only reads its integer arguments; `fd` is borrowed from `file`.
        let r = unsafe { libc::lseek(fd, pos, whence) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                // No data (or hole) at or after `pos`: the rest is a hole up to the end.
                Some(libc::ENXIO) => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(r as u64))
    };
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let data = match seek(pos, libc::SEEK_DATA) {
            Ok(d) => d.unwrap_or(size).min(size),
            Err(e) if unsupported(&e) || e.raw_os_error() == Some(libc::EINVAL) => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(e),
        };
        if data > pos {
            match out.last_mut() {
                Some(last) if last.0 + last.1 == pos => last.1 += data - pos,
                _ => out.push((pos, data - pos)),
            }
        }
        if data >= size {
            break;
        }
        let hole = match seek(data, libc::SEEK_HOLE) {
            Ok(h) => h.unwrap_or(size).min(size),
            Err(e) if unsupported(&e) || e.raw_os_error() == Some(libc::EINVAL) => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(e),
        };
        if hole <= data {
            // The file changed under the scan; count the rest as data rather than loop.
            break;
        }
        pos = hole;
    }
    Ok(out)
}

/// Returns the data regions of a file of `size` bytes with the given holes: the complement
/// of the holes, as sorted `(offset, length)` pairs with nonzero lengths.
///
/// Holes may come unsorted, overlapping or running past `size`; they are normalised first.
pub fn data_regions(size: u64, holes: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut hs: Vec<(u64, u64)> = holes
        .iter()
        .filter(|h| h.1 > 0 && h.0 < size)
        .map(|&(off, len)| (off, off.saturating_add(len).min(size)))
        .collect();
    hs.sort_unstable();
    let mut out = Vec::new();
    let mut pos = 0u64;
    for (start, end) in hs {
        if start > pos {
            out.push((pos, start - pos));
        }
        pos = pos.max(end);
    }
    if pos < size {
        out.push((pos, size - pos));
    }
    out
}

/// Reads the concatenation of a file's data regions — everything but its holes — with
/// positional reads, so the file offset is irrelevant.
///
/// A file that shrinks while it is read ends the stream early; the caller compares the bytes
/// it got with the expected data length.
pub struct DataReader {
    file: File,
    regions: Vec<(u64, u64)>,
    idx: usize,
    within: u64,
}

impl DataReader {
    /// Reads the data of `file` (apparent size `size`) around `holes`.
    pub fn new(file: File, size: u64, holes: &[(u64, u64)]) -> DataReader {
        DataReader {
            file,
            regions: data_regions(size, holes),
            idx: 0,
            within: 0,
        }
    }

    /// Total bytes this reader yields if the file does not change.
    pub fn data_len(&self) -> u64 {
        self.regions.iter().map(|r| r.1).sum()
    }

    /// Returns the file.
    pub fn into_inner(self) -> File {
        self.file
    }
}

impl Read for DataReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while let Some(&(off, len)) = self.regions.get(self.idx) {
            if self.within >= len {
                self.idx += 1;
                self.within = 0;
                continue;
            }
            let want = usize::try_from(len - self.within)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let got = self.file.read_at(&mut buf[..want], off + self.within)?;
            if got == 0 {
                // The file is shorter than when it was measured.
                self.idx = self.regions.len();
                return Ok(0);
            }
            self.within += got as u64;
            return Ok(got);
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn data_regions_complement_the_holes() {
        assert_eq!(data_regions(0, &[]), vec![]);
        assert_eq!(data_regions(10, &[]), vec![(0, 10)]);
        assert_eq!(data_regions(10, &[(0, 10)]), vec![]);
        assert_eq!(data_regions(20, &[(5, 5), (15, 5)]), vec![(0, 5), (10, 5)]);
        assert_eq!(data_regions(20, &[(0, 5)]), vec![(5, 15)]);
        // Unsorted, overlapping, adjacent, empty and out-of-range holes.
        assert_eq!(
            data_regions(
                30,
                &[(12, 3), (2, 4), (4, 4), (8, 2), (20, 0), (25, 100), (40, 5)]
            ),
            vec![(0, 2), (10, 2), (15, 10)]
        );
    }

    #[test]
    fn data_regions_and_holes_add_up() {
        let size = 1000u64;
        let holes = [(100, 50), (300, 1), (999, 1)];
        let data: u64 = data_regions(size, &holes).iter().map(|r| r.1).sum();
        assert_eq!(data + 52, size);
    }

    fn sparse_file(dir: &Path) -> (File, u64) {
        let p = dir.join("sparse");
        let mut f = File::create(&p).unwrap();
        let size = 8u64 << 20;
        f.set_len(size).unwrap();
        f.write_all(&[1u8; 4096]).unwrap();
        f.write_all_at(&[2u8; 8192], 4 << 20).unwrap();
        f.sync_all().unwrap();
        (File::open(&p).unwrap(), size)
    }

    #[test]
    fn finds_holes_in_a_sparse_file() {
        let t = tempfile::tempdir().unwrap();
        let (f, size) = sparse_file(t.path());
        let h = holes(&f, size).unwrap();
        // File systems allocate in blocks of at least 4 KiB; the layout is the same on all
        // the ones that support holes.
        assert_eq!(
            h,
            vec![
                (4096, (4 << 20) - 4096),
                ((4 << 20) + 8192, size - (4 << 20) - 8192)
            ]
        );
    }

    #[test]
    fn a_dense_file_has_no_holes() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("dense");
        std::fs::write(&p, vec![7u8; 100_000]).unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(holes(&f, 100_000).unwrap(), vec![]);
        assert_eq!(holes(&f, 0).unwrap(), vec![]);
    }

    #[test]
    fn data_reader_skips_holes() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, b"abcde\0\0\0\0\0fghij\0\0\0\0\0").unwrap();
        let mut r = DataReader::new(File::open(&p).unwrap(), 20, &[(5, 5), (15, 5)]);
        assert_eq!(r.data_len(), 10);
        let mut out = Vec::new();
        // Tiny reads cross region boundaries one byte at a time.
        let mut b = [0u8; 3];
        loop {
            let n = r.read(&mut b).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&b[..n]);
        }
        assert_eq!(out, b"abcdefghij");
    }

    #[test]
    fn data_reader_reads_a_real_sparse_file() {
        let t = tempfile::tempdir().unwrap();
        let (f, size) = sparse_file(t.path());
        let h = holes(&f, size).unwrap();
        let mut out = Vec::new();
        DataReader::new(f, size, &h).read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 4096 + 8192);
        assert!(out[..4096].iter().all(|b| *b == 1));
        assert!(out[4096..].iter().all(|b| *b == 2));
    }

    #[test]
    fn data_reader_stops_when_the_file_shrank() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let mut out = Vec::new();
        DataReader::new(File::open(&p).unwrap(), 10, &[])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"abc");
    }

    #[test]
    fn reads_metadata_of_each_kind() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        std::fs::write(&f, b"hello").unwrap();
        std::os::unix::fs::symlink("target\u{1}x", t.path().join("l")).unwrap();
        nix::unistd::mkfifo(
            &t.path().join("p"),
            nix::sys::stat::Mode::from_bits_truncate(0o640),
        )
        .unwrap();
        let have_xattrs = xattr::set(&f, "user.b", b"2").is_ok();
        if have_xattrs {
            xattr::set(&f, "user.a", b"\x00\xff").unwrap();
        }
        let rd = |name: &str| {
            let p = t.path().join(name);
            let md = std::fs::symlink_metadata(&p).unwrap();
            read_entry(&p, name.as_bytes().to_vec(), &md).unwrap()
        };
        let e = rd("f");
        assert_eq!(e.kind, EntryKind::File);
        assert_eq!(e.size, 5);
        assert_eq!(e.path, b"f");
        let md = std::fs::metadata(&f).unwrap();
        assert_eq!(e.mtime_ns, md.mtime() * 1_000_000_000 + md.mtime_nsec());
        assert_eq!(e.ino, md.ino());
        if have_xattrs {
            assert_eq!(
                e.xattrs,
                vec![
                    (b"user.a".to_vec(), b"\x00\xff".to_vec()),
                    (b"user.b".to_vec(), b"2".to_vec())
                ]
            );
        } else {
            println!("note: no user xattrs on this file system");
        }
        let l = rd("l");
        assert_eq!(l.kind, EntryKind::Symlink);
        assert_eq!(l.link_target, b"target\x01x");
        assert_eq!(l.size, 0);
        let p = rd("p");
        assert_eq!(p.kind, EntryKind::Fifo);
        let d = rd("");
        assert_eq!(d.kind, EntryKind::Dir);
    }
}
