//! Streaming printer of generated text (spec §3.2): in thinking mode the
//! `<think>` / `</think>` tags are removed, reasoning is written in grey
//! (`ESC[90m`, only on a terminal) and a newline is forced after `</think>`;
//! the output always ends with a newline.
//!
//! The generated text is printed verbatim otherwise (the CLI has no tools, so
//! a DSML block the model may emit is shown as written rather than parsed).

use std::io::{self, Write};

const THINK_OPEN: &[u8] = b"<think>";
const THINK_CLOSE: &[u8] = b"</think>";
const GREY: &[u8] = b"\x1b[90m";
const RESET: &[u8] = b"\x1b[0m";

pub struct Printer<W: Write> {
    out: W,
    /// Split reasoning from the answer (thinking modes).
    format_thinking: bool,
    in_think: bool,
    color: bool,
    grey_open: bool,
    last_newline: bool,
    /// A possible partial tag held back.
    pending: Vec<u8>,
    /// Bytes written as reasoning / as answer (for callers and tests).
    reasoning_bytes: usize,
    answer_bytes: usize,
}

impl<W: Write> Printer<W> {
    /// `thinking`: the prompt ended with `<think>` (output starts inside
    /// reasoning). `color`: write ANSI grey for reasoning.
    pub fn new(out: W, thinking: bool, color: bool) -> Self {
        Printer {
            out,
            format_thinking: thinking,
            in_think: thinking,
            color,
            grey_open: false,
            last_newline: true,
            pending: Vec::new(),
            reasoning_bytes: 0,
            answer_bytes: 0,
        }
    }

    pub fn reasoning_bytes(&self) -> usize {
        self.reasoning_bytes
    }

    pub fn answer_bytes(&self) -> usize {
        self.answer_bytes
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    fn set_grey(&mut self) -> io::Result<()> {
        if self.color && !self.grey_open {
            self.out.write_all(GREY)?;
            self.grey_open = true;
        }
        Ok(())
    }

    fn reset_color(&mut self) -> io::Result<()> {
        if self.grey_open {
            self.out.write_all(RESET)?;
            self.grey_open = false;
        }
        Ok(())
    }

    fn write_plain(&mut self, b: &[u8]) -> io::Result<()> {
        if b.is_empty() {
            return Ok(());
        }
        if self.in_think {
            self.set_grey()?;
            self.reasoning_bytes += b.len();
        } else {
            self.reset_color()?;
            self.answer_bytes += b.len();
        }
        self.out.write_all(b)?;
        self.last_newline = b.last() == Some(&b'\n');
        Ok(())
    }

    /// Writes a piece of generated text.
    pub fn push(&mut self, text: &[u8]) -> io::Result<()> {
        if !self.format_thinking {
            self.write_plain(text)?;
            return self.out.flush();
        }
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(text);
        self.process(&buf, false)?;
        self.out.flush()
    }

    fn process(&mut self, buf: &[u8], finish: bool) -> io::Result<()> {
        let mut i = 0;
        let mut run_start = 0;
        while i < buf.len() {
            let rest = &buf[i..];
            if rest[0] == b'<' {
                if rest.starts_with(THINK_OPEN) {
                    self.write_plain(&buf[run_start..i])?;
                    self.in_think = true;
                    i += THINK_OPEN.len();
                    run_start = i;
                    continue;
                }
                if rest.starts_with(THINK_CLOSE) {
                    self.write_plain(&buf[run_start..i])?;
                    self.in_think = false;
                    self.reset_color()?;
                    if !self.last_newline {
                        self.out.write_all(b"\n")?;
                        self.last_newline = true;
                    }
                    i += THINK_CLOSE.len();
                    run_start = i;
                    continue;
                }
                if !finish && (THINK_OPEN.starts_with(rest) || THINK_CLOSE.starts_with(rest)) {
                    self.write_plain(&buf[run_start..i])?;
                    self.pending = rest.to_vec();
                    return Ok(());
                }
            }
            i += 1;
        }
        self.write_plain(&buf[run_start..])
    }

    /// Flushes a held partial tag, closes the color and ends the line.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.format_thinking {
            let buf = std::mem::take(&mut self.pending);
            self.process(&buf, true)?;
        }
        self.reset_color()?;
        if !self.last_newline {
            self.out.write_all(b"\n")?;
            self.last_newline = true;
        }
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(thinking: bool, color: bool, pieces: &[&str]) -> String {
        let mut p = Printer::new(Vec::new(), thinking, color);
        for s in pieces {
            p.push(s.as_bytes()).unwrap();
        }
        p.finish().unwrap();
        String::from_utf8(p.into_inner()).unwrap()
    }

    #[test]
    fn plain_mode_is_verbatim_plus_newline() {
        assert_eq!(
            run(false, true, &["a<think>b", "</think>c"]),
            "a<think>b</think>c\n"
        );
        assert_eq!(run(false, false, &["x\n"]), "x\n");
        assert_eq!(run(false, false, &[]), "");
    }

    #[test]
    fn thinking_split_at_any_piece_boundary() {
        let text = "<think>let me see</think>The answer.";
        // Every two-way split gives the same output.
        for cut in 0..=text.len() {
            let out = run(true, true, &[&text[..cut], &text[cut..]]);
            assert_eq!(
                out, "\x1b[90mlet me see\x1b[0m\nThe answer.\n",
                "cut at {cut}"
            );
            let out = run(true, false, &[&text[..cut], &text[cut..]]);
            assert_eq!(out, "let me see\nThe answer.\n", "cut at {cut}");
        }
    }

    #[test]
    fn counts_and_partial_tags() {
        let mut p = Printer::new(Vec::new(), true, false);
        p.push(b"r1\n</thi").unwrap();
        assert_eq!(p.get_ref().as_slice(), b"r1\n");
        p.push(b"nk>ans <b> </x").unwrap();
        p.finish().unwrap();
        assert_eq!((p.reasoning_bytes(), p.answer_bytes()), (3, 11));
        assert_eq!(
            String::from_utf8(p.into_inner()).unwrap(),
            "r1\nans <b> </x\n"
        );
        // A partial tag at the very end is flushed as text.
        assert_eq!(run(true, false, &["abc</th"]), "abc</th\n");
        // Reasoning cut by length: all of it is reasoning, colour closed.
        assert_eq!(
            run(true, true, &["never closed"]),
            "\x1b[90mnever closed\x1b[0m\n"
        );
    }
}
