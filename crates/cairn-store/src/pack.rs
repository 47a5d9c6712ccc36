//! Pack segment files: creation, positional reads and writes, and sequential scans.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use cairn_chunker::EncodedChunk;
use cairn_core::ChunkId;

use crate::error::StoreError;
use crate::format::{FileHeader, Loc, RecordHeader, RECORD_HEADER_LEN, RECORD_MAGIC};

/// How much a scan reads at a time.
const READ_AHEAD: usize = 1024 * 1024;

/// Returns the path of segment `id` in the `packs` directory.
pub(crate) fn pack_path(packs: &Path, id: u32) -> PathBuf {
    packs.join(format!("{id:08x}.pack"))
}

/// Returns the segment id of a pack file name (`0000002a.pack` → 42).
pub(crate) fn parse_pack_name(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(".pack")?;
    if stem.len() != 8 || !stem.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(stem, 16).ok()
}

/// Makes the directory's entries (created or deleted files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// One open pack file. Reads and writes are positional (`pread`/`pwrite`), so one handle is
/// shared by every reader and the single appender without a lock or a shared cursor.
#[derive(Debug)]
pub(crate) struct Segment {
    pub id: u32,
    pub path: PathBuf,
    pub file: File,
}

impl Segment {
    /// Creates segment `id` with its file header. Nothing is synced: the first commit that
    /// appends to it syncs the file and the directory.
    pub fn create(packs: &Path, id: u32) -> io::Result<Segment> {
        let path = pack_path(packs, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        if let Err(e) = file.write_all_at(&FileHeader::encode(id), 0) {
            // Best effort: a leftover header-only file is removed by the next recovery anyway.
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(Segment { id, path, file })
    }

    /// Reads the record at `loc` and checks its framing: header sanity, that it holds `id`
    /// with the lengths the index expects, and its checksum. Content verification (BLAKE3)
    /// is the caller's job.
    pub fn read_record(&self, id: &ChunkId, loc: &Loc) -> Result<EncodedChunk, StoreError> {
        let corrupt = |why: String| StoreError::Corrupt { id: *id, why };
        let read = |buf: &mut [u8], at: u64| {
            self.file.read_exact_at(buf, at).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    corrupt(format!(
                        "its record at offset {} of {} runs past the end of the file",
                        loc.offset,
                        self.path.display()
                    ))
                } else {
                    StoreError::io("reading", &self.path, e)
                }
            })
        };
        let mut hb = [0u8; RECORD_HEADER_LEN];
        read(&mut hb, loc.offset)?;
        let h = RecordHeader::parse(&hb).map_err(|why| {
            corrupt(format!(
                "{why} in the record at offset {} of {}",
                loc.offset,
                self.path.display()
            ))
        })?;
        if h.id != *id {
            return Err(corrupt(format!(
                "the record at offset {} of {} holds chunk {} instead",
                loc.offset,
                self.path.display(),
                h.id
            )));
        }
        if h.loc(loc.segment, loc.offset) != *loc {
            return Err(corrupt(format!(
                "the record at offset {} of {} disagrees with the index about its lengths",
                loc.offset,
                self.path.display()
            )));
        }
        // `parse` bounded stored_len, so this allocation is at most MAX_STORED_LEN.
        let mut data = vec![0u8; h.stored_len as usize];
        read(&mut data, loc.offset + RECORD_HEADER_LEN as u64)?;
        if !h.crc_matches(&data) {
            return Err(corrupt(format!(
                "checksum mismatch in the record at offset {} of {}",
                loc.offset,
                self.path.display()
            )));
        }
        Ok(EncodedChunk {
            id: *id,
            raw_len: h.raw_len,
            codec: h.codec,
            data: data.into(),
        })
    }
}

/// What a [`Scanner`] found next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scanned {
    /// A complete record whose header is sane and whose checksum matches.
    Record { offset: u64, header: RecordHeader },
    /// Damaged bytes followed by a valid record at `to`: mid-file damage, not a torn tail.
    Gap { from: u64, to: u64 },
    /// Nothing valid from `from` to the end of the scanned range: a torn tail.
    Torn { from: u64 },
    /// The scan reached the end of its range.
    End,
}

/// Walks the records of a pack file range in order.
///
/// A record is accepted only when its magic, codec and lengths are sane, it lies entirely
/// within the range and its CRC matches. After an invalid record the scanner searches
/// forward for the next valid one, so that damage in the middle of a file (reported as a
/// [`Scanned::Gap`]) is never mistaken for a torn tail, which recovery cuts off.
pub(crate) struct Scanner<'a> {
    ra: ReadAhead<'a>,
    pos: u64,
    end: u64,
}

