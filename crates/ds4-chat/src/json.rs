//! A small JSON value model with exactly the semantics the chat format needs.
//!
//! Why not `serde_json`: the official DeepSeek encoder is Python, so arguments and
//! tool schemas must be re-serialized the way `json.dumps(x, ensure_ascii=False)`
//! does it after `json.loads`: integers of any size kept exactly, floats printed
//! with Python's `repr`, duplicate object keys collapsed to "last value at the
//! first position", `NaN`/`Infinity` accepted. At the same time the API side
//! (spec §3.4) needs the raw number spellings and every duplicate key. Keeping the
//! number text and all members lets one parser serve both.

use std::fmt::Write as _;

/// A parsed JSON value. Numbers keep their source spelling; objects keep every
/// member in source order, duplicates included.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// The number exactly as written (`1e5`, `-0`, `1.50`, or the Python
    /// extensions `NaN`, `Infinity`, `-Infinity`).
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

/// A JSON syntax error with the byte offset where it was detected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub offset: usize,
    pub message: String,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.message, self.offset)
    }
}

impl std::error::Error for JsonError {}

/// Maximum nesting depth accepted by the parser (protects the stack).
pub const MAX_DEPTH: usize = 512;

impl Json {
    /// Parses JSON text the way Python's `json.loads` does (strict mode):
    /// surrounding whitespace allowed, trailing data rejected, raw control
    /// characters inside strings rejected, `NaN`/`Infinity`/`-Infinity` accepted.
    /// A lone UTF-16 surrogate escape becomes U+FFFD (Rust strings cannot hold it).
    pub fn parse(text: &str) -> Result<Json, JsonError> {
        Self::parse_bytes(text.as_bytes())
    }

    /// [`Json::parse`] over bytes; invalid UTF-8 inside strings is an error.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Json, JsonError> {
        let mut p = Parser { s: bytes, i: 0 };
        p.ws();
        let v = p.value(0)?;
        p.ws();
        if p.i != bytes.len() {
            return Err(p.err("extra data after JSON value"));
        }
        Ok(v)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&[(String, Json)]> {
        match self {
            Json::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    /// Python truthiness of the value `json.loads` would produce: `null`,
    /// `false`, zero, `""`, `[]` and `{}` are false.
    pub fn python_truthy(&self) -> bool {
        match self {
            Json::Null => false,
            Json::Bool(b) => *b,
            Json::Number(_) => self.as_f64().is_none_or(|v| v != 0.0),
            Json::String(s) => !s.is_empty(),
            Json::Array(a) => !a.is_empty(),
            Json::Object(o) => !o.is_empty(),
        }
    }

    /// The number as f64 (Python `float()` semantics, correctly rounded).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Number(n) => number_to_f64(n),
            _ => None,
        }
    }

    /// Member lookup with JavaScript/Python-dict semantics: the **last**
    /// member with that key wins.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(o) => o.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The Python-dict view of an object: duplicate keys collapse to the
    /// last value, kept at the position of the first occurrence.
    pub fn python_members(&self) -> Option<Vec<(&str, &Json)>> {
        let members = self.as_object()?;
        let mut out: Vec<(&str, &Json)> = Vec::with_capacity(members.len());
        // key -> position in `out`: linear in the member count (a schema with
        // 100k keys must not stall the server)
        let mut at: std::collections::HashMap<&str, usize> =
            std::collections::HashMap::with_capacity(members.len());
        for (k, v) in members {
            match at.entry(k.as_str()) {
                std::collections::hash_map::Entry::Occupied(e) => out[*e.get()].1 = v,
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(out.len());
                    out.push((k.as_str(), v));
                }
            }
        }
        Some(out)
    }

    /// Python `json.dumps(x, ensure_ascii=False)` of the value that
    /// `json.loads` would have produced.
    pub fn to_python(&self) -> String {
        let mut out = String::new();
        self.write_python(&mut out);
        out
    }

    fn write_python(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) => out.push_str(&python_number(n)),
            Json::String(s) => python_string(s, out),
            Json::Array(a) => {
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.write_python(out);
                }
                out.push(']');
            }
            Json::Object(_) => {
                let members = self.python_members().unwrap_or_default();
                out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    python_string(k, out);
                    out.push_str(": ");
                    v.write_python(out);
                }
                out.push('}');
            }
        }
    }

    /// Compact serialization for API wire objects (spec §3.4): no whitespace,
    /// number spellings kept, every member kept in order, strings escaped with
    /// [`json_escape`].
    pub fn to_compact(&self) -> String {
        let mut out = String::new();
        self.write_compact(&mut out);
        out
    }

    fn write_compact(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) => out.push_str(n),
            Json::String(s) => json_escape_into(s, out),
            Json::Array(a) => {
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write_compact(out);
                }
                out.push(']');
            }
            Json::Object(o) => {
                out.push('{');
                for (i, (k, v)) in o.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json_escape_into(k, out);
                    out.push(':');
                    v.write_compact(out);
                }
                out.push('}');
            }
        }
    }
}

