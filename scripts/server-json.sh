#!/usr/bin/env bash
# Prints server.json for the MCP registry with each bundle's SHA-256 filled
# in from the .mcpb files in DIR (the release's bundles):
#
#   scripts/server-json.sh DIR > server.json && mcp-publisher publish
#
# The committed server.json carries zeros there: a bundle's checksum is known
# only once the release has built it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:?usage: scripts/server-json.sh DIR-WITH-MCPB-FILES}
node - "$root/server.json" "$dir" <<'JS'
const fs = require("fs");
const path = require("path");
const crypto = require("crypto");
const [src, dir] = process.argv.slice(2);
const server = JSON.parse(fs.readFileSync(src, "utf8"));
for (const pkg of server.packages) {
  const file = path.join(dir, path.basename(new URL(pkg.identifier).pathname));
  if (!fs.existsSync(file)) {
    console.error(`server-json: ${file} is missing`);
    process.exit(1);
  }
  pkg.fileSha256 = crypto.createHash("sha256").update(fs.readFileSync(file)).digest("hex");
}
process.stdout.write(JSON.stringify(server, null, 2) + "\n");
JS
