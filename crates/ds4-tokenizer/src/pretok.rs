//! The pre-tokenizer of DeepSeek V4's tokenizer.json (spec chat-and-tools.md §1.3 step 2),
//! written as hand scanners with the exact semantics of the three Oniguruma `Split`
//! regexes (behaviour `Isolated`) applied in sequence:
//!
//! 1. `\p{N}{1,3}`
//! 2. `[一-龥぀-ゟ゠-ヿ]+`
//! 3. `[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
//!
//! Each step runs on every piece produced by the previous one; the end of a piece is the
//! end of input for the regex (matters for `(?!\S)`). `Isolated` emits every match and
//! every non-empty gap between matches as its own piece.

use crate::classes::{class_of, CJK, L, M, N, P, S, WS};

/// Decodes the char starting at byte `i` of valid UTF-8 `s`: (code point, byte length).
#[inline(always)]
fn dec(s: &[u8], i: usize) -> (u32, usize) {
    let b0 = s[i] as u32;
    if b0 < 0x80 {
        (b0, 1)
    } else if b0 < 0xE0 {
        (((b0 & 0x1F) << 6) | (s[i + 1] as u32 & 0x3F), 2)
    } else if b0 < 0xF0 {
        (
            ((b0 & 0x0F) << 12) | ((s[i + 1] as u32 & 0x3F) << 6) | (s[i + 2] as u32 & 0x3F),
            3,
        )
    } else {
        (
            ((b0 & 0x07) << 18)
                | ((s[i + 1] as u32 & 0x3F) << 12)
                | ((s[i + 2] as u32 & 0x3F) << 6)
                | (s[i + 3] as u32 & 0x3F),
            4,
        )
    }
}

#[inline(always)]
fn class_at(s: &[u8], i: usize) -> (u8, u32, usize) {
    let (cp, len) = dec(s, i);
    (class_of(cp), cp, len)
}

/// Splits valid UTF-8 `text` into pre-tokenizer pieces, calling `emit` on each in order.
/// The pieces are consecutive and cover the text exactly.
pub fn pre_tokenize(text: &str, emit: &mut dyn FnMut(&[u8])) {
    let s = text.as_bytes();
    step1(s, &mut |p| step2(p, &mut |q| step3(q, emit)));
}

/// Step 1: `\p{N}{1,3}`, isolated.
fn step1(s: &[u8], emit: &mut dyn FnMut(&[u8])) {
    let n = s.len();
    let mut gap = 0;
    let mut i = 0;
    while i < n {
        let b = s[i];
        if b < 0x80 && !b.is_ascii_digit() {
            i += 1;
            continue;
        }
        let (k, _, len) = class_at(s, i);
        if k & N == 0 {
            i += len;
            continue;
        }
        if gap < i {
            emit(&s[gap..i]);
        }
        let start = i;
        i += len;
        let mut count = 1;
        while count < 3 && i < n {
            let (k, _, len) = class_at(s, i);
            if k & N == 0 {
                break;
            }
            i += len;
            count += 1;
        }
        emit(&s[start..i]);
        gap = i;
    }
    if gap < n {
        emit(&s[gap..n]);
    }
}

/// Step 2: `[一-龥぀-ゟ゠-ヿ]+`, isolated.
fn step2(s: &[u8], emit: &mut dyn FnMut(&[u8])) {
    let n = s.len();
    let mut gap = 0;
    let mut i = 0;
    while i < n {
        let b = s[i];
        // All CJK/kana code points are 3-byte sequences with lead byte E3..E9.
        if !(0xE3..=0xE9).contains(&b) {
            i += if b < 0x80 {
                1
            } else if b < 0xE0 {
                2
            } else if b < 0xF0 {
                3
            } else {
                4
            };
            continue;
        }
        let (k, _, len) = class_at(s, i);
        if k & CJK == 0 {
            i += len;
            continue;
        }
        if gap < i {
            emit(&s[gap..i]);
        }
        let start = i;
        i += len;
        while i < n {
            let (k, _, len) = class_at(s, i);
            if k & CJK == 0 {
                break;
            }
            i += len;
        }
        emit(&s[start..i]);
        gap = i;
    }
    if gap < n {
        emit(&s[gap..n]);
    }
}

#[inline(always)]
fn is_ascii_punct(cp: u32) -> bool {
    cp < 0x80 && (cp as u8).is_ascii_punctuation()
}

