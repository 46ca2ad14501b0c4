//! The official `openai` and `anthropic` Python SDKs drive every endpoint
//! (tools/sdk-tests/sdk_test.py) against in-process servers running the echo
//! test double. Python comes from `DS4_SDK_PYTHON` (default `python3`) and
//! must have the pinned SDKs of tools/sdk-tests/requirements.txt.

mod common;

#[path = "common/bin.rs"]
mod bin;

use std::path::PathBuf;
use std::process::Command;

use common::*;

const SETUP: &str = "python3 -m venv .venv-sdk && .venv-sdk/bin/pip install -r tools/sdk-tests/requirements.txt, then run with DS4_SDK_PYTHON=$PWD/.venv-sdk/bin/python";

fn sdk_python() -> String {
    let python = std::env::var("DS4_SDK_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import openai, anthropic"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "{python} cannot import the openai/anthropic SDKs ({}). Set up: {SETUP}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("cannot run {python} ({e}). Set up: {SETUP}"),
    }
    python
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/sdk-tests/sdk_test.py")
}

/// Content-level checks against the echo test double (it says what the
/// request tells it to, so reasoning, text and tool calls are known).
#[test]
fn official_sdks_drive_every_endpoint() {
    let python = sdk_python();
    let s = start(cfg(16384));
    let mut auth_cfg = cfg(4096);
    auth_cfg.api_key = Some("sdk-secret".into());
    let auth = start(auth_cfg);
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/sdk-tests/sdk_test.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(format!("http://{}", s.addr))
        .arg("--auth-url")
        .arg(format!("http://{}", auth.addr))
        .arg("--api-key")
        .arg("sdk-secret")
        .output()
        .expect("run sdk_test.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    assert!(
        stdout.contains("PASS anthropic_claude_code_shapes"),
        "{stdout}"
    );
}

/// Shape-level checks against the real binary serving the embedded demo model
/// (real tokenizer, synthetic weights: the text is noise).
#[test]
fn official_sdks_against_the_demo_binary() {
    let python = sdk_python();
    let b = bin::spawn(&["--ctx", "4096"]);
    let out = Command::new(&python)
        .arg(script())
        .arg(format!("http://{}", b.addr))
        .arg("--noise")
        .output()
        .expect("run sdk_test.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    assert!(stdout.contains("PASS noise_count_tokens"), "{stdout}");
    assert_eq!(b.terminate(), Some(0));
}
