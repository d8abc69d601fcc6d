#!/usr/bin/env bash
# Builds the quorate release binary and both packages:
#   target/debian/quorate_<version>-1_<arch>.deb       (cargo-deb)
#   target/generate-rpm/quorate-<version>-1.<arch>.rpm (cargo-generate-rpm)
# and prints their paths (the last two lines of output, .deb first).
#
# Usage: scripts/package.sh
# Installs the packaging tools when missing (pinned versions, `cargo install
# --locked`), and protoc (needed by etcd-client's build) through apt-get when
# run as root. Safe to run again: the packages are rebuilt in place.
set -euo pipefail

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'package.sh: %s\n' "$*" >&2; exit 1; }

# cargo-deb prints "cargo-deb 3.8.0" for --version; cargo-generate-rpm
# prints "cargo-generate-rpm 0.21.1".
tool_version() { cargo "$1" --version 2>/dev/null | awk '{print $NF}' || true; }

ensure_tool() {
    local sub=$1 crate=$2 version=$3
    if [ "$(tool_version "$sub")" != "$version" ]; then
        log "installing $crate $version"
        cargo install --locked "$crate@$version"
    fi
}

command -v cargo >/dev/null || die "cargo not found (install Rust with rustup)"
if ! command -v protoc >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing protobuf-compiler (protoc)"
        apt-get install -y protobuf-compiler >/dev/null || {
            apt-get update >/dev/null && apt-get install -y protobuf-compiler >/dev/null; }
    else
        die "protoc not found: apt-get install protobuf-compiler (or dnf install protobuf-compiler)"
    fi
fi
ensure_tool deb cargo-deb "$CARGO_DEB_VERSION"
ensure_tool generate-rpm cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"

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
if command -v rpm >/dev/null; then
    scripts=$(rpm -qp --scripts "$RPM" 2>/dev/null)
    for marker in '%pre of the quorate .rpm' '%post of the quorate .rpm' \
                  '%preun of the quorate .rpm' '%postun of the quorate .rpm'; do
        grep -qF "$marker" <<<"$scripts" || die "$RPM lacks the scriptlet '$marker'"
    done
fi

printf '%s\n%s\n' "$DEB" "$RPM"
