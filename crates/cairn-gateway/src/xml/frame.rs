//! NUL framing of the Agent XML API: every packet, both ways, is one XML document followed by
//! a single `\0`; there is no length prefix.
//!
//! Design: [`FrameDecoder::push`] scans the bytes as they arrive. Finished packets go to a
//! queue (each at most `cap` bytes); only the packet still being received is buffered, and it
//! is never allowed past `cap` bytes: the moment it would, it is dropped, one
//! [`FrameError::TooLarge`] is queued in its place and the rest of it is skipped up to its NUL.
//! That error keeps the packet's first bytes, at most [`HEAD_BYTES`] (1024), so that the
//! answer can still echo the request's `id` ([`super::packet::salvage_id`] reads it from a
//! cut-short `<packet … id="…">`): the head is cut from the buffered bytes plus the bytes of
//! the push that overflowed, before the buffer is freed. It holds at least
//! `min(HEAD_BYTES, cap + 1)` bytes, so with a cap of at least `HEAD_BYTES` (the server's
//! minimum is 4096) it is exactly the first `HEAD_BYTES` bytes, however the packet was split
//! into pushes; the bytes after the head are never kept. So memory stays bounded by `cap`
//! plus what the caller itself pushed (a queued packet or head never holds more bytes than
//! were pushed for it), whatever the peer sends, and one oversized packet does not cost the
//! connection: the next one decodes. Empty and whitespace-only packets (stray NULs, a newline
//! after a NUL) are skipped.

use std::collections::VecDeque;

/// The most bytes of a refused packet kept in [`FrameError::TooLarge`]'s `head`.
pub const HEAD_BYTES: usize = 1024;