/// Is `n` (a number spelling accepted by the parser) an integer literal?
fn is_int_literal(n: &str) -> bool {
    !n.contains(['.', 'e', 'E']) && n != "NaN" && !n.ends_with("Infinity")
}

fn number_to_f64(n: &str) -> Option<f64> {
    match n {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => n.parse::<f64>().ok(),
    }
}

/// Python's rendering of a number literal after `json.loads`: integers stay
/// exact (`-0` becomes `0`), everything else goes through `float` and `repr`.
pub fn python_number(n: &str) -> String {
    if is_int_literal(n) {
        let (neg, digits) = match n.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, n),
        };
        let trimmed = digits.trim_start_matches('0');
        if trimmed.is_empty() {
            return "0".to_string();
        }
        let mut s = String::with_capacity(trimmed.len() + 1);
        if neg {
            s.push('-');
        }
        s.push_str(trimmed);
        return s;
    }
    match number_to_f64(n) {
        Some(v) => python_float_repr(v),
        None => n.to_string(),
    }
}

/// Python `json.dumps` of a float: `repr(x)`, with `Infinity`, `-Infinity`, `NaN`.
pub fn python_float_repr(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    // Shortest round-trip digits and decimal exponent, from Rust's `{:e}`.
    let sci = format!("{v:e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mant) = match mant.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mant),
    };
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let ndigits = digits.len() as i32;
    let decpt = exp + 1; // value = 0.DIGITS * 10^decpt
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if decpt > 16 || decpt <= -4 {
        out.push_str(&digits[..1]);
        if ndigits > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let _ = write!(out, "{:02}", exp.unsigned_abs());
    } else if decpt <= 0 {
        out.push_str("0.");
        for _ in 0..(-decpt) {
            out.push('0');
        }
        out.push_str(&digits);
    } else if decpt >= ndigits {
        out.push_str(&digits);
        for _ in 0..(decpt - ndigits) {
            out.push('0');
        }
        out.push_str(".0");
    } else {
        out.push_str(&digits[..decpt as usize]);
        out.push('.');
        out.push_str(&digits[decpt as usize..]);
    }
    out
}

/// Python `json.dumps(s, ensure_ascii=False)` of a string.
pub fn python_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// ds4's `json_escape` (spec §3.4): quotes, escapes `"` `\` `\n` `\r` `\t`,
/// other bytes below 0x20 as `\u00xx`; everything else raw.
pub fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    json_escape_into(s, &mut out);
    out
}

/// [`json_escape`] appending to `out`.
pub fn json_escape_into(s: &str, out: &mut String) {
    out.push('"');
    json_escape_body(s, out);
    out.push('"');
}

