//! Output JSON with a fixed key order and ds4's escaping (spec §1.1: only
//! `"` `\` `\n` `\r` `\t` and bytes < 0x20 are escaped; `/` and non-ASCII raw).

use std::fmt::Write as _;

/// An output JSON value. Objects keep insertion order.
#[derive(Debug, Clone, PartialEq)]
pub enum J {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    /// Pre-serialised JSON text inserted verbatim.
    Raw(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    pub fn obj() -> J {
        J::Obj(Vec::new())
    }

    /// Append a member (no-op on non-objects).
    pub fn with(mut self, k: &str, v: impl Into<J>) -> J {
        if let J::Obj(m) = &mut self {
            m.push((k.to_string(), v.into()));
        }
        self
    }

    /// Insert a member at position `pos` (clamped).
    pub fn insert_at(&mut self, pos: usize, k: &str, v: impl Into<J>) {
        if let J::Obj(m) = self {
            let pos = pos.min(m.len());
            m.insert(pos, (k.to_string(), v.into()));
        }
    }

    pub fn push(&mut self, k: &str, v: impl Into<J>) {
        if let J::Obj(m) = self {
            m.push((k.to_string(), v.into()));
        }
    }

    pub fn write(&self, out: &mut String) {
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Int(i) => {
                let _ = write!(out, "{i}");
            }
            J::Str(s) => escape_into(s, out),
            J::Raw(r) => out.push_str(r),
            J::Arr(a) => {
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            J::Obj(m) => {
                out.push('{');
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    escape_into(k, out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }

    pub fn to_json(&self) -> String {
        let mut s = String::new();
        self.write(&mut s);
        s
    }
}

impl std::fmt::Display for J {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_json())
    }
}

impl From<&str> for J {
    fn from(s: &str) -> J {
        J::Str(s.to_string())
    }
}
impl From<String> for J {
    fn from(s: String) -> J {
        J::Str(s)
    }
}
impl From<&String> for J {
    fn from(s: &String) -> J {
        J::Str(s.clone())
    }
}
impl From<bool> for J {
    fn from(b: bool) -> J {
        J::Bool(b)
    }
}
impl From<i64> for J {
    fn from(i: i64) -> J {
        J::Int(i)
    }
}
impl From<usize> for J {
    fn from(i: usize) -> J {
        J::Int(i as i64)
    }
}
impl From<u64> for J {
    fn from(i: u64) -> J {
        J::Int(i as i64)
    }
}
impl From<Vec<J>> for J {
    fn from(v: Vec<J>) -> J {
        J::Arr(v)
    }
}

/// `"…"` with ds4's escaping.
pub fn escape_into(s: &str, out: &mut String) {
    out.push('"');
    escape_body(s, out);
    out.push('"');
}

/// Escaped string body without quotes.
pub fn escape_body(s: &str, out: &mut String) {
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

pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    escape_into(s, &mut o);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_and_escaping() {
        let j = J::obj()
            .with("b", 1i64)
            .with("a", "x\"/\n\u{1}é")
            .with("n", J::Null)
            .with("r", J::Raw("{}".into()));
        assert_eq!(
            j.to_json(),
            r#"{"b":1,"a":"x\"/\n\u0001é","n":null,"r":{}}"#
        );
    }
}
