//! The interactive chat driven under a pseudo-terminal: commands, live KV
//! reuse between turns, /ctx, /read, history, and Ctrl+C during generation.

mod common;

use std::process::Command;
use std::time::Duration;

use expectrl::{Regex, Session};

fn spawn(home: &std::path::Path, extra: &[&str]) -> Session {
    let mut c: Command = common::ds4(home);
    c.arg("-m").arg(common::tiny_model());
    c.args(extra);
    let mut s = Session::spawn(c).expect("spawn ds4 under a pty");
    s.set_expect_timeout(Some(Duration::from_secs(120)));
    s
}

/// Waits for the per-turn statistics line; returns (prompt tokens, reused).
fn turn_stats(s: &mut Session) -> (usize, usize) {
    let m = s
        .expect(Regex(r"ds4: prompt (\d+) tokens \((\d+) reused"))
        .expect("turn statistics");
    let num = |i: usize| -> usize {
        std::str::from_utf8(m.get(i).unwrap())
            .unwrap()
            .parse()
            .unwrap()
    };
    (num(1), num(2))
}

fn prompt(s: &mut Session) {
    s.expect("ds4> ").expect("prompt");
}

#[test]
fn commands_kv_reuse_ctx_read_and_history() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("q.txt"), "What is in this file?\n").unwrap();
    let mut s = spawn(home.path(), &["--temp", "0", "-n", "6", "-c", "8192"]);
    s.expect("/think-max").unwrap(); // help printed at start
    prompt(&mut s);

    s.send_line("hello").unwrap();
    let (p1, r1) = turn_stats(&mut s);
    assert_eq!(r1, 0, "first turn prefills everything");
    prompt(&mut s);

    s.send_line("/nothink").unwrap();
    s.expect("Thinking mode: off").unwrap();
    prompt(&mut s);

    // The second turn continues the live KV: the first prompt and the
    // generated tokens are reused.
    s.send_line("second question").unwrap();
    let (p2, r2) = turn_stats(&mut s);
    assert!(r2 > p1, "reused {r2} <= first prompt {p1}");
    assert!(p2 > r2);
    prompt(&mut s);

    // /ctx recreates the session: the conversation is kept, the KV is not.
    s.send_line("/ctx 4096").unwrap();
    s.expect("Context size: 4096").unwrap();
    prompt(&mut s);
    s.send_line("third").unwrap();
    let (p3, r3) = turn_stats(&mut s);
    assert_eq!(r3, 0);
    assert!(p3 > p2);
    prompt(&mut s);

    s.send_line("/think").unwrap();
    s.expect("Thinking mode: high").unwrap();
    prompt(&mut s);
    s.send_line("/think-max").unwrap();
    s.expect("Thinking mode: high (ctx below 393216)").unwrap();
    prompt(&mut s);

    s.send_line("/read q.txt").unwrap();
    let (p4, r4) = turn_stats(&mut s);
    assert!(r4 > p3 && p4 > r4, "({p4}, {r4}) after ({p3}, {r3})");
    prompt(&mut s);

    // Think Max applies once the context allows it; its prefix sits after
    // BOS, so switching it on or off cannot reuse the live KV.
    s.send_line("/ctx 400000").unwrap();
    s.expect("Thinking mode: max").unwrap();
    prompt(&mut s);
    s.send_line("max turn").unwrap();
    let (p5, r5) = turn_stats(&mut s);
    assert_eq!(r5, 0);
    assert!(p5 > p4 + 50, "Think Max prefix missing: {p5} vs {p4}");
    prompt(&mut s);
    s.send_line("another max turn").unwrap();
    let (_, r6) = turn_stats(&mut s);
    assert!(r6 > p5);
    prompt(&mut s);
    s.send_line("/think").unwrap();
    s.expect("Thinking mode: high").unwrap();
    prompt(&mut s);
    s.send_line("back to high").unwrap();
    let (_, r7) = turn_stats(&mut s);
    assert_eq!(r7, 0, "the removed prefix must not be reused");
    prompt(&mut s);

    s.send_line("/read missing.txt").unwrap();
    s.expect("cannot read missing.txt").unwrap();
    prompt(&mut s);
    s.send_line("/bogus").unwrap();
    s.expect("unknown command: /bogus").unwrap();
    prompt(&mut s);
    s.send_line("/ctx zero").unwrap();
    s.expect("/ctx needs a positive number").unwrap();
    prompt(&mut s);

    s.send_line("/quit").unwrap();
    s.expect(expectrl::Eof).unwrap();
    let status = s.get_process().wait().unwrap();
    assert!(
        matches!(status, expectrl::WaitStatus::Exited(_, 0)),
        "{status:?}"
    );
    let hist = std::fs::read_to_string(home.path().join(".ds4_history")).unwrap();
    for line in [
        "hello",
        "/nothink",
        "second question",
        "/ctx 4096",
        "/read q.txt",
    ] {
        assert!(hist.contains(line), "{line} missing from history:\n{hist}");
    }
}

#[test]
fn ctrl_c_stops_generation_and_keeps_the_partial_answer() {
    let home = tempfile::tempdir().unwrap();
    // Long generations (random weights rarely emit EOS): only Ctrl+C ends them.
    let mut s = spawn(home.path(), &["-n", "100000", "-c", "32768", "--seed", "5"]);
    prompt(&mut s);

    s.send_line("tell me a long story").unwrap();
    // Reasoning is shown in grey on a terminal: wait for it to start.
    s.expect("\x1b[90m").unwrap();
    s.send("\x03").unwrap();
    s.expect("ds4: interrupted").unwrap();
    let (p1, r1) = turn_stats(&mut s);
    assert_eq!(r1, 0);
    prompt(&mut s);

    // Ctrl+C at the prompt is ignored: a fresh prompt, same session.
    s.send("\x03").unwrap();
    prompt(&mut s);
    s.send_line("/help").unwrap();
    s.expect("Commands:").unwrap();
    prompt(&mut s);

    // The interrupted answer was kept (followed by EOS), so the next turn
    // reuses more than the first prompt.
    s.send_line("go on").unwrap();
    s.expect("\x1b[90m").unwrap();
    s.send("\x03").unwrap();
    s.expect("ds4: interrupted").unwrap();
    let (_, r2) = turn_stats(&mut s);
    assert!(r2 > p1, "reused {r2} <= first prompt {p1}");
    prompt(&mut s);

    s.send_line("/exit").unwrap();
    s.expect(expectrl::Eof).unwrap();
    let status = s.get_process().wait().unwrap();
    assert!(
        matches!(status, expectrl::WaitStatus::Exited(_, 0)),
        "{status:?}"
    );
}
