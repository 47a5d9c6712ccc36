//! NUL framing of the Agent XML API: every packet, both ways, is one XML document followed by
//! a single `\0`; there is no length prefix.
//!
//! Design: [`FrameDecoder::push`] scans the bytes as they arrive. Finished packets go to a
//! queue (each at most `cap` bytes); only the packet still being received is buffered, and it
//! is never allowed past `cap` bytes: the moment it would, it is dropped, one
//! [`FrameError::TooLarge`] is queued in its place and the rest of it is skipped up to its NUL.
//! So memory stays bounded by `cap` plus what the caller itself pushed, whatever the peer
//! sends, and one oversized packet does not cost the connection: the next one decodes. Empty
//! and whitespace-only packets (stray NULs, a newline after a NUL) are skipped.

use std::collections::VecDeque;

/// Why a packet was refused.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The packet outgrew the decoder's cap (its bytes are skipped).
    #[error("packet larger than {cap} bytes")]
    TooLarge { cap: usize },
}

/// Splits a byte stream on NUL; holds at most `cap` bytes of an unfinished packet.
#[derive(Debug)]
pub struct FrameDecoder {
    /// The unfinished packet (never longer than `cap`).
    buf: Vec<u8>,
    /// The largest packet accepted, NUL excluded.
    cap: usize,
    /// Skipping the rest of an oversized packet, up to its NUL.
    discarding: bool,
    /// Finished packets and errors, in stream order.
    ready: VecDeque<Result<Vec<u8>, FrameError>>,
}

impl FrameDecoder {
    /// A decoder refusing packets longer than `cap` bytes (the NUL not counted).
    pub fn new(cap: usize) -> FrameDecoder {
        FrameDecoder {
            buf: Vec::new(),
            cap,
            discarding: false,
            ready: VecDeque::new(),
        }
    }

    /// Feeds bytes read from the socket.
    pub fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (segment, ended) = match bytes.iter().position(|&b| b == 0) {
                Some(nul) => {
                    let segment = &bytes[..nul];
                    bytes = &bytes[nul + 1..];
                    (segment, true)
                }
                None => (std::mem::take(&mut bytes), false),
            };
            self.take_segment(segment, ended);
        }
    }

    /// One run of bytes without NUL; `ended` when a NUL followed it.
    fn take_segment(&mut self, segment: &[u8], ended: bool) {
        if self.discarding {
            self.discarding = !ended;
            return;
        }
        if segment.len() > self.cap - self.buf.len() {
            self.ready
                .push_back(Err(FrameError::TooLarge { cap: self.cap }));
            self.buf = Vec::new();
            self.discarding = !ended;
            return;
        }
        self.grow_for(segment.len());
        self.buf.extend_from_slice(segment);
        if ended {
            let packet = std::mem::take(&mut self.buf);
            if !packet
                .iter()
                .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            {
                self.ready.push_back(Ok(packet));
            }
        }
    }

    /// Reserves room for `more` bytes, doubling as usual but never past `cap`.
    fn grow_for(&mut self, more: usize) {
        let needed = self.buf.len() + more;
        if needed > self.buf.capacity() {
            let target = needed
                .max(self.buf.capacity().saturating_mul(2))
                .min(self.cap);
            self.buf.reserve_exact(target - self.buf.len());
        }
    }

    /// The next complete packet (without its NUL), or `Err(TooLarge)` once for a packet that
    /// outgrew the cap — its bytes are then skipped up to and including its NUL, and decoding
    /// goes on with the next packet — or `None` when more bytes are needed. Empty packets and
    /// whitespace-only packets are skipped.
    pub fn next_packet(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        self.ready.pop_front()
    }

    /// Bytes held of an unfinished packet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Appends the NUL terminator.
