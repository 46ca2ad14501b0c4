#!/usr/bin/env bash
# The test command of the README: the whole workspace test suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")"
cargo test --workspace --release
