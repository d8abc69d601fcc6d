# Shared by scripts/demo.sh, scripts/test.sh, scripts/package.sh and tests/e2e/nspawn.sh: the
# one place that installs what building, running and testing quorate needs on a Debian/Ubuntu
# machine when it is missing (never assumed to be there). Source it; do not run it.
#
#   ensure_build_deps     protoc, a C toolchain, Rust (rustup)
#   ensure_runtime_deps   etcd-server, etcd-client, curl
#   ensure_test_deps      cargo-nextest, Prometheus and promtool, moto's S3 server
#   ensure_package_deps   cargo-deb, cargo-generate-rpm, rpm (to inspect the .rpm)
#   ensure_e2e_deps       systemd-container, debootstrap, iproute2, util-linux, curl
#   debian_mirror         the Debian mirror of this machine's own apt sources
#   ensure_etcd_versions  etcd 3.5.16 and 3.5.30 from Debian's archive, unpacked into a cache

log() { printf '==> %s\n' "$*" >&2; }
die() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# ensure_apt PKG...: installs the Debian packages that are not installed yet.
ensure_apt() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
        || { as_root apt-get update -qq >/dev/null \
             && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } \
        || die "could not install ${missing[*]}"
    # Debian's etcd-server enables and starts its own etcd.service on 127.0.0.1:2379; quorate
    # runs etcd itself, so that default instance only gets in the way.
    if printf '%s\n' "${missing[@]}" | grep -qx etcd-server \
        && [ -d /run/systemd/system ] && systemctl is-enabled -q etcd.service 2>/dev/null; then
        log "disabling Debian's default etcd.service (quorate runs etcd itself)"
        as_root systemctl disable --now etcd.service >/dev/null 2>&1 || true
    fi
}

# ensure_rust: cargo must be there (Rust >= 1.88, from rustup; Debian's cargo is too old).
ensure_rust() {
    if ! command -v cargo >/dev/null; then
        [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null; then
        log "installing Rust with rustup"
        ensure_apt curl ca-certificates
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal \
            --component clippy,rustfmt >/dev/null || die "could not install Rust; see https://rustup.rs"
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
}

# ensure_build_deps: what `cargo build` needs (etcd-client's build runs protoc).
ensure_build_deps() {
    ensure_apt protobuf-compiler gcc libc6-dev pkg-config
    ensure_rust
}

# ensure_runtime_deps: etcd and etcdctl (etcd 3.4 from Debian), curl for health checks.
ensure_runtime_deps() {
    ensure_apt etcd-server etcd-client curl
}

# Pinned versions of the cargo tools the suite and the packaging use.
CARGO_NEXTEST_VERSION=0.9.143
CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

# ensure_cargo_tool SUBCOMMAND CRATE VERSION [any]: `cargo SUBCOMMAND` must report VERSION
# (with "any", any installed version will do); otherwise `cargo install --locked CRATE@VERSION`.
ensure_cargo_tool() {
    local sub=$1 crate=$2 version=$3 any=${4:-} have
    have=$(cargo "$sub" --version 2>/dev/null | head -n 1 | awk '{print $2}' || true)
    if [ -n "$have" ] && { [ "$any" = any ] || [ "$have" = "$version" ]; }; then
        return 0
    fi
    log "installing $crate $version (cargo install --locked; a few minutes)"
    cargo install --locked --quiet "$crate@$version" >&2 \
        || die "could not install $crate $version with cargo install"
    cargo "$sub" --version >/dev/null 2>&1 || die "$crate $version installed, but cargo $sub does not run"
}

# ensure_test_deps: the test runner.
ensure_test_deps() {
    ensure_cargo_tool nextest cargo-nextest "$CARGO_NEXTEST_VERSION" any
    ensure_prometheus
    ensure_moto
}

# Pinned moto (PyPI) for the S3 tests, and where it lives (tests/src/s3.rs looks there).
MOTO_VERSION=5.2.5
MOTO_VENV=/var/cache/quorate-test/moto

# ensure_moto: moto's S3-compatible server in a virtualenv of its own (about a minute the
# first time; cached afterwards). tests/tests/snapshot_s3.rs starts it on a loopback port.
ensure_moto() {
    if [ -x "$MOTO_VENV/bin/moto_server" ] \
        && "$MOTO_VENV/bin/pip" show moto 2>/dev/null | grep -qx "Version: $MOTO_VERSION"; then
        return 0
    fi
    ensure_apt python3 python3-venv
    log "installing moto $MOTO_VERSION (S3 test server) into $MOTO_VENV"
    as_root mkdir -p "$(dirname "$MOTO_VENV")"
    as_root python3 -m venv "$MOTO_VENV" || die "could not create a Python virtualenv at $MOTO_VENV"
    as_root "$MOTO_VENV/bin/pip" install -q "moto[server]==$MOTO_VERSION" >&2 \
        || die "could not install moto[server]==$MOTO_VERSION from PyPI (the S3 test server)"
    "$MOTO_VENV/bin/moto_server" --help >/dev/null 2>&1 || die "moto installed, but moto_server does not run"
}

# ensure_prometheus: the Prometheus server and promtool (Debian's prometheus, 2.42 on Debian 12)
# for the alert-rule tests and the scrape test. Without systemd running, installing it starts
# no server; the tests start their own on a loopback address.
ensure_prometheus() {
    ensure_apt prometheus
}

# ensure_package_deps: what scripts/package.sh and tests/e2e/inspect-packages.sh use.
ensure_package_deps() {
    ensure_apt rpm binutils file
    ensure_cargo_tool deb cargo-deb "$CARGO_DEB_VERSION"
    ensure_cargo_tool generate-rpm cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"
}

# ensure_e2e_deps: what tests/e2e/nspawn.sh and the network-namespace tests use (as root).
ensure_e2e_deps() {
    ensure_apt systemd-container debootstrap iproute2 util-linux curl ca-certificates
}

# debian_mirror: the Debian archive URI of this machine's own apt sources (deb822 .sources
# files first, then sources.list), never a host name written into a script. The first
# non-security source that serves Debian's main archive wins.
debian_mirror() {
    local uri=""
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk 'BEGIN { IGNORECASE = 1 }
            /^[[:space:]]*$/ { if (u != "" && t ~ /(^|[[:space:]])deb([[:space:]]|$)/ && u !~ /security/) { print u; exit } u = ""; t = ""; next }
            tolower($1) == "uris:"  { u = $2 }
            tolower($1) == "types:" { t = $0 }
            END { if (u != "" && t ~ /(^|[[:space:]])deb([[:space:]]|$)/ && u !~ /security/) print u }' "$f" | head -n 1)
        [ -n "$uri" ] && break
    done
    if [ -z "$uri" ]; then
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($i !~ /security/) { print $i; exit } break } }' "$f" | head -n 1)
            [ -n "$uri" ] && break
        done
    fi
    [ -n "$uri" ] || die "no Debian mirror in this machine's apt sources (/etc/apt/sources.list.d/*.sources or /etc/apt/sources.list); set QE2E_MIRROR"
    printf '%s\n' "${uri%/}"
}