/// Why a packet was refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The packet outgrew the decoder's cap (its bytes are skipped).
    #[error("packet larger than {cap} bytes")]
    TooLarge {
        /// The decoder's cap.
        cap: usize,
        /// The packet's first bytes, as many as were received when it outgrew the cap but at
        /// most [`HEAD_BYTES`] (at least `min(HEAD_BYTES, cap + 1)`): enough for
        /// [`super::packet::salvage_id`] to find the request's `id`.
        head: Vec<u8>,
    },
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
            let head = self.head(segment);
            self.ready.push_back(Err(FrameError::TooLarge {
                cap: self.cap,
                head,
            }));
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

    /// The first [`HEAD_BYTES`] (at most) of the buffered packet continued by `segment`.
    fn head(&self, segment: &[u8]) -> Vec<u8> {
        let from_buf = self.buf.len().min(HEAD_BYTES);
        let from_segment = segment.len().min(HEAD_BYTES - from_buf);
        let mut head = Vec::with_capacity(from_buf + from_segment);
        head.extend_from_slice(&self.buf[..from_buf]);
        head.extend_from_slice(&segment[..from_segment]);
        head
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

    /// The next complete packet (without its NUL), or `Err(TooLarge)` (with the packet's first
    /// bytes) once for a packet that outgrew the cap — its bytes are then skipped up to and
    /// including its NUL, and decoding goes on with the next packet — or `None` when more bytes
    /// are needed. Empty packets and whitespace-only packets are skipped.
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
    use super::super::fuzzkit;
    use super::super::packet::salvage_id;
    use super::*;
    use proptest::prelude::*;

    /// Every packet of the corpus (file contents, which hold no NUL), sorted by file name.
    fn corpus() -> Vec<Vec<u8>> {
        corpus_files().to_vec()
    }

    /// The corpus's packets, read once per process.
    fn corpus_files() -> &'static [Vec<u8>] {
        static FILES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
        FILES.get_or_init(|| fuzzkit::corpus().iter().map(|(_, p)| p.clone()).collect())
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

    fn too_large(cap: usize, head: &[u8]) -> Result<Vec<u8>, FrameError> {
        Err(FrameError::TooLarge {
            cap,
            head: head.to_vec(),
        })
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
                too_large(cap, &[b'b'; 17]),
                Ok(b"<ok/>".to_vec())
            ]
        );

        // Growing over several pushes: reported as soon as it outgrows the cap, once.
        d.push(b"<packet id=\"b\">");
        assert_eq!(d.next_packet(), None);
        d.push(b"<data>0123456789");
        let head = b"<packet id=\"b\"><data>0123456789";
        assert_eq!(d.next_packet(), Some(too_large(cap, head)));
        assert_eq!(salvage_id(head).as_deref(), Some("b"));
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
            too_large(cap, b"<packet id=\"b\">")
                .unwrap_err()
                .to_string(),
            "packet larger than 16 bytes"
        );

        // A zero cap refuses everything but blank packets.
        let mut d = FrameDecoder::new(0);
        d.push(b"\0x\0\0y");
        assert_eq!(drain(&mut d), vec![too_large(0, b"x"), too_large(0, b"y")]);
    }

    #[test]
    fn memory_stays_bounded_without_nuls() {
        let cap = 1 << 20;
        let mut d = FrameDecoder::new(cap);
        let piece = vec![b'x'; 64 << 10];
        let mut errors = Vec::new();
        for _ in 0..(10 << 20) / piece.len() {
            d.push(&piece);
            assert!(d.pending() <= cap + 1, "{}", d.pending());
            assert!(d.buf.capacity() <= cap + 1, "{}", d.buf.capacity());
            errors.extend(drain(&mut d));
        }
        assert_eq!(errors, vec![too_large(cap, &[b'x'; HEAD_BYTES])]);
        d.push(b"tail\0<packet/>\0");
        assert_eq!(drain(&mut d), ok(&[b"<packet/>"]));

        // One multi-megabyte chunk without NUL.
        let mut d = FrameDecoder::new(cap);
        d.push(&vec![b'y'; 8 << 20]);
        assert!(d.pending() <= cap + 1 && d.buf.capacity() <= cap + 1);
        assert_eq!(drain(&mut d), vec![too_large(cap, &[b'y'; HEAD_BYTES])]);
    }

    /// A request of `len` bytes (`len` > 200) whose `<packet` start tag carries `id="big7"`
    /// after `pad` bytes of another attribute.
    fn big_request(pad: usize, len: usize) -> Vec<u8> {
        let mut p = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<packet version=\"4.0.0\" pad=\"{}\" \
             id=\"big7\"><target>backupm</target><data><backupm><put>",
            "p".repeat(pad)
        )
        .into_bytes();
        let tail = b"</put></backupm></data></packet>";
        assert!(p.len() + tail.len() <= len);
        p.resize(len - tail.len(), b'x');
        p.extend_from_slice(tail);
        p
    }

    /// Feeds `packet` and then a small packet (when the cap allows it) in pushes of `step`
    /// bytes; returns the error's head, checking that the decoder then goes on with the next
    /// packet.
    fn refuse(cap: usize, packet: &[u8], step: usize) -> Vec<u8> {
        let next: &[u8] = b"<packet id=\"next\"/>";
        let next = if next.len() <= cap { next } else { b"" };
        let mut d = FrameDecoder::new(cap);
        let mut bytes = frame(packet.to_vec());
        bytes.extend_from_slice(&frame(next.to_vec()));
        let mut got = Vec::new();
        for chunk in bytes.chunks(step) {
            d.push(chunk);
            assert!(d.pending() <= cap);
            got.extend(drain(&mut d));
        }
        assert_eq!(d.pending(), 0);
        let Some(Err(FrameError::TooLarge { cap: c, head })) = got.first().cloned() else {
            panic!("cap {cap}, step {step}: {got:?}");
        };
        assert_eq!(c, cap);
        let after = got[1..].to_vec();
        let want = if next.is_empty() { vec![] } else { ok(&[next]) };
        assert_eq!(after, want, "cap {cap}, step {step}");
        head
    }

    #[test]
    fn oversized_packet_head_holds_the_id() {
        let packet = big_request(10, 10_000);
        let cap = 4096;
        for step in [packet.len() + 30, 4097, 1024, 1000, 7, 3, 1] {
            let head = refuse(cap, &packet, step);
            assert_eq!(head, packet[..HEAD_BYTES], "step {step}");
            assert_eq!(salvage_id(&head).as_deref(), Some("big7"), "step {step}");
        }

        // The id near the end of the head, the packet far beyond a large cap, in small pushes.
        let packet = big_request(880, 3 << 20);
        let id_end = packet.windows(5).position(|w| w == b"big7\"").unwrap() + 5;
        assert!((950..HEAD_BYTES).contains(&id_end), "{id_end}");
        for step in [64 << 10, 4093, 5] {
            let head = refuse(1 << 20, &packet, step);
            assert_eq!(head, packet[..HEAD_BYTES], "step {step}");
            assert_eq!(salvage_id(&head).as_deref(), Some("big7"), "step {step}");
        }

        // An id past the head is lost (the answer then has no id), and so is one cut by it.
        for pad in [1000, HEAD_BYTES - 77] {
            let packet = big_request(pad, 8000);
            let head = refuse(4096, &packet, 100);
            assert_eq!(head.len(), HEAD_BYTES);
            assert_eq!(salvage_id(&head), None, "pad {pad}");
            assert_eq!(salvage_id(&packet).as_deref(), Some("big7"));
        }

        // A cap below HEAD_BYTES: the head is what arrived by the time the packet outgrew it,
        // at least cap + 1 bytes.
        let packet = big_request(0, 5000);
        for (step, len) in [(1, 201), (2, 202), (150, 300), (5000, HEAD_BYTES)] {
            let head = refuse(200, &packet, step);
            assert_eq!(head, packet[..len], "step {step}");
            assert_eq!(salvage_id(&head).as_deref(), Some("big7"), "step {step}");
        }
    }

    #[test]
    fn head_is_never_longer_than_head_bytes() {
        for cap in [0, 1, 100, HEAD_BYTES - 1, HEAD_BYTES, HEAD_BYTES + 1, 5000] {
            for extra in [1, 2, HEAD_BYTES, 3 * HEAD_BYTES + 7] {
                let packet: Vec<u8> = (0..cap + extra).map(|i| b'a' + (i % 23) as u8).collect();
                for step in [
                    1,
                    2,
                    999,
                    HEAD_BYTES - 1,
                    HEAD_BYTES,
                    HEAD_BYTES + 1,
                    1 << 16,
                ] {
                    let head = refuse(cap, &packet, step);
                    let at_least = HEAD_BYTES.min(cap + 1);
                    assert!(
                        (at_least..=HEAD_BYTES).contains(&head.len()) && packet.starts_with(&head),
                        "cap {cap}, packet {}, step {step}: head of {}",
                        packet.len(),
                        head.len()
                    );
                    assert_eq!(head.capacity(), head.len(), "no spare room kept");
                }
            }
        }
    }

    /// What the decoder must yield for a stream: every NUL-terminated segment that is not blank,
    /// refused when over the cap; an unterminated tail only when it is already over the cap.
    /// A refusal's `head` here is the whole refused segment (see [`matches_model`]).
    fn model(stream: &[u8], cap: usize) -> Vec<Result<Vec<u8>, FrameError>> {
        let mut segments: Vec<&[u8]> = stream.split(|&b| b == 0).collect();
        let tail = segments.pop().unwrap_or_default();
        let mut out: Vec<Result<Vec<u8>, FrameError>> = segments
            .into_iter()
            .filter_map(|s| {
                if s.len() > cap {
                    Some(too_large(cap, s))
                } else if s.iter().all(|b| b" \t\r\n".contains(b)) {
                    None
                } else {
                    Some(Ok(s.to_vec()))
                }
            })
            .collect();
        if tail.len() > cap {
            out.push(too_large(cap, tail));
        }
        out
    }

    /// Whether the decoder's output `got` is the [`model`]'s `want`: equal packets, and in
    /// place of each refused segment a refusal with the same cap whose head is a prefix of it,
    /// at most [`HEAD_BYTES`] and at least `min(HEAD_BYTES, cap + 1)` bytes long (how much
    /// arrived before it outgrew the cap depends on the chunking).
    fn matches_model(
        got: &[Result<Vec<u8>, FrameError>],
        want: &[Result<Vec<u8>, FrameError>],
    ) -> Result<(), String> {
        if got.len() != want.len() {
            return Err(format!("{} items, want {}", got.len(), want.len()));
        }
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let fine = match (g, w) {
                (Ok(g), Ok(w)) => g == w,
                (
                    Err(FrameError::TooLarge { cap, head }),
                    Err(FrameError::TooLarge {
                        cap: want_cap,
                        head: segment,
                    }),
                ) => {
                    cap == want_cap
                        && (HEAD_BYTES.min(cap + 1)..=HEAD_BYTES).contains(&head.len())
                        && segment.starts_with(head)
                }
                _ => false,
            };
            if !fine {
                return Err(format!("item {i}: got {g:?}, want {w:?}"));
            }
        }
        Ok(())
    }

    /// Splits `bytes` at the given cut points.
    fn chunks(bytes: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        at.push(0);
        at.push(bytes.len());
        at.sort_unstable();
        at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
    }

    /// Pushes `bytes` cut at `cuts` and collects what comes out, checking after every push
    /// that no more than the cap is held.
    fn feed(
        d: &mut FrameDecoder,
        bytes: &[u8],
        cuts: &[prop::sample::Index],
    ) -> Result<Vec<Result<Vec<u8>, FrameError>>, TestCaseError> {
        let mut got = Vec::new();
        for chunk in chunks(bytes, cuts) {
            d.push(&chunk);
            prop_assert!(d.pending() <= d.cap);
            got.extend(drain(d));
        }
        Ok(got)
    }

    /// The property tests' settings (see [`fuzzkit`]).
    fn config(cases: u32) -> ProptestConfig {
        fuzzkit::config(cases, 0x00f4_a3e5_0000_0001)
    }

    proptest! {
        #![proptest_config(config(2_000))]

        #[test]
        fn corpus_survives_any_chunking(
            order in Just(()).prop_perturb(|_, mut rng| {
                let n = corpus_files().len();
                (0..n * 2).map(|_| rng.random_range(0..n)).collect::<Vec<usize>>()
            }),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..64),
        ) {
            let all = corpus_files();
            let packets: Vec<Vec<u8>> = order.iter().map(|&i| all[i].clone()).collect();
            let bytes = stream(&packets);
            let cap = all.iter().map(Vec::len).max().unwrap_or(0);
            let mut d = FrameDecoder::new(cap);
            let got = feed(&mut d, &bytes, &cuts)?;
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
            let got = feed(&mut d, &bytes, &cuts)?;
            prop_assert_eq!(matches_model(&got, &model(&bytes, cap)), Ok(()));
        }

        #[test]
        fn oversized_corpus_packets_keep_their_heads(
            packets in prop::collection::vec((any::<prop::sample::Index>(), 0usize..3000), 1..6),
            cap in prop_oneof![0usize..64, 64usize..4000],
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..64),
        ) {
            // Corpus packets grown by up to 3000 bytes of padding, so that some outgrow the cap.
            let all = corpus_files();
            let packets: Vec<Vec<u8>> = packets
                .iter()
                .map(|(i, pad)| {
                    let mut p = all[i.index(all.len())].clone();
                    p.resize(p.len() + pad, b'x');
                    p
                })
                .collect();
            let bytes = stream(&packets);
            let mut d = FrameDecoder::new(cap);
            let got = feed(&mut d, &bytes, &cuts)?;
            prop_assert_eq!(d.pending(), 0);
            prop_assert_eq!(matches_model(&got, &model(&bytes, cap)), Ok(()));
            for (packet, item) in packets.iter().zip(&got) {
                if let Err(FrameError::TooLarge { head, .. }) = item {
                    // A full head holds every corpus packet's start tag.
                    if head.len() == HEAD_BYTES {
                        prop_assert_eq!(salvage_id(head), salvage_id(packet));
                    }
                }
            }
        }
    }
}
