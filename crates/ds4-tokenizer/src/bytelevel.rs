//! GPT-2 byte <-> unicode alphabet (spec chat-and-tools.md §1.5).
//!
//! Bytes 0x21–0x7E, 0xA1–0xAC and 0xAE–0xFF map to the code point of the same
//! value; the other 68 bytes, in increasing order, map to U+0100, U+0101, …

/// Code point for each byte.
pub const BYTE_TO_CHAR: [char; 256] = build_byte_to_char();

const fn is_direct(b: u32) -> bool {
    (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
}

const fn build_byte_to_char() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut next = 0x100u32;
    let mut b = 0u32;
    while b < 256 {
        let cp = if is_direct(b) {
            b
        } else {
            let c = next;
            next += 1;
            c
        };
        out[b as usize] = match char::from_u32(cp) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    out
}

/// Byte for a code point of the alphabet, or `None` when the code point is not part of it.
#[inline]
pub fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    if cp < 0x100 {
        if is_direct(cp) {
            Some(cp as u8)
        } else {
            None
        }
    } else if cp <= 0x143 {
        Some(INDIRECT[(cp - 0x100) as usize])
    } else {
        None
    }
}

const INDIRECT: [u8; 68] = build_indirect();

const fn build_indirect() -> [u8; 68] {
    let mut out = [0u8; 68];
    let mut n = 0usize;
    let mut b = 0u32;
    while b < 256 {
        if !is_direct(b) {
            out[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    out
}

/// Bytes of a vocabulary string as the Hugging Face `ByteLevel` decoder produces them:
/// every character mapped through the alphabet, or, when some character is not part of
/// the alphabet (for example `<｜User｜>`), the string's own UTF-8 bytes.
pub fn token_string_to_bytes(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    append_token_bytes(s, &mut out);
    out
}

/// Appends the bytes of `s` (see [`token_string_to_bytes`]) to `out`.
pub fn append_token_bytes(s: &str, out: &mut Vec<u8>) {
    let start = out.len();
    for c in s.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.truncate(start);
                out.extend_from_slice(s.as_bytes());
                return;
            }
        }
    }
}

/// Alphabet string of raw bytes (what BPE vocabulary strings are made of).
pub fn bytes_to_token_string(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| BYTE_TO_CHAR[b as usize]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_is_a_bijection_with_spec_examples() {
        assert_eq!(BYTE_TO_CHAR[0x20], '\u{120}');
        assert_eq!(BYTE_TO_CHAR[0x0A], '\u{10A}');
        assert_eq!(BYTE_TO_CHAR[0x09], '\u{109}');
        assert_eq!(BYTE_TO_CHAR[0x0D], '\u{10D}');
        assert_eq!(BYTE_TO_CHAR[0x00], '\u{100}');
        assert_eq!(BYTE_TO_CHAR[0xAD], '\u{143}');
        assert_eq!(BYTE_TO_CHAR[b'a' as usize], 'a');
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = BYTE_TO_CHAR[b as usize];
            assert!(seen.insert(c));
            assert_eq!(char_to_byte(c), Some(b));
        }
        assert_eq!(char_to_byte('\u{144}'), None);
        assert_eq!(char_to_byte(' '), None);
        assert_eq!(char_to_byte('\u{FF5C}'), None);
    }

    #[test]
    fn token_strings_decode_like_hf_bytelevel() {
        assert_eq!(token_string_to_bytes("Ġhello"), b" hello");
        assert_eq!(token_string_to_bytes("<think>"), b"<think>");
        assert_eq!(token_string_to_bytes("<｜User｜>"), "<｜User｜>".as_bytes());
        assert_eq!(token_string_to_bytes("ðŁİ"), vec![0xF0, 0x9F, 0x8E]);
        assert_eq!(bytes_to_token_string(b" \n"), "ĠĊ");
    }
}