# Other etcd versions for the version-sensitive tests: Debian's etcd-server and etcd-client
# packages of that version (3.5.16-4 is Debian 13's, 3.5.30-2 unstable's), fetched from this
# machine's Debian mirror, checked against the SHA-256 pinned here, and unpacked into a cache
# (never installed over the system's etcd). Each line: version, then the sha256 of
# etcd-server_<version>_amd64.deb and of etcd-client_<version>_amd64.deb.
ETCD_TEST_VERSIONS="
3.5.16-4 0875921bb0d023f2af9b8e15cdfbe417a03e65731345fb832c40f9c2dd72967b 7eb67e305ba2ce523a5a0b29bf88750ded3f724769c7111a83382b7909f9977b
3.5.30-2 11a4f7e350c5020b83edff5160a6063d4e56ac9cd014d21ce8916378bf96de79 1e66ad2aba4cba6842a1ac35d5c525e750102b8fb42748225bcb2e34d6595931
"
ETCD_CACHE=${QUORATE_ETCD_CACHE:-/var/cache/quorate-test/etcd}

# ensure_etcd_versions: every version of ETCD_TEST_VERSIONS unpacked under $ETCD_CACHE/<version>,
# with usr/bin/etcd, etcdctl and etcdutl. Prints nothing; dies naming what failed.
ensure_etcd_versions() {
    local version server_sum client_sum dir mirror="" pkg sum deb
    [ "$(dpkg --print-architecture 2>/dev/null || echo amd64)" = amd64 ] \
        || die "the etcd test versions are pinned for amd64 (this machine: $(dpkg --print-architecture))"
    while read -r version server_sum client_sum; do
        [ -n "$version" ] || continue
        dir=$ETCD_CACHE/$version
        [ -x "$dir/usr/bin/etcd" ] && [ -x "$dir/usr/bin/etcdutl" ] && continue
        [ -n "$mirror" ] || mirror=$(debian_mirror)
        ensure_apt curl ca-certificates
        as_root mkdir -p "$ETCD_CACHE"
        local tmp
        tmp=$(mktemp -d)
        for pkg in etcd-server etcd-client; do
            sum=$server_sum
            [ "$pkg" = etcd-client ] && sum=$client_sum
            deb=${pkg}_${version}_amd64.deb
            log "fetching $deb from $mirror (for the version-sensitive tests)"
            curl -fsS --retry 3 -o "$tmp/$deb" "${mirror%/}/pool/main/e/etcd/$deb" \
                || { rm -rf "$tmp"; die "could not download ${mirror%/}/pool/main/e/etcd/$deb"; }
            echo "$sum  $tmp/$deb" | sha256sum -c --quiet - >/dev/null 2>&1 \
                || { rm -rf "$tmp"; die "$deb does not have the pinned SHA-256 $sum (a different build on the mirror?)"; }
            dpkg-deb -x "$tmp/$deb" "$tmp/root" || { rm -rf "$tmp"; die "could not unpack $deb"; }
        done
        "$tmp/root/usr/bin/etcd" --version 2>/dev/null | grep -q "etcd Version: ${version%%-*}" \
            || { rm -rf "$tmp"; die "the unpacked etcd $version does not report version ${version%%-*}"; }
        as_root rm -rf "$dir"
        as_root mv "$tmp/root" "$dir"
        rm -rf "$tmp"
    done <<<"$ETCD_TEST_VERSIONS"
}

# etcd_test_binaries: the etcd binary of each test version, one per line (after
# ensure_etcd_versions).
etcd_test_binaries() {
    local version rest
    while read -r version rest; do
        [ -n "$version" ] && echo "$ETCD_CACHE/$version/usr/bin/etcd"
    done <<<"$ETCD_TEST_VERSIONS"
}