impl<'a> Scanner<'a> {
    pub fn new(file: &'a File, start: u64, end: u64) -> Scanner<'a> {
        Scanner {
            ra: ReadAhead {
                file,
                end,
                buf: Vec::new(),
                start: 0,
            },
            pos: start,
            end,
        }
    }

    pub fn next(&mut self) -> io::Result<Scanned> {
        if self.pos >= self.end {
            return Ok(Scanned::End);
        }
        let at = self.pos;
        if let Some(header) = self.try_record(at)? {
            self.pos = at + header.record_len();
            return Ok(Scanned::Record { offset: at, header });
        }
        match self.find_next(at + 1)? {
            Some(to) => {
                self.pos = to;
                Ok(Scanned::Gap { from: at, to })
            }
            None => {
                self.pos = self.end;
                Ok(Scanned::Torn { from: at })
            }
        }
    }

    /// Returns the bytes of the record just returned by [`Scanner::next`] (served from the
    /// read-ahead buffer).
    pub fn record_bytes(&mut self, offset: u64, header: &RecordHeader) -> io::Result<&[u8]> {
        self.ra.read(offset, header.record_len() as usize)
    }

    fn try_record(&mut self, at: u64) -> io::Result<Option<RecordHeader>> {
        let room = self.end - at;
        if room < RECORD_HEADER_LEN as u64 {
            return Ok(None);
        }
        let Ok(h) = RecordHeader::parse(self.ra.read(at, RECORD_HEADER_LEN)?) else {
            return Ok(None);
        };
        if h.record_len() > room {
            return Ok(None);
        }
        let rec = self.ra.read(at, h.record_len() as usize)?;
        Ok(h.crc_matches(&rec[RECORD_HEADER_LEN..]).then_some(h))
    }

    fn find_next(&mut self, from: u64) -> io::Result<Option<u64>> {
        let mut p = from;
        while p + RECORD_HEADER_LEN as u64 <= self.end {
            let n = (self.end - p).min(READ_AHEAD as u64) as usize;
            let hit = self
                .ra
                .read(p, n)?
                .windows(RECORD_MAGIC.len())
                .position(|w| w == RECORD_MAGIC);
            match hit {
                Some(i) => {
                    let candidate = p + i as u64;
                    if self.try_record(candidate)?.is_some() {
                        return Ok(Some(candidate));
                    }
                    p = candidate + 1;
                }
                // Windows overlap by three bytes so a magic split between them is found.
                None => p += (n - (RECORD_MAGIC.len() - 1)) as u64,
            }
        }
        Ok(None)
    }
}

/// A window over a file range that serves small sequential reads from one large `pread`.
struct ReadAhead<'a> {
    file: &'a File,
    end: u64,
    buf: Vec<u8>,
    start: u64,
}

impl ReadAhead<'_> {
    /// Returns `len` bytes at `at`; the caller guarantees `at + len <= end`.
    fn read(&mut self, at: u64, len: usize) -> io::Result<&[u8]> {
        let have = at >= self.start && at + len as u64 <= self.start + self.buf.len() as u64;
        if !have {
            let want = (len.max(READ_AHEAD) as u64).min(self.end - at) as usize;
            self.buf.clear();
            self.buf.resize(want, 0);
            if let Err(e) = self.file.read_exact_at(&mut self.buf, at) {
                self.buf.clear();
                return Err(e);
            }
            self.start = at;
        }
        let from = (at - self.start) as usize;
        Ok(&self.buf[from..from + len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_chunker::Codec;

    fn record(content: &[u8]) -> Vec<u8> {
        let h = RecordHeader::new(
            ChunkId::of(content),
            Codec::Raw,
            content.len() as u32,
            content,
        );
        let mut v = h.encode().to_vec();
        v.extend_from_slice(content);
        v
    }

    fn scan_all(bytes: &[u8]) -> Vec<Scanned> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, bytes).unwrap();
        let f = File::open(&p).unwrap();
        let mut s = Scanner::new(&f, 0, bytes.len() as u64);
        let mut out = vec![];
        loop {
            let x = s.next().unwrap();
            if x == Scanned::End {
                return out;
            }
            out.push(x);
        }
    }

    fn offsets(v: &[Scanned]) -> Vec<String> {
        v.iter()
            .map(|s| match s {
                Scanned::Record { offset, .. } => format!("r{offset}"),
                Scanned::Gap { from, to } => format!("g{from}-{to}"),
                Scanned::Torn { from } => format!("t{from}"),
                Scanned::End => "end".into(),
            })
            .collect()
    }

    #[test]
    fn pack_names_round_trip() {
        let p = pack_path(Path::new("/x"), 42);
        assert_eq!(p, Path::new("/x/0000002a.pack"));
        assert_eq!(parse_pack_name("0000002a.pack"), Some(42));
        assert_eq!(parse_pack_name("ffffffff.pack"), Some(u32::MAX));
        for bad in ["2a.pack", "0000002a.pak", "0000002g.pack", "+000002a.pack"] {
            assert_eq!(parse_pack_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn scanner_reads_clean_records_then_ends() {
        let (a, b) = (record(b"alpha"), record(b"beta"));
        let all = [a.clone(), b].concat();
        assert_eq!(
            offsets(&scan_all(&all)),
            vec!["r0".to_string(), format!("r{}", a.len())]
        );
    }

    #[test]
    fn scanner_reports_a_torn_tail() {
        let a = record(b"alpha");
        let b = record(b"beta beta beta");
        // Half of b: header complete, payload cut.
        let all = [a.clone(), b[..b.len() - 3].to_vec()].concat();
        assert_eq!(
            offsets(&scan_all(&all)),
            vec!["r0".to_string(), format!("t{}", a.len())]
        );
        // Trailing garbage shorter than a header.
        let all = [a.clone(), vec![0xAB; 7]].concat();
        assert_eq!(
            offsets(&scan_all(&all)),
            vec!["r0".to_string(), format!("t{}", a.len())]
        );
    }

    #[test]
    fn scanner_skips_mid_file_damage_instead_of_calling_it_torn() {
        let a = record(b"alpha");
        let mut b = record(b"beta beta beta");
        let c = record(b"gamma");
        let last = b.len() - 1;
        b[last] ^= 0xFF;
        let all = [a.clone(), b.clone(), c].concat();
        let from = a.len();
        let to = a.len() + b.len();
        assert_eq!(
            offsets(&scan_all(&all)),
            vec!["r0".to_string(), format!("g{from}-{to}"), format!("r{to}")]
        );
    }
}
