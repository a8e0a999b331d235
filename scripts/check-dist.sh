#!/usr/bin/env bash
# Builds this machine's release archive and installers with dist (what the
# release workflow runs per target), then checks them as a user gets them:
# the archive against its published checksum, the shell installer run offline
# into a scratch CARGO_HOME, and the installed binary driven over stdio by
# the MCP Python SDK smoke client (../shared/clients/mcp-smoke).
#
#   scripts/check-dist.sh [--no-build]
#
# A release build with fat LTO: several minutes. dist 0.33.0 comes from PyPI
# (a prebuilt binary) into target/dist-venv unless `dist` is on PATH.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if command -v dist >/dev/null; then
  dist=dist
else
  dist=target/dist-venv/bin/dist
  if [ ! -x "$dist" ]; then
    python3 -m venv target/dist-venv
    target/dist-venv/bin/pip install -q --disable-pip-version-check astral-dev-toolchain-cargo-dist==0.33.0
  fi
fi
host=$(rustc -vV | sed -n 's/^host: //p')
out=target/distrib

"$dist" plan >/dev/null
if [ "${1:-}" != --no-build ]; then
  "$dist" build --artifacts=all --target "$host"
fi

echo "== archive and checksum"
(cd "$out" && sha256sum -c "bigid-auth-mcp-$host.tar.xz.sha256")
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
tar -xJf "$out/bigid-auth-mcp-$host.tar.xz" -C "$scratch"
"$scratch/bigid-auth-mcp-$host/bigid-auth-mcp" --version

echo "== shell installer, offline, into a scratch CARGO_HOME"
CARGO_HOME="$scratch/cargo" INSTALLER_NO_MODIFY_PATH=1 \
  BIGID_AUTH_MCP_DOWNLOAD_URL="file://$root/$out" sh "$out/bigid-auth-mcp-installer.sh"
installed="$scratch/cargo/bin/bigid-auth-mcp"
"$installed" --version

echo "== the installed binary over stdio (MCP Python SDK)"
smoke=""
for dir in .. ../.. ../../..; do
  if [ -x "$dir/shared/clients/mcp-smoke" ]; then smoke="$dir/shared/clients/mcp-smoke"; break; fi
done
if [ -z "$smoke" ]; then
  echo "SKIP: ../shared/clients/mcp-smoke is absent"
else
  "$smoke" stdio -- "$installed" --demo
fi
echo "dist check passed"
