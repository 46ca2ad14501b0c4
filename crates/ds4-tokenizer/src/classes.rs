//! Character classes used by the pre-tokenizer regexes, as Oniguruma defines them:
//! `\p{L}`, `\p{M}`, `\p{N}`, `\p{P}`, `\p{S}` (Unicode general categories, Unicode 16.0
//! like the Oniguruma build inside Hugging Face `tokenizers`), `\s` (White_Space) and the
//! CJK/kana ranges of the second `Split` step.
//!
//! A two-level table (256-code-point pages, deduplicated) is built once per process.

use std::sync::OnceLock;
use unicode_general_category::{get_general_category, GeneralCategory as G};

pub const L: u8 = 1;
pub const M: u8 = 2;
pub const N: u8 = 4;
pub const P: u8 = 8;
pub const S: u8 = 16;
/// `\s`: U+0009–000D, U+0020, U+0085, U+00A0, U+1680, U+2000–200A, U+2028, U+2029,
/// U+202F, U+205F, U+3000.
pub const WS: u8 = 32;
/// `[一-龥぀-ゟ゠-ヿ]`: U+4E00–U+9FA5, U+3040–U+309F, U+30A0–U+30FF.
pub const CJK: u8 = 64;

fn compute(cp: u32) -> u8 {
    let c = match char::from_u32(cp) {
        Some(c) => c,
        None => return 0,
    };
    let mut k = match get_general_category(c) {
        G::UppercaseLetter
        | G::LowercaseLetter
        | G::TitlecaseLetter
        | G::ModifierLetter
        | G::OtherLetter => L,
        G::NonspacingMark | G::SpacingMark | G::EnclosingMark => M,
        G::DecimalNumber | G::LetterNumber | G::OtherNumber => N,
        G::ConnectorPunctuation
        | G::DashPunctuation
        | G::OpenPunctuation
        | G::ClosePunctuation
        | G::InitialPunctuation
        | G::FinalPunctuation
        | G::OtherPunctuation => P,
        G::MathSymbol | G::CurrencySymbol | G::ModifierSymbol | G::OtherSymbol => S,
        _ => 0,
    };
    if matches!(cp, 0x09..=0x0D | 0x20 | 0x85 | 0xA0 | 0x1680 | 0x2000..=0x200A | 0x2028 | 0x2029 | 0x202F | 0x205F | 0x3000)
    {
        k |= WS;
    }
    if matches!(cp, 0x4E00..=0x9FA5 | 0x3040..=0x309F | 0x30A0..=0x30FF) {
        k |= CJK;
    }
    k
}

struct Table {
    /// page index for each 256-code-point page (0x1100 pages)
    index: Vec<u16>,
    pages: Vec<[u8; 256]>,
}

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        let mut index = Vec::with_capacity(0x1100);
        let mut pages: Vec<[u8; 256]> = Vec::new();
        let mut lookup: std::collections::HashMap<[u8; 256], u16> = Default::default();
        for page in 0..0x1100u32 {
            let mut p = [0u8; 256];
            for (i, slot) in p.iter_mut().enumerate() {
                *slot = compute(page * 256 + i as u32);
            }
            let id = *lookup.entry(p).or_insert_with(|| {
                pages.push(p);
                (pages.len() - 1) as u16
            });
            index.push(id);
        }
        Table { index, pages }
    })
}

static ASCII: [u8; 128] = build_ascii();

const fn build_ascii() -> [u8; 128] {
    let mut t = [0u8; 128];
    let mut b = 0usize;
    while b < 128 {
        let c = b as u8;
        t[b] = if c.is_ascii_alphabetic() {
            L
        } else if c.is_ascii_digit() {
            N
        } else if matches!(c, 0x09..=0x0D | 0x20) {
            WS
        } else if matches!(
            c,
            b'$' | b'+' | b'<' | b'=' | b'>' | b'^' | b'`' | b'|' | b'~'
        ) {
            S
        } else if c.is_ascii_punctuation() {
            P
        } else {
            0
        };
        b += 1;
    }
    t
}

/// Class bits of a code point (`cp` must be ≤ 0x10FFFF).
#[inline]
pub fn class_of(cp: u32) -> u8 {
    if cp < 128 {
        ASCII[cp as usize]
    } else {
        let t = table();
        t.pages[t.index[(cp >> 8) as usize] as usize][(cp & 0xFF) as usize]
    }
}

/// Forces the table to be built (so the first encode does not pay for it).
pub fn warm_up() {
    let _ = table();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_table_matches_general_categories() {
        for cp in 0..128u32 {
            assert_eq!(ASCII[cp as usize], compute(cp), "cp {cp:#x}");
        }
    }

    #[test]
    fn two_level_table_matches_direct_computation() {
        for cp in (0..0x110000u32).step_by(7) {
            assert_eq!(class_of(cp), compute(cp), "cp {cp:#x}");
        }
        assert_eq!(class_of(0x4E2D), L | CJK);
        assert_eq!(class_of(0x30FB), P | CJK);
        assert_eq!(class_of(0x3000), WS);
        assert_eq!(class_of(0x85), WS);
        assert_eq!(class_of(0x301), M);
        assert_eq!(class_of(0x2460), N);
        assert_eq!(class_of(0x1F389), S);
    }
}
