#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, integration tests with real agents and
# real etcd on loopback addresses and in network namespaces, and (when run as root) the
# packages and the end-to-end test under systemd in nspawn containers. Installs everything it
# uses when missing (scripts/deps.sh), stops at the first failing tier with its own message,
# and ends with one summary line over all tiers.
#
#   bash scripts/test.sh             everything
#   SKIP_E2E=1 bash scripts/test.sh  without the packages and the end-to-end test
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
SECONDS=0

# Integration tests whose behaviour depends on the etcd version: run on every version of
# scripts/deps.sh's ETCD_TEST_VERSIONS as well as on the default one.
VERSION_TESTS="formation restart growth replacement restore rbac"
# Of the restore tests, the one that restores with the version's own tool (etcdutl on 3.5,
# with --bump-revision): the others exercise quorate's side, which the version does not change.
VERSION_FILTER='not (binary(restore) & not test(restore_on_the_same_hosts_and_every_bad_input_refused))'

LOGS=$PWD/target/test-logs
mkdir -p "$LOGS"
# Tiers that do not run record why here; the summary lists them. (A test whose prerequisite
# is missing fails with the reason: quorate_tests::require_failed.)
export TEST_SKIP_FILE=$LOGS/skipped.txt
: >"$TEST_SKIP_FILE"

# Which tiers run, decided before anything is installed or built.
E2E=1
if [ "${SKIP_E2E:-}" = 1 ]; then
    E2E=0
    echo "packages and end-to-end: SKIP_E2E=1 was set" >>"$TEST_SKIP_FILE"
elif [ "$(id -u)" != 0 ]; then
    E2E=0
    echo "packages and end-to-end: not root (they need nspawn and network namespaces)" >>"$TEST_SKIP_FILE"
fi

log "installing what the suite uses, when missing"
ensure_build_deps
ensure_runtime_deps
ensure_test_deps
ensure_etcd_versions
if [ "$E2E" = 1 ]; then
    ensure_package_deps
    ensure_e2e_deps
fi

log "cargo fmt --check"
cargo fmt --all -- --check || die "cargo fmt --check failed: run cargo fmt --all"
log "cargo clippy"
cargo clippy -q --workspace --all-targets -- -D warnings || die "cargo clippy found problems (above)"
log "building"
cargo build -q --workspace --bins --tests || die "the build failed (above)"

# The packages' release build runs in the background, at the lowest CPU and IO priority,
# while the tests run: they spend most of their time waiting on etcd and timers, and the
# build used to add four to five minutes after them (measured: the integration tests took as
# long with it as without, and the build was done before them).
release_pid=""
if [ "$E2E" = 1 ]; then
    log "building the release binary in the background (low priority, while the tests run)"
    low_priority=(nice -n 19)
    command -v ionice >/dev/null && low_priority+=(ionice -c 3)
    "${low_priority[@]}" cargo build -q --release -p quorate >"$LOGS/release-build.log" 2>&1 &
    release_pid=$!
    # Stopped with the script, whichever way it ends.
    trap '[ -n "$release_pid" ] && kill "$release_pid" 2>/dev/null; true' EXIT
fi

log "unit and integration tests"
rust_rc=0
cargo nextest run --workspace --no-fail-fast --test-threads 2 --status-level pass \
    --final-status-level fail 2>&1 | tee "$LOGS/nextest.log" || rust_rc=$?
# nextest's lines: "PASS [ 0.012s] (n/N) quorate-tests::formation formation_..." for an
# integration test (the quorate-tests crate), anything else is a unit test.
all_passed=$(grep -cE '^ *PASS \[' "$LOGS/nextest.log" || true)
integration_passed=$(grep -cE '^ *PASS \[[^]]*\] +(\([ 0-9/]+\) +)?quorate-tests::' "$LOGS/nextest.log" || true)
unit_passed=$((all_passed - integration_passed))
# A failing test is named twice (when it ends and in the final summary): count names once.
# (grep finds nothing when all passed: `|| true`, or pipefail and set -e would end the script.)
rust_failed=$({ grep -E '^ *(FAIL|TIMEOUT|SIGSEGV|SIGABRT|SIGKILL|ABORT) \[' "$LOGS/nextest.log" || true; } |
    sed -E 's/^ *[A-Z]+ \[[^]]*\] +(\([ 0-9/]+\) +)?//' | sort -u | wc -l)
