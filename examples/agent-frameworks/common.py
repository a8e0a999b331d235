"""What every example shares: where the server binary is, and how a tool result is checked."""

import json
import os
import sys

# The server, started by each framework's MCP client over stdio against the
# embedded demo BigID. Put your own command here, with BIGID_URL and
# credentials in its environment, to use a real BigID.
SERVER = os.environ.get("BIGID_AUTH_MCP") or (sys.argv[1] if len(sys.argv) > 1 else "bigid-auth-mcp")
ARGS = ["--demo"]
TOOLS = {"create_session", "refresh_access_token"}


def summarise(tool: str, structured: dict) -> str:
    """A one-line account of a successful result, without the token itself (a secret)."""
    if structured.get("success") is not True:
        raise SystemExit(f"{tool} did not succeed: {json.dumps(structured)[:300]}")
    token = structured.get("auth_token") or structured.get("systemToken")
    if not token:
        raise SystemExit(f"{tool} returned no token")
    extra = {k: structured[k] for k in ("username", "permission_count", "cached", "expires_at") if k in structured}
    return f"{tool}: success, token of {len(token)} characters, {json.dumps(extra)}"