pub fn frame(mut packet: Vec<u8>) -> Vec<u8> {
    packet.push(0);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    /// Every packet of the corpus (file contents, which hold no NUL), sorted by file name.
    fn corpus() -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/xml-corpus");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("corpus directory")
            .map(|e| e.expect("corpus entry").path())
            .collect();
        files.sort();
        let packets: Vec<Vec<u8>> = files
            .iter()
            .map(|f| std::fs::read(f).expect("corpus file"))
            .collect();
        assert!(packets.len() >= 12);
        assert!(packets.iter().all(|p| !p.contains(&0) && !p.is_empty()));
        packets
    }

    fn stream(packets: &[Vec<u8>]) -> Vec<u8> {
        packets.iter().flat_map(|p| frame(p.clone())).collect()
    }

    fn drain(d: &mut FrameDecoder) -> Vec<Result<Vec<u8>, FrameError>> {
        std::iter::from_fn(|| d.next_packet()).collect()
    }

    fn ok(packets: &[&[u8]]) -> Vec<Result<Vec<u8>, FrameError>> {
        packets.iter().map(|p| Ok(p.to_vec())).collect()
    }

    #[test]
    fn frame_appends_one_nul() {
        assert_eq!(frame(b"<packet/>".to_vec()), b"<packet/>\0");
        assert_eq!(frame(Vec::new()), b"\0");
    }

    #[test]
    fn one_packet_byte_by_byte() {
        let packets = corpus();
        let mut d = FrameDecoder::new(1 << 16);
        let mut got = Vec::new();
        for (i, b) in stream(&packets[..1]).iter().enumerate() {
            assert_eq!(d.pending(), i);
            d.push(std::slice::from_ref(b));
            got.extend(drain(&mut d));
        }
        assert_eq!(got, vec![Ok(packets[0].clone())]);
        assert_eq!(d.pending(), 0);

        // The whole corpus, byte by byte.
        let mut d = FrameDecoder::new(1 << 16);
        let mut got = Vec::new();
        for b in stream(&packets) {
            d.push(&[b]);
            got.extend(drain(&mut d));
        }
        assert_eq!(got, packets.into_iter().map(Ok).collect::<Vec<_>>());
    }

    #[test]
    fn three_pipelined_packets_in_one_push() {
        let mut d = FrameDecoder::new(1024);
        assert_eq!(d.next_packet(), None);
        d.push(b"<packet id=\"1\"/>\0<packet id=\"2\"/>\0<packet id=\"3\"/>\0<packet id=");
        assert_eq!(
            drain(&mut d),
            ok(&[
                b"<packet id=\"1\"/>",
                b"<packet id=\"2\"/>",
                b"<packet id=\"3\"/>"
            ])
        );
        assert_eq!(d.next_packet(), None);
        assert_eq!(d.pending(), b"<packet id=".len());
        d.push(b"\"4\"/>\0");
        assert_eq!(drain(&mut d), ok(&[b"<packet id=\"4\"/>"]));
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn empty_and_blank_packets_are_skipped() {
        let mut d = FrameDecoder::new(1024);
        d.push(b"\0\0<a/>\0\0\0\n\0 \r\n\t\0<b/>\0\n");
        assert_eq!(drain(&mut d), ok(&[b"<a/>", b"<b/>"]));
        assert_eq!(d.pending(), 1);
        d.push(b"<c/>\0");
        assert_eq!(
            drain(&mut d),
            ok(&[b"\n<c/>"]),
            "leading whitespace is the parser's business"
        );
        d.push(b"");
        assert_eq!(d.next_packet(), None);
    }

    #[test]
    fn oversized_packet_is_refused_once_and_skipped() {
        let cap = 16;
        let mut d = FrameDecoder::new(cap);
        // Exactly cap bytes is fine, cap + 1 is not.
        d.push(&frame(vec![b'a'; cap]));
        d.push(&frame(vec![b'b'; cap + 1]));
        d.push(b"<ok/>\0");
        assert_eq!(
            drain(&mut d),
            vec![
                Ok(vec![b'a'; cap]),
                Err(FrameError::TooLarge { cap }),
                Ok(b"<ok/>".to_vec())
            ]
        );

        // Growing over several pushes: reported as soon as it outgrows the cap, once.
        d.push(b"<packet id=\"b\">");
        assert_eq!(d.next_packet(), None);
        d.push(b"<data>0123456789");
        assert_eq!(d.next_packet(), Some(Err(FrameError::TooLarge { cap })));
        assert_eq!(d.pending(), 0);
        for _ in 0..100 {
            d.push(b"more bytes of the same packet");
            assert_eq!(d.next_packet(), None);
            assert_eq!(d.pending(), 0);
        }
        d.push(b"</data></packet>\0<next/>\0<after");
        assert_eq!(drain(&mut d), ok(&[b"<next/>"]));
        assert_eq!(d.pending(), b"<after".len());
        assert_eq!(
            FrameError::TooLarge { cap }.to_string(),
            "packet larger than 16 bytes"
        );

        // A zero cap refuses everything but blank packets.
        let mut d = FrameDecoder::new(0);
        d.push(b"\0x\0\0y");
        assert_eq!(
            drain(&mut d),
            vec![
                Err(FrameError::TooLarge { cap: 0 }),
                Err(FrameError::TooLarge { cap: 0 })
            ]
        );
    }

    #[test]
    fn memory_stays_bounded_without_nuls() {
        let cap = 1 << 20;
        let mut d = FrameDecoder::new(cap);
        let piece = vec![b'x'; 64 << 10];
        let mut errors = 0;
        for _ in 0..(10 << 20) / piece.len() {
            d.push(&piece);
            assert!(d.pending() <= cap + 1, "{}", d.pending());
            assert!(d.buf.capacity() <= cap + 1, "{}", d.buf.capacity());
            errors += drain(&mut d).len();
        }
        assert_eq!(errors, 1);
        d.push(b"tail\0<packet/>\0");
        assert_eq!(drain(&mut d), ok(&[b"<packet/>"]));

        // One multi-megabyte chunk without NUL.
        let mut d = FrameDecoder::new(cap);
        d.push(&vec![b'y'; 8 << 20]);
        assert!(d.pending() <= cap + 1 && d.buf.capacity() <= cap + 1);
        assert_eq!(drain(&mut d), vec![Err(FrameError::TooLarge { cap })]);
    }

    /// What the decoder must yield for a stream: every NUL-terminated segment that is not blank,
    /// refused when over the cap; an unterminated tail only when it is already over the cap.
    fn model(stream: &[u8], cap: usize) -> Vec<Result<Vec<u8>, FrameError>> {
        let mut segments: Vec<&[u8]> = stream.split(|&b| b == 0).collect();
        let tail = segments.pop().unwrap_or_default();
        let mut out: Vec<Result<Vec<u8>, FrameError>> = segments
            .into_iter()
            .filter_map(|s| {
                if s.len() > cap {
                    Some(Err(FrameError::TooLarge { cap }))
                } else if s.iter().all(|b| b" \t\r\n".contains(b)) {
                    None
                } else {
                    Some(Ok(s.to_vec()))
                }
            })
            .collect();
        if tail.len() > cap {
            out.push(Err(FrameError::TooLarge { cap }));
        }
        out
    }

    /// Splits `bytes` at the given cut points.
    fn chunks(bytes: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        at.push(0);
        at.push(bytes.len());
        at.sort_unstable();
        at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
    }

    fn config(cases: u32) -> ProptestConfig {
        ProptestConfig {
            cases,
            failure_persistence: None,
            rng_seed: RngSeed::Fixed(0x00f4_a3e5_0000_0001),
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config(2_000))]

        #[test]
        fn corpus_survives_any_chunking(
            order in Just(()).prop_perturb(|_, mut rng| {
                let n = corpus().len();
                (0..n * 2).map(|_| rng.random_range(0..n)).collect::<Vec<usize>>()
            }),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..64),
        ) {
            let all = corpus();
            let packets: Vec<Vec<u8>> = order.iter().map(|&i| all[i].clone()).collect();
            let bytes = stream(&packets);
            let cap = all.iter().map(Vec::len).max().unwrap_or(0);
            let mut d = FrameDecoder::new(cap);
            let mut got = Vec::new();
            for chunk in chunks(&bytes, &cuts) {
                d.push(&chunk);
                prop_assert!(d.pending() <= cap);
                got.extend(drain(&mut d));
            }
            prop_assert_eq!(d.pending(), 0);
            prop_assert_eq!(got, packets.into_iter().map(Ok).collect::<Vec<_>>());
        }

        #[test]
        fn any_stream_matches_the_model(
            bytes in prop::collection::vec(
                prop_oneof![3 => Just(0u8), 2 => Just(b' '), 1 => Just(b'\n'), 10 => any::<u8>()],
                0..300,
            ),
            cap in 0usize..40,
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..32),
        ) {
            let mut d = FrameDecoder::new(cap);
            let mut got = Vec::new();
            for chunk in chunks(&bytes, &cuts) {
                d.push(&chunk);
                prop_assert!(d.pending() <= cap);
                got.extend(drain(&mut d));
            }
            prop_assert_eq!(got, model(&bytes, cap));
        }
    }
}
