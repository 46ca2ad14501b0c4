//! Streaming decode: turn token bytes into complete UTF-8 text.

use crate::Tokenizer;

/// Incremental UTF-8 decoder over a byte stream.
///
/// [`Utf8Stream::push`] returns only complete characters; an incomplete sequence at the end
/// is held back until more bytes arrive. Bytes that can never become valid UTF-8 are
/// replaced by U+FFFD as soon as that is certain (the same replacements as
/// `String::from_utf8_lossy` on the whole stream), so the concatenation of every `push`
/// and the final [`Utf8Stream::finish`] equals `String::from_utf8_lossy(all bytes)`.
#[derive(Clone, Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn new() -> Utf8Stream {
        Utf8Stream::default()
    }

    /// Appends bytes; returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    // SAFETY-free: from_utf8 guarantees this prefix is valid.
                    out.push_str(std::str::from_utf8(&rest[..good]).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            rest = &rest[good + bad..];
                        }
                        None => {
                            // Incomplete sequence at the end: keep it.
                            rest = &rest[good..];
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let start = self.pending.len() - keep;
        self.pending.drain(..start);
        out
    }

    /// Bytes held back (an incomplete UTF-8 sequence, at most 3 bytes).
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Flushes: held-back bytes become U+FFFD. The stream is empty afterwards.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

fn utf8_expected_len(c: u8) -> usize {
    match c {
        0x00..=0x7F => 1,
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 1,
    }
}

/// ds4-server's hold-back rule for streamed text (spec chat-and-tools.md §1.7): given the
/// byte buffer `s`, the already-sent offset `start` and a candidate end `limit`, the end up
/// to which text may be sent without splitting a UTF-8 sequence. With `final` the whole
/// candidate is sent. `limit` is clamped to `s.len()`.
///
/// This reproduces ds4 exactly (it inspects only the last sequence and does not validate);
/// [`Utf8Stream`] is the stricter decoder.
pub fn utf8_stream_safe_len(s: &[u8], start: usize, limit: usize, final_: bool) -> usize {
    let limit = limit.min(s.len());
    if final_ || limit <= start {
        return limit;
    }
    let mut p = limit;
    let mut cont = 0;
    while p > start && cont < 4 && s[p - 1] & 0xC0 == 0x80 {
        p -= 1;
        cont += 1;
    }
    if p == limit {
        return if utf8_expected_len(s[limit - 1]) > 1 {
            limit - 1
        } else {
            limit
        };
    }
    if p == start && s[p] & 0xC0 == 0x80 {
        return start;
    }
    let lead = p - 1;
    if limit - lead < utf8_expected_len(s[lead]) {
        lead
    } else {
        limit
    }
}

/// Streaming detokenizer: feed ids one at a time, get complete UTF-8 text.
#[derive(Clone, Debug)]
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    utf8: Utf8Stream,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tok: &'a Tokenizer) -> StreamDecoder<'a> {
        StreamDecoder {
            tok,
            utf8: Utf8Stream::new(),
        }
    }

    /// Adds one token; returns the text completed by it (possibly empty). Ids outside the
    /// vocabulary add nothing.
    pub fn push(&mut self, id: u32) -> String {
        let b = self.tok.token_bytes(id).unwrap_or(&[]);
        self.utf8.push(b)
    }

    /// Bytes held back because they end inside a UTF-8 sequence.
    pub fn pending(&self) -> &[u8] {
        self.utf8.pending()
    }

    /// Flushes held-back bytes (as U+FFFD: they are an incomplete sequence).
    pub fn finish(&mut self) -> String {
        self.utf8.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_partial_sequences() {
        let mut s = Utf8Stream::new();
        assert_eq!(s.push(&[0xF0, 0x9F, 0x8E]), "");
        assert_eq!(s.pending(), &[0xF0, 0x9F, 0x8E]);
        assert_eq!(s.push(&[0x89, b'a']), "🎉a");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn ds4_safe_len_rule() {
        let s = "a🎉b".as_bytes(); // 61 F0 9F 8E 89 62
        assert_eq!(utf8_stream_safe_len(s, 0, 1, false), 1);
        assert_eq!(utf8_stream_safe_len(s, 0, 2, false), 1); // lead byte at the end
        assert_eq!(utf8_stream_safe_len(s, 0, 3, false), 1);
        assert_eq!(utf8_stream_safe_len(s, 0, 4, false), 1);
        assert_eq!(utf8_stream_safe_len(s, 0, 5, false), 5);
        assert_eq!(utf8_stream_safe_len(s, 0, 6, false), 6);
        assert_eq!(utf8_stream_safe_len(s, 0, 4, true), 4);
        // Only continuation bytes after `start`.
        assert_eq!(utf8_stream_safe_len(s, 2, 4, false), 2);
        assert_eq!(utf8_stream_safe_len(s, 3, 3, false), 3);
        assert_eq!(utf8_stream_safe_len(s, 0, 99, false), 6);
        // Stray continuation bytes after ASCII: lead 'a' needs 1, so everything goes.
        assert_eq!(utf8_stream_safe_len(&[b'a', 0x80, 0x80], 0, 3, false), 3);
    }

    #[test]
    fn invalid_bytes_become_replacement_chars() {
        let all: &[u8] = &[b'x', 0xFF, 0xE2, 0x96, b'y', 0xC3];
        let mut s = Utf8Stream::new();
        let mut out = String::new();
        for b in all {
            out.push_str(&s.push(std::slice::from_ref(b)));
        }
        out.push_str(&s.finish());
        assert_eq!(out, String::from_utf8_lossy(all));
    }
}
