//! Byte-level helpers for streaming generated text: UTF-8 safe cut points and
//! stop-sequence matching (ds4.c `utf8_stream_safe_len`, `stop_list_stream_safe_len`).

/// Largest `n <= bytes.len()` such that `bytes[..n]` does not end inside a
/// UTF-8 sequence that could still be completed by more bytes.
pub fn utf8_safe_len(bytes: &[u8]) -> usize {
    let n = bytes.len();
    // Look back at most 3 bytes for the lead byte of the last sequence.
    let start = n.saturating_sub(3);
    for i in (start..n).rev() {
        let b = bytes[i];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte
        }
        let need = if b < 0x80 {
            1
        } else if b & 0xE0 == 0xC0 {
            2
        } else if b & 0xF0 == 0xE0 {
            3
        } else if b & 0xF8 == 0xF0 {
            4
        } else {
            1 // invalid lead byte: never completes, pass it through
        };
        return if n - i < need { i } else { n };
    }
    n
}

/// Stop sequences of one request (empty strings dropped).
#[derive(Debug, Clone, Default)]
pub struct StopList {
    stops: Vec<String>,
    max_len: usize,
}

impl StopList {
    pub fn new<S: AsRef<str>>(stops: &[S]) -> Self {
        let stops: Vec<String> = stops
            .iter()
            .map(|s| s.as_ref().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let max_len = stops.iter().map(|s| s.len()).max().unwrap_or(0);
        StopList { stops, max_len }
    }

    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    /// Bytes that must be held back at the end of a stream (`max_len - 1`).
    pub fn hold(&self) -> usize {
        self.max_len.saturating_sub(1)
    }

    /// Earliest match in `text` (position and the stop sequence; the first
    /// listed wins a tie), searching only matches that end after `from`
    /// (`from` = length already known to be match-free).
    pub fn find(&self, text: &[u8], from: usize) -> Option<(usize, &str)> {
        let start = from.saturating_sub(self.hold()).min(text.len());
        let mut best: Option<(usize, &str)> = None;
        for s in &self.stops {
            if let Some(p) = find_bytes(&text[start..], s.as_bytes()) {
                let p = p + start;
                if best.is_none_or(|(b, _)| p < b) {
                    best = Some((p, s.as_str()));
                }
            }
        }
        best
    }
}

/// First occurrence of `needle` in `hay`.
pub fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return if needle.is_empty() { Some(0) } else { None };
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_safe_len_holds_partial_sequences() {
        let s = "aé€😀".as_bytes(); // 1 + 2 + 3 + 4 bytes
        assert_eq!(utf8_safe_len(s), s.len());
        for cut in 0..=s.len() {
            let expect = match cut {
                0..=1 => cut,
                2 => 1,
                3 => 3,
                4 | 5 => 3,
                6 => 6,
                7..=9 => 6,
                _ => 10,
            };
            assert_eq!(utf8_safe_len(&s[..cut]), expect, "cut {cut}");
            assert!(std::str::from_utf8(&s[..utf8_safe_len(&s[..cut])]).is_ok());
        }
    }

    #[test]
    fn stop_list_earliest_match_wins() {
        let st = StopList::new(&["world", "lo", ""]);
        assert_eq!(st.hold(), 4);
        assert_eq!(st.find(b"hello world", 0), Some((3, "lo")));
        assert_eq!(st.find(b"say world", 0), Some((4, "world")));
        assert_eq!(st.find(b"nothing", 0), None);
        // Incremental search re-examines the held tail.
        assert_eq!(st.find(b"abc wor", 0), None);
        assert_eq!(st.find(b"abc world", 7), Some((4, "world")));
        // A tie at one position goes to the first listed.
        let st = StopList::new(&["thr", "th"]);
        assert_eq!(st.find(b"a three", 0), Some((2, "thr")));
    }
}