/// [`json_escape`] without the surrounding quotes (for streamed fragments).
pub fn json_escape_body(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err(&self, msg: &str) -> JsonError {
        JsonError {
            offset: self.i,
            message: msg.to_string(),
        }
    }

    fn ws(&mut self) {
        while let Some(&c) = self.s.get(self.i) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.err("JSON nested too deeply"));
        }
        let Some(&c) = self.s.get(self.i) else {
            return Err(self.err("expecting value"));
        };
        match c {
            b'{' => {
                self.i += 1;
                let mut members = Vec::new();
                self.ws();
                if self.eat("}") {
                    return Ok(Json::Object(members));
                }
                loop {
                    self.ws();
                    if self.s.get(self.i) != Some(&b'"') {
                        return Err(self.err("expecting property name enclosed in double quotes"));
                    }
                    let k = self.string()?;
                    self.ws();
                    if !self.eat(":") {
                        return Err(self.err("expecting ':' delimiter"));
                    }
                    self.ws();
                    let v = self.value(depth + 1)?;
                    members.push((k, v));
                    self.ws();
                    if self.eat("}") {
                        return Ok(Json::Object(members));
                    }
                    if !self.eat(",") {
                        return Err(self.err("expecting ',' delimiter"));
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.eat("]") {
                    return Ok(Json::Array(items));
                }
                loop {
                    self.ws();
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    if self.eat("]") {
                        return Ok(Json::Array(items));
                    }
                    if !self.eat(",") {
                        return Err(self.err("expecting ',' delimiter"));
                    }
                }
            }
            b'"' => Ok(Json::String(self.string()?)),
            b'n' if self.eat("null") => Ok(Json::Null),
            b't' if self.eat("true") => Ok(Json::Bool(true)),
            b'f' if self.eat("false") => Ok(Json::Bool(false)),
            b'N' if self.eat("NaN") => Ok(Json::Number("NaN".into())),
            b'I' if self.eat("Infinity") => Ok(Json::Number("Infinity".into())),
            b'-' if self.eat("-Infinity") => Ok(Json::Number("-Infinity".into())),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(self.err("expecting value")),
        }
    }

    fn digits(&mut self) -> usize {
        let st = self.i;
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - st
    }

    fn number(&mut self) -> Result<Json, JsonError> {
        let st = self.i;
        if self.s[self.i] == b'-' {
            self.i += 1;
        }
        match self.s.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("expecting value")),
        }
        // Python's scanner: the fraction/exponent are optional groups; a '.'
        // or 'e' not followed by digits is left unconsumed (then "extra data").
        if self.s.get(self.i) == Some(&b'.')
            && self.s.get(self.i + 1).is_some_and(|c| c.is_ascii_digit())
        {
            self.i += 1;
            self.digits();
        }
        if matches!(self.s.get(self.i), Some(b'e' | b'E')) {
            let save = self.i;
            self.i += 1;
            if matches!(self.s.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                self.i = save;
            }
        }
        let text = std::str::from_utf8(&self.s[st..self.i]).unwrap_or("0");
        Ok(Json::Number(text.to_string()))
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .ok_or_else(|| self.err("invalid \\uXXXX escape"))?;
        let mut v = 0u32;
        for &c in h {
            let d = (c as char)
                .to_digit(16)
                .ok_or_else(|| self.err("invalid \\uXXXX escape"))?;
            v = v * 16 + d;
        }
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.i += 1; // opening quote
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(&c) = self.s.get(self.i) else {
                return Err(self.err("unterminated string"));
            };
            match c {
                b'"' => {
                    self.i += 1;
                    return String::from_utf8(out).map_err(|_| self.err("invalid UTF-8 in string"));
                }
                b'\\' => {
                    self.i += 1;
                    let Some(&e) = self.s.get(self.i) else {
                        return Err(self.err("unterminated string"));
                    };
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let u = self.hex4()?;
                            if (0xD800..0xDC00).contains(&u)
                                && self.s.get(self.i..self.i + 2) == Some(b"\\u")
                            {
                                let save = self.i;
                                self.i += 2;
                                let lo = self.hex4()?;
                                if (0xDC00..0xE000).contains(&lo) {
                                    let cp = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
                                    char::from_u32(cp).unwrap_or('\u{FFFD}')
                                } else {
                                    self.i = save;
                                    '\u{FFFD}'
                                }
                            } else {
                                char::from_u32(u).unwrap_or('\u{FFFD}')
                            }
                        }
                        _ => {
                            self.i -= 1;
                            return Err(self.err("invalid \\escape"));
                        }
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                c if c < 0x20 => return Err(self.err("invalid control character in string")),
                c => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }
}