[ "$rust_rc" = 0 ] || die "unit and integration tests failed: $rust_failed failing (see above and $LOGS/nextest.log)"

# The version-sensitive integration tests again on every other etcd version (the full suite
# above ran on the default one, Debian's 3.4).
versions_passed=0 versions_summary=""
for etcd_bin in $(etcd_test_binaries); do
    etcd_version=$("$etcd_bin" --version | sed -nE 's/^etcd Version: //p')
    log "version-sensitive integration tests on etcd $etcd_version ($etcd_bin)"
    version_log="$LOGS/nextest-etcd-$etcd_version.log"
    version_rc=0
    # shellcheck disable=SC2086
    # --workspace (not -p quorate-tests): the same feature set as the build above, so nothing
    # is compiled again; the --test targets exist in quorate-tests only.
    TEST_ETCD_BINARY=$etcd_bin cargo nextest run --workspace --no-fail-fast --test-threads 2 \
        --status-level pass --final-status-level fail $(printf -- '--test %s ' $VERSION_TESTS) -E "$VERSION_FILTER" \
        2>&1 | tee "$version_log" || version_rc=$?
    [ "$version_rc" = 0 ] || die "integration tests on etcd $etcd_version failed (see above and $version_log)"
    n=$(grep -cE '^ *PASS \[' "$version_log" || true)
    versions_passed=$((versions_passed + n))
    versions_summary="$versions_summary, on etcd $etcd_version $n passed"
done

pkg_passed=0 e2e_passed=0
if [ "$E2E" = 1 ]; then
    log "waiting for the release build"
    release_rc=0
    wait "$release_pid" || release_rc=$?
    release_pid=""
    if [ "$release_rc" != 0 ]; then
        cat "$LOGS/release-build.log" >&2
        die "the release build failed (exit $release_rc, its output is above and in $LOGS/release-build.log)"
    fi
    log "building the .deb and .rpm"
    pkgs_out=$(bash scripts/package.sh) || die "scripts/package.sh failed (its output is above)"
    mapfile -t pkgs < <(tail -n 2 <<<"$pkgs_out")
    [ "${#pkgs[@]}" = 2 ] && [ -f "${pkgs[0]}" ] && [ -f "${pkgs[1]}" ] \
        || die "scripts/package.sh did not print the .deb and .rpm paths (got: $(tail -n 2 <<<"$pkgs_out"))"
    log "inspecting the packages"
    inspect_rc=0
    bash tests/e2e/inspect-packages.sh "${pkgs[0]}" "${pkgs[1]}" 2>&1 | tee "$LOGS/inspect.log" || inspect_rc=$?
    [ "$inspect_rc" = 0 ] || die "package inspection failed (see above)"
    pkg_passed=$(sed -nE 's/^inspect-packages: ([0-9]+) passed.*/\1/p' "$LOGS/inspect.log" | tail -n 1)
    log "end-to-end test: three systemd-nspawn hosts, cloud-init, the .deb"
    e2e_rc=0
    timeout 20m bash tests/e2e/nspawn.sh "${pkgs[0]}" "${pkgs[1]}" 2>&1 | tee "$LOGS/e2e.log" || e2e_rc=$?
    [ "$e2e_rc" = 0 ] || die "the end-to-end test failed (exit $e2e_rc, see above; logs in target/e2e-logs)"
    e2e_passed=$(sed -nE 's/^e2e: ([0-9]+) passed.*/\1/p' "$LOGS/e2e.log" | tail -n 1)
fi

skipped=$(grep -c . "$TEST_SKIP_FILE" || true)
total=$((unit_passed + integration_passed + versions_passed + ${pkg_passed:-0} + ${e2e_passed:-0}))
echo
log "summary after ${SECONDS}s: unit $unit_passed passed, integration $integration_passed passed$versions_summary, package checks ${pkg_passed:-0} passed, end-to-end checks ${e2e_passed:-0} passed; $skipped skipped"
if [ "$skipped" != 0 ]; then
    sed 's/^/    SKIPPED /' "$TEST_SKIP_FILE" >&2
fi
echo "suite: $total passed, 0 failed, $skipped skipped"
