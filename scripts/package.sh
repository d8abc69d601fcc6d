#!/usr/bin/env bash
# Builds the quorate release binary and both packages:
#   target/debian/quorate_<version>-1_<arch>.deb       (cargo-deb)
#   target/generate-rpm/quorate-<version>-1.<arch>.rpm (cargo-generate-rpm)
# and prints their paths (the last two lines of output, .deb first).
#
# Usage: scripts/package.sh
# Installs what it needs when missing, through scripts/deps.sh (protoc, the
# pinned cargo-deb and cargo-generate-rpm, rpm). Safe to run again: the
# packages are rebuilt in place.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
. scripts/deps.sh

ensure_build_deps
ensure_package_deps

log "building the release binary"
cargo build --release -p quorate
BIN=$TARGET_DIR/release/quorate
[ -x "$BIN" ] || die "$BIN was not built"
# profile.release has strip = true; make sure nothing changed that.
if command -v file >/dev/null && file "$BIN" | grep -q 'not stripped'; then
    die "$BIN is not stripped (profile.release.strip must stay true)"
fi

log "building the .deb"
# --no-build: the binary was built above. cargo-deb names the file
# quorate_<version>-1_<arch>.deb and removes older builds of it.
DEB=$(cargo deb -p quorate --no-build --no-strip | tail -n 1)
[ -f "$DEB" ] || die "cargo deb did not report a package file (got: $DEB)"

log "building the .rpm"
RPM_DIR=$TARGET_DIR/generate-rpm
rm -f "$RPM_DIR"/quorate-*.rpm
cargo generate-rpm -p agent --target-dir "$TARGET_DIR"
RPM=$(ls -t "$RPM_DIR"/quorate-*.rpm 2>/dev/null | head -n 1)
[ -n "$RPM" ] && [ -f "$RPM" ] || die "cargo generate-rpm did not produce $RPM_DIR/quorate-*.rpm"

# cargo-generate-rpm silently uses a scriptlet path as the script text when it
# cannot find the file: make sure the real scripts went in.
scripts=$(rpm -qp --scripts "$RPM" 2>/dev/null) || die "rpm cannot read $RPM"
for marker in '%pre of the quorate .rpm' '%post of the quorate .rpm' \
              '%preun of the quorate .rpm' '%postun of the quorate .rpm'; do
    grep -qF "$marker" <<<"$scripts" || die "$RPM lacks the scriptlet '$marker'"
done

printf '%s\n%s\n' "$DEB" "$RPM"
