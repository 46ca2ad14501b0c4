#!/usr/bin/env bash
# The test command of the README (CI runs exactly this via .ci/run):
# the whole workspace test suite on the CPU, including the real-client tests
# that drive ds4-server with the official openai / anthropic Python SDKs.
set -euo pipefail
cd "$(dirname "$0")"

# Pinned Python SDKs for crates/ds4-server/tests/sdk.rs, in a venv under target/.
venv="$PWD/target/sdk-venv"
if ! "$venv/bin/python" -c "import openai, anthropic" >/dev/null 2>&1; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        -r tools/sdk-tests/requirements.txt -c tools/sdk-tests/constraints.txt
fi
export DS4_SDK_PYTHON="$venv/bin/python"

cargo test --workspace --release