/// End of the maximal run of chars whose class intersects `mask`, starting at `i`.
#[inline(always)]
fn run(s: &[u8], mut i: usize, mask: u8) -> usize {
    let n = s.len();
    while i < n {
        let (k, _, len) = class_at(s, i);
        if k & mask == 0 {
            break;
        }
        i += len;
    }
    i
}

#[inline(always)]
fn run_crlf(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && (s[i] == b'\r' || s[i] == b'\n') {
        i += 1;
    }
    i
}

/// Step-3 regex tried at byte `i`: the end of the match, or `None` when no alternative
/// matches at `i`.
#[inline]
fn match_at(s: &[u8], i: usize) -> Option<usize> {
    let n = s.len();
    let (k0, c0, l0) = class_at(s, i);
    let j1 = i + l0;
    // Next char (if any).
    let (k1, _c1, _l1) = if j1 < n { class_at(s, j1) } else { (0, 0, 0) };
    let has1 = j1 < n;
    // A1: ASCII punct + ASCII letters.
    if is_ascii_punct(c0) && has1 && s[j1].is_ascii_alphabetic() {
        let mut j = j1 + 1;
        while j < n && s[j].is_ascii_alphabetic() {
            j += 1;
        }
        return Some(j);
    }
    // A2: [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+
    if has1 && c0 != 0x0D && c0 != 0x0A && k0 & (L | P | S) == 0 && k1 & (L | M) != 0 {
        return Some(run(s, j1, L | M));
    }
    if k0 & (L | M) != 0 {
        return Some(run(s, i, L | M));
    }
    // A3:  ?[\p{P}\p{S}]+[\r\n]*
    if c0 == 0x20 && has1 && k1 & (P | S) != 0 {
        return Some(run_crlf(s, run(s, j1, P | S)));
    }
    if k0 & (P | S) != 0 {
        return Some(run_crlf(s, run(s, i, P | S)));
    }
    if k0 & WS == 0 {
        return None;
    }
    // Whitespace run [i, j); remember the end of its last CR/LF and the start of its last char.
    let mut j = i;
    let mut last_crlf_end = None;
    let mut last_start = i;
    let mut count = 0usize;
    while j < n {
        let (k, cp, len) = class_at(s, j);
        if k & WS == 0 {
            break;
        }
        if cp == 0x0D || cp == 0x0A {
            last_crlf_end = Some(j + 1);
        }
        last_start = j;
        count += 1;
        j += len;
    }
    // A4: \s*[\r\n]+
    if let Some(e) = last_crlf_end {
        return Some(e);
    }
    // A5: \s+(?!\S)
    if j == n {
        return Some(j);
    }
    if count >= 2 {
        return Some(last_start);
    }
    // A6: \s+
    Some(j)
}

/// Step 3: the main regex, isolated.
fn step3(s: &[u8], emit: &mut dyn FnMut(&[u8])) {
    let n = s.len();
    let mut gap = 0;
    let mut i = 0;
    while i < n {
        match match_at(s, i) {
            Some(e) => {
                if gap < i {
                    emit(&s[gap..i]);
                }
                emit(&s[i..e]);
                i = e;
                gap = e;
            }
            None => {
                i += dec(s, i).1;
            }
        }
    }
    if gap < n {
        emit(&s[gap..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(t: &str) -> Vec<String> {
        let mut v = Vec::new();
        pre_tokenize(t, &mut |p| v.push(String::from_utf8(p.to_vec()).unwrap()));
        v
    }

    #[test]
    fn spec_examples() {
        assert_eq!(split("    int x;\n"), ["   ", " int", " x", ";\n"]);
        assert_eq!(split("12345"), ["123", "45"]);
        assert_eq!(split("a\n\n\nb"), ["a", "\n\n\n", "b"]);
        assert_eq!(split("  中文"), ["  ", "中文"]);
        assert_eq!(split("\u{a0}\u{a0}x"), ["\u{a0}", "\u{a0}x"]);
        assert_eq!(split("hi…\n\n"), ["hi", "…\n\n"]);
        assert_eq!(split("»,"), ["»,"]);
        assert_eq!(split("\x01\x02"), ["\x01\x02"]);
        assert_eq!(split(".foo bar"), [".foo", " bar"]);
        assert_eq!(split("あ・い"), ["あ", "・", "い"]);
    }
}
