//! Deterministic oracle corpus for the tokenizer tests (the single implementation: the
//! `write_corpus` example writes it for the Python oracle script, the `oracle` test
//! regenerates it and compares with the committed fixture).
//!
//! Changing anything here changes the corpus hash; the test then asks to regenerate the
//! fixture with `tools/tokenizer-fixtures/make_oracle_fixture.sh`.

#![allow(dead_code)]

pub const SEED: u64 = 0x0D54_70C3_2026_0001;

/// splitmix64
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn range(&mut self, lo: u64, hi_incl: u64) -> u64 {
        lo + self.below(hi_incl - lo + 1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    pub fn pick_ref<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

/// Corpus documents with a label (kind) each.
pub struct Doc {
    pub kind: &'static str,
    pub text: String,
}

const EN_WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "you",
    "that",
    "it",
    "he",
    "was",
    "for",
    "on",
    "are",
    "as",
    "with",
    "his",
    "they",
    "I",
    "at",
    "be",
    "this",
    "have",
    "from",
    "or",
    "one",
    "had",
    "by",
    "word",
    "but",
    "not",
    "what",
    "all",
    "were",
    "we",
    "when",
    "your",
    "can",
    "said",
    "there",
    "use",
    "an",
    "each",
    "which",
    "she",
    "do",
    "how",
    "their",
    "if",
    "will",
    "up",
    "other",
    "about",
    "out",
    "many",
    "then",
    "them",
    "these",
    "so",
    "some",
    "her",
    "would",
    "make",
    "like",
    "him",
    "into",
    "time",
    "has",
    "look",
    "two",
    "more",
    "write",
    "go",
    "see",
    "number",
    "no",
    "way",
    "could",
    "people",
    "my",
    "than",
    "first",
    "water",
    "been",
    "call",
    "who",
    "oil",
    "its",
    "now",
    "find",
    "long",
    "down",
    "day",
    "did",
    "get",
    "come",
    "made",
    "may",
    "part",
    "tokenizer",
    "transformer",
    "attention",
    "inference",
    "quantization",
    "don't",
    "I'm",
    "you're",
    "it's",
    "we'll",
    "they've",
    "isn't",
    "couldn't",
    "O'Brien",
    "e-mail",
    "state-of-the-art",
    "GPU",
    "CPU",
    "DeepSeek",
    "Rust",
    "HTTP/2",
    "JSON",
    "naïve",
    "café",
    "résumé",
    "coöperate",
    "Zürich",
];

const IT_WORDS: &[&str] = &[
    "il",
    "la",
    "che",
    "di",
    "e",
    "è",
    "un",
    "una",
    "perché",
    "città",
    "più",
    "già",
    "così",
    "però",
    "l'uomo",
    "dell'acqua",
    "all'improvviso",
    "quell'altro",
    "gl'anni",
    "Renzo",
    "Lucia",
    "don",
    "Abbondio",
    "curato",
    "bravi",
    "matrimonio",
    "Lecco",
    "lago",
    "Como",
    "monti",
    "sentiero",
    "quando",
    "giorno",
    "sera",
    "novembre",
    "tornava",
    "bel",
    "bello",
    "pensieri",
    "cuore",
    "Dio",
    "verità",
    "perciò",
    "ne",
    "né",
    "sé",
    "poiché",
    "affinché",
    "virtù",
    "carità",
    "libertà",
    "co'",
    "de'",
    "Sant'Ambrogio",
    "sull'orlo",
    "nell'animo",
    "qual",
    "là",
    "giù",
    "lì",
    "ciò",
];

const PUNCT_EN: &[&str] = &[
    ".", ",", ";", ":", "!", "?", "...", " -", " --", " (", ")", "\"", "'", "…", "—", " — ", "!\n",
    ".\n\n", "?\r\n", ",\n", " & ", " / ", "%", " #", " @", " $",
];

const PUNCT_IT: &[&str] = &[
    ".", ",", ";", ":", "!", "?", "…", "…\n\n", " «", "»", "», ", " – ", "!\n", ".\n", "?»\n",
    ".»", ",»", "«", " — ", "’", "‘",
];

const CJK_PUNCT: &[&str] = &[
    "，", "。", "！", "？", "、", "：", "；", "「", "」", "『", "』", "（", "）", "《", "》", "…",
    "——", "·", "。\n", "！\n\n", "，\r\n",
];

const JA_PUNCT: &[&str] = &[
    "、", "。", "「", "」", "・", "ー", "〜", "！", "？", "。\n", "゛", "゜", "゠",
];

const KO_PUNCT: &[&str] = &[".", ",", "!", "?", " ", " ", " ", "\n", "…", "·", "~"];

const EMOJI: &[&str] = &[
    "🎉",
    "😀",
    "😂",
    "🤖",
    "🚀",
    "❤️",
    "❤",
    "👍",
    "👍🏽",
    "👨‍👩‍👧‍👦",
    "🏳️‍🌈",
    "🇮🇹",
    "🇯🇵",
    "🇨🇳",
    "🇰🇷",
    "☕",
    "✨",
    "🔥",
    "💯",
    "🙏🏻",
    "🧑‍💻",
    "⭐",
    "♻️",
    "🦀",
    "🐍",
    "1️⃣",
    "#️⃣",
    "©",
    "®",
    "™",
    "↔️",
    "🫠",
    "🪿",
    "\u{1F9D1}\u{200D}\u{1F680}",
];

const CODE_IDENTS: &[&str] = &[
    "x",
    "y",
    "i",
    "j",
    "n",
    "len",
    "buf",
    "self",
    "value",
    "result",
    "tokens",
    "ids",
    "config",
    "model",
    "tensor",
    "weights",
    "layer",
    "hidden_size",
    "num_heads",
    "q_proj",
    "kv_cache",
    "ctx",
    "__init__",
    "_private",
    "HTTPServer",
    "parseJSON",
    "std",
    "vec",
    "String",
    "u32",
    "usize",
    "Option",
    "Some",
    "None",
    "Ok",
    "Err",
    "println",
    "print",
    "return",
    "fn",
    "def",
    "let",
    "mut",
    "const",
    "static",
    "struct",
    "impl",
    "for",
    "while",
    "if",
    "else",
    "match",
    "class",
    "import",
    "from",
    "as",
    "int",
    "float",
    "void",
    "char",
];

const CODE_OPS: &[&str] = &[
    " = ", " == ", " != ", " += ", " -= ", " -> ", " => ", "::", ".", ", ", "(", ")", "[", "]",
    "{", "}", "<", ">", " && ", " || ", "!", "&", "*", " / ", " % ", "?", ";", ":", "#", "@", "$",
    "\\", "'", "\"", "`", "^", "~", "|", "<<", ">>", "..", "..=", "/*", "*/", "//", "#[", "]:",
    "\"\"\"",
];

fn push_words(rng: &mut Rng, out: &mut String, words: &[&str], punct: &[&str], n: usize) {
    let mut cap = true;
    for i in 0..n {
        let w = rng.pick(words);
        if i > 0 && !out.ends_with('\n') && !out.ends_with(' ') {
            out.push(' ');
        }
        if cap {
            let mut cs = w.chars();
            if let Some(c) = cs.next() {
                out.extend(c.to_uppercase());
                out.push_str(cs.as_str());
            }
        } else {
            out.push_str(w);
        }
        cap = false;
        let r = rng.below(100);
        if r < 14 {
            out.push_str(rng.pick(punct));
            cap = rng.chance(50);
        } else if r < 17 {
            out.push(' ');
            push_number(rng, out);
        }
    }
}

fn push_number(rng: &mut Rng, out: &mut String) {
    match rng.below(8) {
        0 => out.push_str(&rng.below(10).to_string()),
        1 => out.push_str(&rng.below(1000).to_string()),
        2 => out.push_str(&rng.next().to_string()),
        3 => out.push_str(&format!("{}.{}", rng.below(100), rng.below(1000))),
        4 => out.push_str(&format!(
            "{}-{:02}-{:02}",
            1900 + rng.below(200),
            1 + rng.below(12),
            1 + rng.below(28)
        )),
        5 => out.push_str(&format!("{:#x}", rng.next() >> rng.below(60))),
        6 => out.push_str(&format!("{},{:03}", rng.below(1000), rng.below(1000))),
        _ => out.push_str(&format!("{}%", rng.below(101))),
    }
}

fn ranged_char(rng: &mut Rng, lo: u32, hi: u32) -> char {
    loop {
        if let Some(c) = char::from_u32(lo + rng.below((hi - lo + 1) as u64) as u32) {
            return c;
        }
    }
}

fn english(rng: &mut Rng) -> String {
    let mut s = String::new();
    let n = rng.range(20, 400) as usize;
    push_words(rng, &mut s, EN_WORDS, PUNCT_EN, n);
    s
}

fn italian(rng: &mut Rng) -> String {
    let mut s = String::new();
    let n = rng.range(20, 400) as usize;
    push_words(rng, &mut s, IT_WORDS, PUNCT_IT, n);
    s
}

fn chinese(rng: &mut Rng) -> String {
    let mut s = String::new();
    let n = rng.range(10, 300);
    for _ in 0..n {
        match rng.below(20) {
            0..=13 => s.push(ranged_char(rng, 0x4E00, 0x9FFF)),
            14..=16 => s.push_str(rng.pick(CJK_PUNCT)),
            17 => push_number(rng, &mut s),
            18 => {
                s.push(' ');
                s.push_str(rng.pick(EN_WORDS));
                s.push(' ');
            }
            _ => s.push(ranged_char(rng, 0x3400, 0x4DBF)),
        }
    }
    s
}

fn japanese(rng: &mut Rng) -> String {
    let mut s = String::new();
    let n = rng.range(10, 300);
    for _ in 0..n {
        match rng.below(20) {
            0..=6 => s.push(ranged_char(rng, 0x3041, 0x3096)),
            7..=10 => s.push(ranged_char(rng, 0x30A1, 0x30FA)),
            11..=14 => s.push(ranged_char(rng, 0x4E00, 0x9FA5)),
            15..=17 => s.push_str(rng.pick(JA_PUNCT)),
            18 => s.push(ranged_char(rng, 0xFF66, 0xFF9F)),
            _ => push_number(rng, &mut s),
        }
    }
    s
}

fn korean(rng: &mut Rng) -> String {
    let mut s = String::new();
    let n = rng.range(10, 300);
    for _ in 0..n {
        match rng.below(20) {
            0..=13 => s.push(ranged_char(rng, 0xAC00, 0xD7A3)),
            14..=17 => s.push_str(rng.pick(KO_PUNCT)),
            18 => s.push(ranged_char(rng, 0x1100, 0x11FF)),
            _ => push_number(rng, &mut s),
        }
    }
    s
}

fn code(rng: &mut Rng) -> String {
    let mut s = String::new();
    let lines = rng.range(3, 60);
    let crlf = rng.chance(20);
    let tabs = rng.chance(30);
    let mut depth = 0usize;
    for _ in 0..lines {
        for _ in 0..depth {
            if tabs {
                s.push('\t');
            } else {
                s.push_str("    ");
            }
        }
        let toks = rng.range(1, 12);
        for t in 0..toks {
            match rng.below(10) {
                0..=4 => {
                    if t > 0 && rng.chance(60) {
                        s.push(' ');
                    }
                    s.push_str(rng.pick(CODE_IDENTS));
                }
                5..=7 => s.push_str(rng.pick(CODE_OPS)),
                8 => push_number(rng, &mut s),
                _ => {
                    s.push('"');
                    s.push_str(rng.pick(EN_WORDS));
                    s.push_str(rng.pick(&["", "\\n", "\\t", "{}", " %d", "\\\"", "é", "中文"]));
                    s.push('"');
                }
            }
        }
        match rng.below(8) {
            0 => {
                s.push_str(" {");
                depth += 1;
            }
            1 if depth > 0 => {
                s.push_str(";\n");
                depth -= 1;
                for _ in 0..depth {
                    s.push_str(if tabs { "\t" } else { "    " });
                }
                s.push('}');
            }
            2 => s.push_str(" // "),
            3 => s.push(';'),
            4 => s.push(':'),
            5 => s.push_str("  "),
            _ => {}
        }
        if rng.chance(10) {
            s.push_str(rng.pick(&[" ", "  ", "\t"]));
        }
        s.push_str(if crlf { "\r\n" } else { "\n" });
        if rng.chance(10) {
            s.push_str(if crlf { "\r\n" } else { "\n" });
        }
    }
    s
}

fn emoji(rng: &mut Rng) -> String {
    let mut s = String::new();
    let n = rng.range(5, 120);
    for _ in 0..n {
        match rng.below(10) {
            0..=4 => s.push_str(rng.pick(EMOJI)),
            5 => s.push(' '),
            6 => s.push_str(rng.pick(EN_WORDS)),
            7 => s.push(ranged_char(rng, 0x1F300, 0x1FAFF)),
            8 => s.push_str(rng.pick(PUNCT_EN)),
            _ => {
                s.push(ranged_char(rng, 0x1F466, 0x1F469));
                s.push(ranged_char(rng, 0x1F3FB, 0x1F3FF));
            }
        }
    }
    s
}

const SPACES: &[&str] = &[
    " ", "\t", "\n", "\r\n", "\r", "\u{0B}", "\u{0C}", "\u{85}", "\u{A0}", "\u{1680}", "\u{2000}",
    "\u{2003}", "\u{2009}", "\u{200A}", "\u{2028}", "\u{2029}", "\u{202F}", "\u{205F}", "\u{3000}",
    "\u{200B}", "\u{FEFF}", "\u{180E}",
];

fn whitespace(rng: &mut Rng) -> String {
    let mut s = String::new();
    let n = rng.range(5, 80);
    for _ in 0..n {
        match rng.below(12) {
            0..=3 => {
                let w = rng.pick(SPACES);
                for _ in 0..rng.range(1, 40) {
                    s.push_str(w);
                }
            }
            4 => {
                for _ in 0..rng.range(1, 200) {
                    s.push(' ');
                }
            }
            5 => {
                for _ in 0..rng.range(1, 10) {
                    s.push_str(rng.pick(SPACES));
                }
            }
            6 => s.push_str(rng.pick(EN_WORDS)),
            7 => s.push_str(rng.pick(CODE_OPS)),
            8 => s.push(ranged_char(rng, 0x4E00, 0x9FA5)),
            9 => push_number(rng, &mut s),
            10 => s.push_str(rng.pick(EMOJI)),
            _ => s.push_str(rng.pick(IT_WORDS)),
        }
    }
    s
}

const DIGITS: &[(u32, u32)] = &[
    (0x30, 0x39),
    (0x660, 0x669),
    (0x6F0, 0x6F9),
    (0x966, 0x96F),
    (0xFF10, 0xFF19),
    (0x2070, 0x2079),
    (0x2080, 0x2089),
    (0xB2, 0xB3),
    (0xBC, 0xBE),
    (0x2150, 0x218B),
    (0x2460, 0x249B),
    (0x2776, 0x2793),
    (0x3007, 0x3007),
    (0x3021, 0x3029),
    (0x1D7CE, 0x1D7FF),
    (0x1F100, 0x1F10C),
];

fn digits(rng: &mut Rng) -> String {
    let mut s = String::new();
    let n = rng.range(5, 100);
    for _ in 0..n {
        match rng.below(10) {
            0..=2 => {
                for _ in 0..rng.range(1, 60) {
                    s.push(ranged_char(rng, 0x30, 0x39));
                }
            }
            3..=5 => {
                let (lo, hi) = rng.pick(DIGITS);
                for _ in 0..rng.range(1, 12) {
                    s.push(ranged_char(rng, lo, hi));
                }
            }
            6 => s.push_str(rng.pick(&[".", ",", " ", "-", "+", "e", "x", "_", "/", ":"])),
            7 => s.push_str(rng.pick(EN_WORDS)),
            8 => s.push(ranged_char(rng, 0x4E00, 0x9FA5)),
            _ => push_number(rng, &mut s),
        }
    }
    s
}

fn specials_doc(rng: &mut Rng, specials: &[String]) -> String {
    let mut s = String::new();
    let n = rng.range(3, 40);
    for _ in 0..n {
        match rng.below(10) {
            0..=3 => s.push_str(rng.pick_ref(specials).as_str()),
            4 => {
                // a proper prefix of a special token
                let t = rng.pick_ref(specials);
                let cut: Vec<usize> = t.char_indices().map(|(i, _)| i).skip(1).collect();
                if !cut.is_empty() {
                    s.push_str(&t[..rng.pick(&cut)]);
                }
            }
            5 => s.push_str(rng.pick(&[
                "<｜/table>｜DSML｜",
                "<｜DSML｜tool_calls>",
                "</｜DSML｜invoke>",
                "<<think>>",
                "<think></think>",
                "｜｜DSML｜｜",
                "<|EOT|>|>",
                "<｜User｜<｜Assistant｜>",
                "<dsml:invoke name=\"x\">",
                "<｜begin▁of▁sentence｜<｜end▁of▁sentence｜>>",
                "▁",
                "｜",
            ])),
            6 => push_words(rng, &mut s, EN_WORDS, PUNCT_EN, 3),
            7 => {
                s.push(' ');
                s.push_str(rng.pick(EN_WORDS));
            }
            8 => s.push_str(rng.pick(SPACES)),
            _ => s.push_str(rng.pick(CJK_PUNCT)),
        }
    }
    s
}

fn random_unicode(rng: &mut Rng) -> String {
    let mut s = String::new();
    let n = rng.range(5, 200);
    for _ in 0..n {
        let c = match rng.below(12) {
            0 => ranged_char(rng, 0, 0x7F),
            1 => ranged_char(rng, 0x80, 0x7FF),
            2 => ranged_char(rng, 0x300, 0x36F), // combining marks
            3 => ranged_char(rng, 0x800, 0xFFFF),
            4 => ranged_char(rng, 0x10000, 0x10FFFF),
            5 => ranged_char(rng, 0x10000, 0x3FFFF),
            6 => ranged_char(rng, 0x0900, 0x0DFF), // Indic scripts with marks
            7 => ranged_char(rng, 0x0590, 0x06FF), // Hebrew, Arabic
            8 => ranged_char(rng, 0x0400, 0x04FF), // Cyrillic
            9 => ranged_char(rng, 0x1AB0, 0x1AFF),
            10 => ranged_char(rng, 0xE0000, 0xE01EF), // tags, variation selectors
            _ => ranged_char(rng, 0x20, 0x7E),
        };
        s.push(c);
        if rng.chance(15) {
            s.push(ranged_char(rng, 0x300, 0x36F));
        }
    }
    s
}

/// Pieces chosen to sit on the boundaries of the regex classes.
const RUN_PIECES: &[&str] = &[
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\r",
    " \n ",
    "\u{a0}",
    "\u{3000}",
    "\u{85}",
    "\u{2028}",
    "abc",
    "Ab",
    "é",
    "\u{301}",
    "\u{489}",
    "\u{93f}",
    "中文",
    "ひら",
    "カタ",
    "ー",
    "・",
    "゠",
    "\u{3040}",
    "\u{309f}",
    "\u{4dff}",
    "\u{9fa5}",
    "\u{9fa6}",
    "123",
    "٣٤",
    "①",
    "½",
    "²",
    "!",
    ".",
    "\"",
    "'",
    "«",
    "»",
    "…",
    "€",
    "🎉",
    "👍🏽",
    "\u{200d}",
    "\u{fe0f}",
    "<",
    ">",
    "/",
    "_",
    "-",
    "x",
    "\0",
    "\u{1}",
    "\u{7f}",
    "\u{e000}",
    "\u{e0001}",
    "\u{1f3fb}",
    "한국",
    "ก",
    "\u{e31}",
    "ا",
    "\u{64b}",
    "ß",
    "Ω",
    "ǅ",
    "ʰ",
    "Ġ",
    "Ċ",
    "▁",
    "｜",
    "<｜",
    "｜>",
];

fn runs(rng: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..rng.range(20, 600) {
        let p = rng.pick(RUN_PIECES);
        for _ in 0..rng.pick(&[1, 1, 1, 2, 3, 5]) {
            s.push_str(p);
        }
    }
    s
}

fn mixed(rng: &mut Rng, specials: &[String]) -> String {
    let mut s = String::new();
    for _ in 0..rng.range(2, 6) {
        let part = match rng.below(10) {
            0 => english(rng),
            1 => italian(rng),
            2 => chinese(rng),
            3 => japanese(rng),
            4 => korean(rng),
            5 => code(rng),
            6 => emoji(rng),
            7 => whitespace(rng),
            8 => specials_doc(rng, specials),
            _ => random_unicode(rng),
        };
        s.push_str(&part);
        s.push_str(rng.pick(&["", " ", "\n", "\n\n", "\r\n", "\t"]));
    }
    s
}

/// Every code point in `lo..hi` (no surrogates) in several contexts that separate the
/// regex classes (letter, mark, number, punctuation, symbol, whitespace, other).
fn sweep(lo: u32, hi: u32) -> String {
    let mut s = String::new();
    for cp in lo..hi {
        if let Some(c) = char::from_u32(cp) {
            s.push('a');
            s.push(c);
            s.push('b');
            s.push(' ');
            s.push(c);
            s.push(c);
            s.push('.');
            s.push(c);
            s.push('\n');
            s.push('1');
            s.push(c);
            s.push('2');
            s.push(c);
            s.push(' ');
            s.push(' ');
            s.push(c);
            s.push('中');
            s.push(c);
            s.push('\n');
        }
    }
    s
}

/// Code point ranges swept exhaustively (in 4096-code-point documents).
pub const SWEEP_RANGES: &[(u32, u32)] = &[(0, 0x32400), (0xE0000, 0xE1000)];

/// The whole corpus: specials = all added-token strings of the vocabulary.
pub fn corpus(specials: &[String]) -> Vec<Doc> {
    let mut rng = Rng::new(SEED);
    let mut docs = Vec::new();
    let kinds: &[&'static str] = &[
        "english",
        "italian",
        "chinese",
        "japanese",
        "korean",
        "code",
        "emoji",
        "whitespace",
        "digits",
        "specials",
        "unicode",
        "runs",
        "mixed",
    ];
    // Every added token alone and between words.
    for (i, t) in specials.iter().enumerate() {
        let text = match i % 4 {
            0 => t.clone(),
            1 => format!("x{t}y"),
            2 => format!(" {t} "),
            _ => format!("\n{t}\n"),
        };
        docs.push(Doc {
            kind: "special-alone",
            text,
        });
    }
    for round in 0..100 {
        for &kind in kinds {
            let text = match kind {
                "english" => english(&mut rng),
                "italian" => italian(&mut rng),
                "chinese" => chinese(&mut rng),
                "japanese" => japanese(&mut rng),
                "korean" => korean(&mut rng),
                "code" => code(&mut rng),
                "emoji" => emoji(&mut rng),
                "whitespace" => whitespace(&mut rng),
                "digits" => digits(&mut rng),
                "specials" => specials_doc(&mut rng, specials),
                "unicode" => random_unicode(&mut rng),
                "runs" => runs(&mut rng),
                _ => mixed(&mut rng, specials),
            };
            let _ = round;
            docs.push(Doc { kind, text });
        }
    }
    for &(lo, hi) in SWEEP_RANGES {
        let mut a = lo;
        while a < hi {
            let b = (a + 4096).min(hi);
            docs.push(Doc {
                kind: "sweep",
                text: sweep(a, b),
            });
            a = b;
        }
    }
    docs
}

/// Binary corpus file: for each document the kind then the text, each as a u32 LE byte
/// length followed by UTF-8 bytes.
pub fn serialize(docs: &[Doc]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in docs {
        for s in [d.kind, d.text.as_str()] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    out
}
