#!/usr/bin/env bash
# Runs each agent-framework example against the server's embedded demo BigID:
# no LLM, no API key, no BigID account. Each lists the tools through the
# framework's MCP client and calls both.
#
#   examples/agent-frameworks/run.sh [SERVER-BINARY]
#
# SERVER-BINARY defaults to a debug build made here (cargo build --locked).
# The frameworks go into a virtualenv under target/ (pinned in requirements.txt).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
binary=${1:-}
if [ -n "$binary" ]; then
  binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")
else
  cargo build --manifest-path "$root/Cargo.toml" --locked --quiet
  binary="$root/target/debug/bigid-auth-mcp"
fi
venv="$root/target/agent-frameworks-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"

passed=0 failed=0
for example in langchain_example openai_agents_example pydantic_ai_example; do
  echo "== $example"
  if (cd "$here" && BIGID_AUTH_MCP="$binary" timeout 120 "$venv/bin/python" "$example.py"); then
    passed=$((passed + 1))
  else
    echo "!! $example failed" >&2
    failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