/// Minifies JSON text (removes whitespace outside strings; everything else,
/// including number spellings and escapes, is kept). Returns `None` if the
/// text is not valid JSON.
pub fn minify(text: &str) -> Option<String> {
    Json::parse(text).ok()?;
    let mut out = String::with_capacity(text.len());
    let mut in_str = false;
    let mut esc = false;
    for c in text.chars() {
        if in_str {
            out.push(c);
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_dumps_basics() {
        let v = Json::parse(r#"{ "title" : "caf\u00e9", "d": 1e5, "g": 1.50, "a": [ "a" , "b" ], "n": null, "t": true }"#).unwrap();
        assert_eq!(
            v.to_python(),
            r#"{"title": "café", "d": 100000.0, "g": 1.5, "a": ["a", "b"], "n": null, "t": true}"#
        );
    }

    #[test]
    fn python_duplicate_keys_last_value_first_position() {
        let v = Json::parse(r#"{"a": 1, "b": 2, "a": 3}"#).unwrap();
        assert_eq!(v.to_python(), r#"{"a": 3, "b": 2}"#);
        assert_eq!(v.to_compact(), r#"{"a":1,"b":2,"a":3}"#);
        assert_eq!(v.get("a"), Some(&Json::Number("3".into())));
    }

    #[test]
    fn python_members_of_a_huge_object() {
        // 200k keys, then the first 1000 again with new values: the Python view
        // keeps 200k members, the repeated ones at their first position
        let n = 200_000;
        let mut text = String::from("{");
        for i in 0..n {
            text.push_str(&format!("\"k{i}\": {i},"));
        }
        for i in 0..1000 {
            text.push_str(&format!("\"k{i}\": -{i},"));
        }
        text.pop();
        text.push('}');
        let v = Json::parse(&text).unwrap();
        let m = v.python_members().unwrap();
        assert_eq!(m.len(), n);
        for (i, (k, val)) in m.iter().enumerate() {
            assert_eq!(*k, format!("k{i}"));
            let want = if i < 1000 {
                format!("-{i}")
            } else {
                format!("{i}")
            };
            assert_eq!(**val, Json::Number(want));
        }
    }

    #[test]
    fn python_numbers() {
        assert_eq!(python_number("-0"), "0");
        assert_eq!(python_number("-0.0"), "-0.0");
        assert_eq!(
            python_number("123456789012345678901234567890"),
            "123456789012345678901234567890"
        );
        assert_eq!(python_number("1e16"), "1e+16");
        assert_eq!(python_number("1e15"), "1000000000000000.0");
        assert_eq!(python_number("0.0001"), "0.0001");
        assert_eq!(python_number("0.00001"), "1e-05");
        assert_eq!(python_number("1.5e300"), "1.5e+300");
        assert_eq!(python_number("1e400"), "Infinity");
        assert_eq!(python_number("-1e400"), "-Infinity");
        assert_eq!(python_number("NaN"), "NaN");
        assert_eq!(python_number("2.5E-3"), "0.0025");
        assert_eq!(python_number("123.456e2"), "12345.6");
    }

    #[test]
    fn python_string_escapes() {
        let mut s = String::new();
        python_string("a\"b\\c\n\r\t\u{8}\u{c}\u{1}\u{1f}/\u{7f}é😀", &mut s);
        assert_eq!(s, "\"a\\\"b\\\\c\\n\\r\\t\\b\\f\\u0001\\u001f/\u{7f}é😀\"");
    }

    #[test]
    fn strictness_like_python() {
        assert!(Json::parse("{\"a\": \"x\ny\"}").is_err());
        assert!(Json::parse("01").is_err());
        assert!(Json::parse("1.").is_err());
        assert!(Json::parse("[1,]").is_err());
        assert!(Json::parse("{} x").is_err());
        assert!(Json::parse(" [1] ").is_ok());
        assert!(Json::parse("\"\\x\"").is_err());
        assert_eq!(
            Json::parse("\"\\ud83d\\ude00\"").unwrap(),
            Json::String("😀".into())
        );
        assert_eq!(
            Json::parse("\"\\ud800x\"").unwrap(),
            Json::String("\u{FFFD}x".into())
        );
        let deep = "[".repeat(MAX_DEPTH + 5);
        assert!(Json::parse(&deep).is_err());
    }

    #[test]
    fn minify_keeps_spellings() {
        assert_eq!(
            minify("{ \"a\" : [ 1e5 , 1.50 ], \"s\": \"x  y\\\"\" }").unwrap(),
            "{\"a\":[1e5,1.50],\"s\":\"x  y\\\"\"}"
        );
        assert_eq!(minify("[1,"), None);
    }
}
