//! Running the real `ds4-server` binary (demo model) on a free port.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

pub struct Bin {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Vec<String>,
    /// stderr lines after the ready line, as they come.
    pub later: Arc<Mutex<Vec<String>>>,
}

/// Start the binary with `args` (plus `--port 0`) and wait for its ready line (the port is
/// bound before the model loads; `ready` comes once requests are served).
pub fn spawn(args: &[&str]) -> Bin {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ds4-server"))
        .args(args)
        .args(["--port", "0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start ds4-server");
    let stderr = child.stderr.take().unwrap();
    let mut r = BufReader::new(stderr);
    let mut log = Vec::new();
    let addr = loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("ds4-server exited before listening:\n{}", log.join(""));
        }
        log.push(line.clone());
        if let Some(a) = line.trim().split("ready on http://").nth(1) {
            break a.parse::<SocketAddr>().unwrap();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe; the lines
    // after the ready line stay readable through `later`.
    let later = Arc::new(Mutex::new(Vec::new()));
    let sink = later.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            sink.lock().unwrap().push(std::mem::take(&mut line));
        }
    });
    Bin {
        child,
        addr,
        log,
        later,
    }
}

impl Bin {
    /// SIGTERM and wait; returns the exit status code.
    pub fn terminate(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Bin {
    /// Wait (up to 20 s) for a later stderr line containing `needle`.
    pub fn wait_log(&self, needle: &str) -> Option<String> {
        for _ in 0..400 {
            if let Some(l) = self
                .later
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return Some(l.clone());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }

    /// Wait for the process to exit on its own; returns the exit status code.
    pub fn wait(mut self) -> Option<i32> {
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
