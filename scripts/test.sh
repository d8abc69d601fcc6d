#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, integration tests with real agents and
# real etcd 3.4 on loopback addresses, and (when run as root) the packages and the end-to-end
# test under systemd in nspawn containers. Installs what it needs when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
SECONDS=0

ensure_build_deps
ensure_runtime_deps
if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install --locked cargo-nextest >/dev/null 2>&1 || log "cargo-nextest unavailable; using cargo test"
fi

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy -q --workspace --all-targets -- -D warnings
log "building"
cargo build -q --workspace --bins --tests

log "unit and integration tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast --test-threads 2
else
    cargo test -q --workspace --no-fail-fast -- --test-threads 2
fi

if [ "${SKIP_E2E:-}" = 1 ]; then
    log "SKIP_E2E=1: skipping the packages and the end-to-end test under systemd"
elif [ "$(id -u)" != 0 ]; then
    log "not root: skipping the packages and the end-to-end test (they need nspawn and network namespaces)"
else
    log "building the .deb and .rpm"
    mapfile -t pkgs < <(bash scripts/package.sh | tail -n 2)
    log "inspecting the packages"
    bash tests/e2e/inspect-packages.sh "${pkgs[0]}" "${pkgs[1]}"
    log "end-to-end test: three systemd-nspawn hosts, cloud-init, the .deb"
    timeout 20m bash tests/e2e/nspawn.sh "${pkgs[0]}" "${pkgs[1]}"
fi

log "all tests passed in ${SECONDS}s"
