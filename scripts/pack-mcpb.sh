#!/usr/bin/env bash
# Packs the MCP Bundle (.mcpb) for one platform with the official MCPB CLI.
#
#   scripts/pack-mcpb.sh [--target TRIPLE] [--out DIR] [BINARY]
#
# BINARY defaults to the release build for TRIPLE (default: the host), built
# here with --locked. Writes DIR/bigid-auth-mcp-<version>-<TRIPLE>.mcpb
# (DIR defaults to target/mcpb) and prints its path on stdout.
#
# The CLI comes from tools/node (`npm ci --prefix tools/node`), or else from
# the npm registry through npx at the version pinned there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target="" out="$root/target/mcpb" binary="" cross=""
while [ $# -gt 0 ]; do
  case "$1" in
    --target) target=$2 cross=1; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "pack-mcpb: unknown option $1" >&2; exit 2 ;;
    *) binary=$1; shift ;;
  esac
done

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n1)
if [ -z "$target" ]; then
  target=$(rustc -vV | sed -n 's/^host: //p')
fi
case "$target" in
  *windows*) os=win32 exe=.exe ;;
  *apple-darwin*) os=darwin exe= ;;
  *linux*) os=linux exe= ;;
  *) echo "pack-mcpb: no MCP Bundle platform for target $target" >&2; exit 2 ;;
esac

if [ -z "$binary" ]; then
  if [ -n "$cross" ]; then
    cargo build --manifest-path "$root/Cargo.toml" --release --locked --target "$target" >&2
    binary="$root/target/$target/release/bigid-auth-mcp$exe"
  else
    cargo build --manifest-path "$root/Cargo.toml" --release --locked >&2
    binary="$root/target/release/bigid-auth-mcp$exe"
  fi
fi
[ -x "$binary" ] || { echo "pack-mcpb: $binary is not an executable" >&2; exit 2; }

pinned=$(node -p "require('$root/tools/node/package.json').dependencies['@anthropic-ai/mcpb']")
if [ -x "$root/tools/node/node_modules/.bin/mcpb" ]; then
  mcpb() { "$root/tools/node/node_modules/.bin/mcpb" "$@"; }
else
  mcpb() { npx --yes "@anthropic-ai/mcpb@$pinned" "$@"; }
fi

stage="$out/$target/bundle"
rm -rf "$stage"
mkdir -p "$stage/server"
cp "$root/packaging/mcpb/icon.png" "$stage/"
cp "$binary" "$stage/server/bigid-auth-mcp$exe"
chmod 755 "$stage/server/bigid-auth-mcp$exe"
# One bundle per platform: the manifest says which, and on Windows the entry
# point is the .exe. The version must be the crate's, or the bundle lies.
node - "$root/packaging/mcpb/manifest.json" "$stage/manifest.json" "$version" "$os" "$exe" <<'JS'
const fs = require("fs");
const [src, dst, version, os, exe] = process.argv.slice(2);
const m = JSON.parse(fs.readFileSync(src, "utf8"));
if (m.version !== version) {
  console.error(`pack-mcpb: manifest.json says version ${m.version}, Cargo.toml ${version}`);
  process.exit(1);
}
m.compatibility = { ...m.compatibility, platforms: [os] };
m.server.entry_point = `server/bigid-auth-mcp${exe}`;
fs.writeFileSync(dst, JSON.stringify(m, null, 2) + "\n");
JS

mcpb validate "$stage/manifest.json" >&2
bundle="$out/bigid-auth-mcp-$version-$target.mcpb"
rm -f "$bundle"
mcpb pack "$stage" "$bundle" >&2
echo "$bundle"
