# Shared by scripts/demo.sh and scripts/test.sh: installs what building and running quorate
# needs on a Debian/Ubuntu machine when it is missing. Source it; do not run it.

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
