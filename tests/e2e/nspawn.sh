#!/usr/bin/env bash
# End-to-end test of quorate's install path, as an operator would run it:
# three Debian bookworm "VMs" (systemd-nspawn containers, each in its own
# network namespace on a private bridge) get the shipped cloud-init user-data
# (packaging/cloud-init/{seed,member}.yaml) through cloud-init's NoCloud seed;
# cloud-init installs the .deb, writes config and token, and runs
# `systemctl enable --now --no-block quorate`. Everything is then checked from
# the outside (systemctl, file modes, etcdctl from the host with a client
# certificate), followed by a service restart, a power cycle of all three
# hosts, a package upgrade on all three hosts at the same moment under a
# writer, and dpkg remove / purge / install on one host. A fourth container, a
# consumer host, gets packaging/cloud-init/client.yaml once the cluster formed
# (quorate-client.service: client certificate, endpoints, on_change).
#
# Usage (as root, on a Debian/Ubuntu host with a non-systemd or systemd PID 1):
#   tests/e2e/nspawn.sh                      # builds both packages via scripts/package.sh
#   tests/e2e/nspawn.sh target/debian/quorate_0.1.0-1_amd64.deb [RPM]
#   timeout 15m tests/e2e/nspawn.sh ...      # as CI runs it
#
# Environment:
#   QE2E_CACHE         rootfs cache          (default /var/cache/quorate-e2e)
#   QE2E_WORK          scratch directory     (default /var/tmp/quorate-e2e)
#   QE2E_LOGS          logs kept after a run (default <repo>/target/e2e-logs)
#   QE2E_MIRROR        Debian mirror for debootstrap (default: the Debian mirror of
#                      this machine's own apt sources, see debian_mirror in scripts/deps.sh)
#   QE2E_FORM_TIMEOUT  seconds allowed for the cluster to form (default 300)
#
# Network: 10.77.0.0/24 only. Bridge br-qe2e (host side 10.77.0.254),
# namespaces qe2e-h1..4 (10.77.0.1-4, no default route), veths qe2e-v1..4.
# Nothing else on the host is touched. Everything started here is torn down by
# the EXIT trap, also on failure; logs stay in $QE2E_LOGS.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# The one place that installs host tools; this script's own log and die follow and win.
. "$REPO/scripts/deps.sh"
CACHE=${QE2E_CACHE:-/var/cache/quorate-e2e}
WORK=${QE2E_WORK:-/var/tmp/quorate-e2e}
LOGS=${QE2E_LOGS:-$REPO/target/e2e-logs}
MIRROR=${QE2E_MIRROR:-}
FORM_TIMEOUT=${QE2E_FORM_TIMEOUT:-300}

SUBNET=10.77.0
BRIDGE=br-qe2e
HOST_IP=$SUBNET.254
HOSTS=(h1 h2 h3)           # h1 is the seed
CONSUMER=h4                # consumer host (client mode, packaging/cloud-init/client.yaml)
ALL_CTS=(h1 h2 h3 h4)
CLIENT_NAME=app
CLIENT_DIR=/etc/quorate/client
SEED_IP=$SUBNET.1
PKG_IN_CT=/opt/quorate/quorate.deb            # where the user-data installs it from
UPGRADE_IN_CT=/opt/quorate/quorate-upgrade.deb

# Rootfs recipe; the cache key is a hash of all of it.
SUITE=bookworm
DEBOOTSTRAP_INCLUDE=systemd,systemd-sysv,dbus,iproute2
ROOTFS_PACKAGES="cloud-init etcd-server etcd-client ca-certificates procps"
ROOTFS_RECIPE_VERSION=2

# ---------------------------------------------------------------- output
passed=0
failed=0
declare -a PHASES=()
phase_name=""
phase_start=0
RUN_START=$SECONDS

log() { printf '%s\n' "$*"; }
phase() {
    phase_end
    phase_name=$1
    phase_start=$SECONDS
    log ""
    log "=== $phase_name"
}
phase_end() {
    if [ -n "$phase_name" ]; then
        local d=$((SECONDS - phase_start))
        PHASES+=("$(printf '%5ss  %s' "$d" "$phase_name")")
        log "--- $phase_name: ${d}s"
        phase_name=""
    fi
}
pass() { passed=$((passed + 1)); log "ok     $1"; }
# fail DESCRIPTION [DETAIL]: prints the failure and diagnostics, then exits
# (the EXIT trap tears everything down).
fail() {
    failed=$((failed + 1))
    log "FAILED $1"
    [ -z "${2:-}" ] || printf '%s\n' "$2" | sed 's/^/       | /'
    diagnose
    exit 1
}
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- containers
# ct HOST CMD...: run CMD inside the container as root (like ssh root@host).
ct() {
    local h=$1
    shift
    local pid
    pid=$(init_pid "$h") || return 125
    timeout --kill-after=5 "${CT_TIMEOUT:-60}" \
        nsenter -t "$pid" -a \
        env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 TERM=dumb SYSTEMD_PAGER=cat SYSTEMD_COLORS=0 "$@"
}
init_pid() {
    local f=$WORK/$1.init pid
    [ -f "$f" ] || return 1
    pid=$(cat "$f")
    [ -d "/proc/$pid" ] || return 1
    echo "$pid"
}
root_of() { echo "$WORK/$1/root"; }
ip_of() { echo "$SUBNET.${1#h}"; }

# wait_for DESCRIPTION SECONDS DIAG-HOSTS CMD...: polls CMD every 2 s until
# it succeeds; fails at the deadline, or at once when CMD exits with 99.
wait_for() {
    local desc=$1 secs=$2 hosts=$3
    shift 3
    local start=$SECONDS end=$((SECONDS + secs)) out="" rc
    log "...    waiting (max ${secs}s): $desc"
    while :; do
        rc=0
        out=$("$@" 2>&1) || rc=$?
        [ "$rc" -ne 0 ] || break
        [ "$rc" -ne 99 ] || DIAG_HOSTS=$hosts fail "$desc" "$out"
        if [ "$SECONDS" -ge "$end" ]; then
            DIAG_HOSTS=$hosts fail "timed out after ${secs}s: $desc" "$out"
        fi
        sleep 2
    done
    pass "$desc ($((SECONDS - start))s)"
}
# gone PID: the process has exited (a zombie counts as exited).
gone() { [ ! -e "/proc/$1" ] || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]; }
nspawn_gone() { [ ! -f "$WORK/$1.nspawn" ] || gone "$(cat "$WORK/$1.nspawn")"; }

diagnose() {
    local h
    local unit
    for h in ${DIAG_HOSTS:-${HOSTS[*]}}; do
        init_pid "$h" >/dev/null || { log "------ $h: not running"; continue; }
        unit=quorate.service
        [ "$h" != "$CONSUMER" ] || unit=quorate-client.service
        log "------ $h: systemctl status $unit"
        CT_TIMEOUT=15 ct "$h" systemctl status "$unit" --no-pager -l -n 0 2>&1 | sed 's/^/  /' || true
        log "------ $h: journalctl -u $unit (last 60 lines)"
        CT_TIMEOUT=15 ct "$h" journalctl -u "$unit" --no-pager -n 60 -o short-monotonic 2>&1 | sed 's/^/  /' || true
        log "------ $h: cloud-init status / failed units"
        CT_TIMEOUT=15 ct "$h" cloud-init status --long 2>&1 | sed 's/^/  /' || true
        CT_TIMEOUT=15 ct "$h" systemctl --failed --no-legend 2>&1 | sed 's/^/  /' || true
        CT_TIMEOUT=15 ct "$h" tail -n 15 /var/log/cloud-init-output.log 2>&1 | sed 's/^/  /' || true
    done
}

start_ct() {
    local h=$1 root
    root=$(root_of "$h")
    systemd-nspawn --quiet -D "$root" --register=no --keep-unit --boot \
        --machine="$h" --network-namespace-path="/run/netns/qe2e-$h" \
        --resolv-conf=off --timezone=off --link-journal=no --console=read-only \
        </dev/null >>"$LOGS/$h-console.log" 2>&1 &
    echo $! >"$WORK/$h.nspawn"
    rm -f "$WORK/$h.init"
    local end=$((SECONDS + 30)) child
    while [ "$SECONDS" -lt "$end" ]; do
        for child in $(pgrep -P "$(cat "$WORK/$h.nspawn")" 2>/dev/null); do
            if [ "$(cat "/proc/$child/comm" 2>/dev/null)" = systemd ]; then
                echo "$child" >"$WORK/$h.init"
                return 0
            fi
        done
        gone "$(cat "$WORK/$h.nspawn")" && break
        sleep 0.5
    done
    DIAG_HOSTS="" fail "container $h did not start" "$(tail -n 30 "$LOGS/$h-console.log")"
}

# Stops a container we started: orderly (SIGTERM to nspawn = poweroff), then
# SIGKILL to nspawn and to the container's init (which ends its PID namespace).
stop_ct() {
    local h=$1 npid="" ipid="" i
    [ -f "$WORK/$h.nspawn" ] && npid=$(cat "$WORK/$h.nspawn")
    [ -f "$WORK/$h.init" ] && ipid=$(cat "$WORK/$h.init")
    if [ -n "$npid" ] && grep -qa "systemd-nspawn" "/proc/$npid/cmdline" 2>/dev/null; then
        kill -TERM "$npid" 2>/dev/null || true
        for i in $(seq 1 40); do gone "$npid" && break; sleep 0.5; done
        kill -KILL "$npid" 2>/dev/null || true
    fi
    if [ -n "$ipid" ] && [ "$(cat "/proc/$ipid/comm" 2>/dev/null)" = systemd ]; then
        kill -KILL "$ipid" 2>/dev/null || true
    fi
    rm -f "$WORK/$h.nspawn" "$WORK/$h.init"
}

save_journals() {
    local h
    for h in "${ALL_CTS[@]}"; do
        init_pid "$h" >/dev/null || continue
        CT_TIMEOUT=30 ct "$h" journalctl -b --no-pager -o short-monotonic >"$LOGS/$h-journal.log" 2>&1 || true
        CT_TIMEOUT=10 ct "$h" cat /var/log/cloud-init-output.log >"$LOGS/$h-cloud-init-output.log" 2>&1 || true
    done
}

teardown() {
    local h i
    for h in "${ALL_CTS[@]}"; do stop_ct "$h"; done
    for h in "${ALL_CTS[@]}"; do
        if mountpoint -q "$WORK/$h/root" 2>/dev/null; then
            umount "$WORK/$h/root" 2>/dev/null || umount -l "$WORK/$h/root" 2>/dev/null || true
        fi
    done
    for i in 1 2 3 4; do
        [ -e "/run/netns/qe2e-h$i" ] && ip netns del "qe2e-h$i" 2>/dev/null || true
        ip link show "qe2e-v$i" >/dev/null 2>&1 && ip link del "qe2e-v$i" 2>/dev/null || true
    done
    ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE" 2>/dev/null || true
    for h in "${ALL_CTS[@]}"; do
        mountpoint -q "$WORK/$h/root" 2>/dev/null || rm -rf "${WORK:?}/$h"
    done
    rm -rf "${WORK:?}/pkg" "${WORK:?}/client"
}

on_exit() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    phase_end
    log ""
    log "=== saving journals to $LOGS"
    save_journals
    log ""
    log "=== teardown"
    teardown
    local left
    left=$(ip netns list 2>/dev/null | grep -c '^qe2e-' || true)
    [ "$left" = 0 ] || log "WARNING: $left qe2e network namespaces left"
    log ""
    log "=== timings"
    printf '%s\n' "${PHASES[@]}"
    printf '%5ss  total\n' "$((SECONDS - RUN_START))"
    log ""
    [ "$rc" -eq 0 ] || [ "$failed" -gt 0 ] || failed=1
    log "e2e: $passed passed, $failed failed"
    exit "$rc"
}

# ---------------------------------------------------------------- phases
host_prereqs() {
    [ "$(id -u)" = 0 ] || die "run as root (needs systemd-nspawn, ip netns, mount)"
    ensure_e2e_deps
    ensure_package_deps
    if [ -z "$MIRROR" ]; then
        MIRROR=$(debian_mirror) || die "cannot find a Debian mirror in this machine's apt sources; set QE2E_MIRROR"
    fi
    log "debootstrap mirror: $MIRROR (from this machine's apt sources unless QE2E_MIRROR is set)"
    grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || die "overlayfs is not available"
    # Refuse to run next to another copy of this test, and never reuse a
    # subnet someone else routes.
    exec 9>/run/quorate-e2e.lock
    flock -w 120 9 || die "another run of tests/e2e/nspawn.sh holds /run/quorate-e2e.lock"
    mkdir -p "$WORK" "$LOGS"
    # Leftovers of a run that was killed without its trap.
    teardown
    if ip route show "$SUBNET.0/24" | grep -q .; then
        die "$SUBNET.0/24 is already routed on this host: $(ip route show "$SUBNET.0/24")"
    fi
    rm -f "$LOGS"/*.log
}

get_packages() {
    if [ -z "$DEB" ]; then
        log "building packages with scripts/package.sh"
        local out
        out=$("$REPO/scripts/package.sh") || die "scripts/package.sh failed (its output is above)"
        out=$(tail -n 2 <<<"$out")
        DEB=$(sed -n 1p <<<"$out")
        RPM=$(sed -n 2p <<<"$out")
    fi
    [ -f "$DEB" ] || die "no such .deb: $DEB"
    DEB=$(readlink -f "$DEB")
    log "deb: $DEB"
    [ -z "$RPM" ] || log "rpm: $RPM"
    local out
    if out=$("$REPO/tests/e2e/inspect-packages.sh" "$DEB" ${RPM:+"$RPM"} 2>&1); then
        pass "package inspection ($(tail -n 1 <<<"$out"))"
    else
        fail "package inspection" "$out"
    fi
    # A "newer build" for the upgrade test: same payload, higher version, and a
    # changed default config (so dpkg's conffile handling is exercised).
    rm -rf "$WORK/pkg"
    mkdir -p "$WORK/pkg"
    dpkg-deb -R "$DEB" "$WORK/pkg/x"
    local v
    v=$(dpkg-deb -f "$DEB" Version)
    UPGRADE_VERSION="$v+e2e1"
    sed -i "s/^Version: .*/Version: $UPGRADE_VERSION/" "$WORK/pkg/x/DEBIAN/control"
    printf '\n# (e2e upgrade: the packaged default changed)\n' >>"$WORK/pkg/x/etc/quorate/quorate.toml"
    (cd "$WORK/pkg/x" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | xargs -0 md5sum >DEBIAN/md5sums)
    dpkg-deb --root-owner-group -b "$WORK/pkg/x" "$WORK/pkg/upgrade.deb" >/dev/null
    PKG_VERSION=$v
}

prepare_rootfs() {
    local key
    key=$(printf '%s\n' "$ROOTFS_RECIPE_VERSION" "$SUITE" "$DEBOOTSTRAP_INCLUDE" "$ROOTFS_PACKAGES" \
        | sha256sum | cut -c1-16)
    ROOTFS=$CACHE/rootfs-$key
    if [ -f "$ROOTFS/.qe2e-complete" ]; then
        log "cached rootfs: $ROOTFS"
        touch "$ROOTFS/.qe2e-complete"
        return 0
    fi
    mkdir -p "$CACHE"
    local tmp=$CACHE/build-$key
    rm -rf "$tmp"
    log "debootstrap $SUITE into $tmp (cache miss)"
    local t0=$SECONDS
    debootstrap --variant=minbase --include="$DEBOOTSTRAP_INCLUDE" "$SUITE" "$tmp" "$MIRROR" \
        >"$LOGS/debootstrap.log" 2>&1 || die "debootstrap failed, see $LOGS/debootstrap.log: $(tail -n 5 "$LOGS/debootstrap.log")"
    log "debootstrap: $((SECONDS - t0))s"
    t0=$SECONDS
    mount -t proc proc "$tmp/proc"
    if ! chroot "$tmp" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends $ROOTFS_PACKAGES >>"$LOGS/debootstrap.log" 2>&1; then
        umount "$tmp/proc"
        die "apt-get install in the rootfs failed, see $LOGS/debootstrap.log"
    fi
    umount "$tmp/proc"
    chroot "$tmp" apt-get clean
    # debootstrap leaves no /etc/hosts; every real VM has one (Go programs
    # like etcd resolve "localhost" through it).
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$tmp/etc/hosts"
    # Each container gets its own machine-id.
    : >"$tmp/etc/machine-id"
    log "packages: $((SECONDS - t0))s"
    touch "$tmp/.qe2e-complete"
    mv "$tmp" "$ROOTFS"
    # Other recipes' caches unused for a week go.
    find "$CACHE" -maxdepth 1 -name 'rootfs-*' ! -path "$ROOTFS" -mtime +7 -exec rm -rf {} + 2>/dev/null || true
}

setup_network() {
    ip link add "$BRIDGE" type bridge
    ip link set "$BRIDGE" up
    ip addr add "$HOST_IP/24" dev "$BRIDGE"
    local i
    for i in 1 2 3 4; do   # 4: the consumer host, booted later
        ip netns add "qe2e-h$i"
        ip link add "qe2e-v$i" type veth peer name eth0 netns "qe2e-h$i"
        ip link set "qe2e-v$i" master "$BRIDGE" up
        ip -n "qe2e-h$i" addr add "$SUBNET.$i/24" dev eth0
        ip -n "qe2e-h$i" link set lo up
        ip -n "qe2e-h$i" link set eth0 up
    done
    if command -v ping >/dev/null; then
        local end=$((SECONDS + 10))
        until ip netns exec qe2e-h1 ping -c1 -W1 "$SUBNET.2" >/dev/null 2>&1 &&
              ip netns exec qe2e-h1 ping -c1 -W1 "$SUBNET.3" >/dev/null 2>&1 &&
              ping -c1 -W1 "$SUBNET.1" >/dev/null 2>&1; do
            [ "$SECONDS" -lt "$end" ] || DIAG_HOSTS="" fail "bridge $BRIDGE does not pass traffic between namespaces" \
                "$(ip -br addr; cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null)"
            sleep 1
        done
        pass "network: namespaces reach each other over $BRIDGE"
    fi
}

render_user_data() {
    local src=$1 dst=$2
    sed -e "s|QUORATE_JOIN_TOKEN|$TOKEN|" \
        -e "s|QUORATE_SEED_ADDR|$SEED_IP|" \
        -e "s|^  - quorate\$|  - $PKG_IN_CT|" "$src" >"$dst"
    grep -q "^  - $PKG_IN_CT\$" "$dst" || die "$src: no '  - quorate' packages entry to point at $PKG_IN_CT"
    ! grep -q 'QUORATE_[A-Z_]*' "$dst" || die "$src: placeholder left: $(grep -o 'QUORATE_[A-Z_]*' "$dst" | head -n1)"
}

prepare_containers() {
    TOKEN="qe2e_$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
    local h seed
    for h in "${HOSTS[@]}"; do
        if [ "$h" = h1 ]; then seed=seed; else seed=member; fi
        prepare_ct "$h"
        render_user_data "$REPO/packaging/cloud-init/$seed.yaml" "$(root_of "$h")/var/lib/cloud/seed/nocloud/user-data"
        cp "$(root_of "$h")/var/lib/cloud/seed/nocloud/user-data" "$LOGS/$h-user-data.yaml"
    done
    sed -i "s|$TOKEN|<token>|" "$LOGS"/*-user-data.yaml
}
# prepare_ct HOST: an overlay of the cached rootfs with the packages and the NoCloud
# meta-data (the user-data is the caller's).
prepare_ct() {
    local h=$1 i root
    i=${h#h}
    mkdir -p "$WORK/$h/upper" "$WORK/$h/work" "$WORK/$h/root"
    mount -t overlay overlay \
        -o "lowerdir=$ROOTFS,upperdir=$WORK/$h/upper,workdir=$WORK/$h/work" "$WORK/$h/root"
    root=$WORK/$h/root
    printf 'e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e%s\n' "$i" >"$root/etc/machine-id"
    echo "$h" >"$root/etc/hostname"
    : >"$root/etc/resolv.conf"   # no DNS: nothing leaves the test network
    # Test-harness cloud-init settings (on a real VM the platform decides these):
    # NoCloud seed from disk, the address is configured from outside, and the
    # minimal rootfs has no locales.
    cat >"$root/etc/cloud/cloud.cfg.d/90-qe2e.cfg" <<'EOF'
datasource_list: [ NoCloud, None ]
network: {config: disabled}
locale: false
EOF
    mkdir -p "$root/opt/quorate" "$root/var/lib/cloud/seed/nocloud"
    cp "$DEB" "$root$PKG_IN_CT"
    cp "$WORK/pkg/upgrade.deb" "$root$UPGRADE_IN_CT"
    printf 'instance-id: qe2e-%s\nlocal-hostname: %s\n' "$h" "$h" >"$root/var/lib/cloud/seed/nocloud/meta-data"
}

boot_all() {
    local h
    for h in "${HOSTS[@]}"; do start_ct "$h"; done
    for h in "${HOSTS[@]}"; do
        wait_for "$h: booted (basic.target)" 120 "$h" is_booted "$h"
    done
}
# Booted far enough to be used: basic.target is reached. (is-system-running
# stays "starting" while quorate's start job waits for its peers.)
is_booted() {
    local s
    s=$(CT_TIMEOUT=10 ct "$1" systemctl is-active basic.target 2>&1 || true)
    echo "basic.target: $s"
    [ "$s" = active ]
}

cloud_init_done() {
    local s
    s=$(CT_TIMEOUT=10 ct "$1" cloud-init status 2>&1 || true)
    echo "$s"
    case "$s" in
        *"status: done"*) return 0 ;;
        *"status: error"*) CT_TIMEOUT=10 ct "$1" cloud-init status --long 2>&1; return 99 ;;
    esac
    return 1
}

quorate_active() {
    local h s
    for h in "${HOSTS[@]}"; do
        s=$(CT_TIMEOUT=10 ct "$h" systemctl is-active quorate.service 2>/dev/null || true)
        echo "$h: $s ($(CT_TIMEOUT=10 ct "$h" systemctl show -p StatusText --value quorate.service 2>/dev/null))"
        [ "$s" = active ] || return 1
    done
}
unit_active() { [ "$(CT_TIMEOUT=10 ct "$1" systemctl is-active quorate.service 2>&1)" = active ]; }
status_text() { CT_TIMEOUT=10 ct "$1" systemctl show -p StatusText --value quorate.service; }
main_pid() { CT_TIMEOUT=10 ct "$1" systemctl show -p MainPID --value quorate.service; }
is_healthy() { local t; t=$(status_text "$1"); echo "$1: $t"; [[ "$t" == healthy* ]]; }
all_healthy() { local h; for h in "${HOSTS[@]}"; do is_healthy "$h" || return 1; done; }

# etcdctl from the host, with the client certificate made by `quorate cert client`.
ETCDCTL=""
ectl() {
    local ep=$1
    shift
    ETCDCTL_API=3 timeout 30 "$ETCDCTL" --endpoints="$ep" --dial-timeout=5s --command-timeout=15s \
        --cacert="$WORK/client/ca.pem" --cert="$WORK/client/e2e.pem" --key="$WORK/client/e2e-key.pem" "$@"
}
ep_of() { echo "https://$(ip_of "$1"):2379"; }
all_eps() { echo "https://$SUBNET.1:2379,https://$SUBNET.2:2379,https://$SUBNET.3:2379"; }
# "id name" of every started member, sorted.
members() { ectl "$(ep_of "$1")" member list -w simple | awk -F', ' '$2 == "started" { print $1, $3 }' | sort; }
cluster_id() { ectl "$(ep_of "$1")" endpoint status -w fields | awk -F' : ' '/"ClusterID"/ { print $2 }'; }
three_started() { local m; m=$(members "$1"); echo "$m"; [ "$(wc -l <<<"$m")" -eq 3 ] && [ "$(awk '{print $2}' <<<"$m" | sort | tr '\n' ' ')" = "h1 h2 h3 " ]; }
get_key() { ectl "$(ep_of "$1")" get "$2" --print-value-only ${3:+--consistency=$3}; }
expect_key() {
    local got
    got=$(get_key "$1" "$2" "${4:-}" 2>&1) || fail "etcdctl get $2 through $1" "$got"
    [ "$got" = "$3" ] || fail "$2 read through $1 is '$3'" "got: $got"
    pass "$2 read through $1${4:+ ($4)} is the value written"
}

# Checks that need no etcd client: unit state, status line, files.
check_hosts_basic() {
    local h t out
    for h in "${HOSTS[@]}"; do
        t=$(status_text "$h")
        [[ "$t" == healthy* ]] || fail "$h: status line says healthy" "StatusText=$t"
        out=$(CT_TIMEOUT=15 ct "$h" systemctl status quorate.service --no-pager -n 0 2>&1 || true)
        grep -q 'Status: "healthy' <<<"$out" || fail "$h: systemctl status shows the agent's STATUS= line" "$out"
        pass "$h: systemctl status shows Status: \"$t\""
        out=$(CT_TIMEOUT=10 ct "$h" systemctl is-active etcd.service 2>&1 || true)
        [ "$out" != active ] || fail "$h: Debian's etcd.service is not running" "is-active: $out"
        out=$(CT_TIMEOUT=10 ct "$h" systemctl is-enabled etcd.service 2>&1 || true)
        [ "$out" = disabled ] || fail "$h: Debian's etcd.service is disabled" "is-enabled: $out"
        pass "$h: Debian's etcd.service is stopped and disabled"
        out=$(CT_TIMEOUT=10 ct "$h" systemctl is-enabled quorate.service 2>&1 || true)
        [ "$out" = enabled ] || fail "$h: quorate.service is enabled" "is-enabled: $out"
        check_files "$h"
        check_etcd_child "$h"
    done
}

# /var/lib/quorate 0700 quorate, everything in it owned by quorate, every
# private key 0600, token and config 0600 quorate.
check_files() {
    local h=$1 out
    out=$(CT_TIMEOUT=15 ct "$h" sh -c '
        stat -c "%a %U:%G %n" /var/lib/quorate /etc/quorate/token /etc/quorate/quorate.toml
        echo "not-quorate:"; find /var/lib/quorate ! -user quorate
        echo "keys:"; find /var/lib/quorate -type f \( -name "*key*" -o -name "*.key" \) -printf "%m %u %p\n"' 2>&1) ||
        fail "$h: inspect state files" "$out"
    grep -qx '700 quorate:quorate /var/lib/quorate' <<<"$out" || fail "$h: /var/lib/quorate is 0700 quorate" "$out"
    grep -qx '600 quorate:quorate /etc/quorate/token' <<<"$out" || fail "$h: token file is 0600 quorate" "$out"
    grep -qx '600 quorate:quorate /etc/quorate/quorate.toml' <<<"$out" || fail "$h: config file is 0600 quorate" "$out"
    [ "$(sed -n '/^not-quorate:$/,/^keys:$/p' <<<"$out" | wc -l)" -eq 2 ] || fail "$h: every file in /var/lib/quorate is owned by quorate" "$out"
    local keys
    keys=$(sed -n '/^keys:$/,$p' <<<"$out" | tail -n +2)
    grep -q ' /var/lib/quorate/pki/node-key.pem$' <<<"$keys" || fail "$h: /var/lib/quorate/pki/node-key.pem exists" "$out"
    if [ "$h" = h1 ]; then
        grep -q ' /var/lib/quorate/pki/ca-key.pem$' <<<"$keys" || fail "h1 (seed): /var/lib/quorate/pki/ca-key.pem exists" "$out"
    fi
    if grep -v '^600 quorate ' <<<"$keys" | grep -q .; then
        fail "$h: every private key is 0600 quorate" "$keys"
    fi
    pass "$h: state dir 0700, $(wc -l <<<"$keys") key file(s) 0600, token and config 0600, all owned by quorate"
}

# The agent's etcd child: one process, child of the agent, without NOTIFY_SOCKET.
check_etcd_child() {
    local h=$1 out
    out=$(CT_TIMEOUT=15 ct "$h" sh -c '
        main=$(systemctl show -p MainPID --value quorate.service)
        pids=$(pgrep -x etcd || true)
        echo "main=$main etcd=$(echo $pids)"
        for p in $pids; do
            echo "ppid=$(ps -o ppid= -p $p | tr -d " ") user=$(ps -o user= -p $p)"
            tr "\0" "\n" </proc/$p/environ | grep "^NOTIFY_SOCKET=" || true
        done' 2>&1) || fail "$h: inspect etcd process" "$out"
    local main
    main=$(sed -n 's/^main=\([0-9]*\) .*/\1/p' <<<"$out")
    [ "$(grep -c '^ppid=' <<<"$out")" -eq 1 ] || fail "$h: exactly one etcd process runs" "$out"
    grep -qx "ppid=$main user=quorate" <<<"$out" || fail "$h: etcd is a child of the agent, running as quorate" "$out"
    ! grep -q '^NOTIFY_SOCKET=' <<<"$out" || fail "$h: etcd does not get NOTIFY_SOCKET" "$out"
    pass "$h: one etcd, child of the agent (pid $main), as quorate, without NOTIFY_SOCKET"
}

make_client_cert() {
    local h=h2 out
    out=$(CT_TIMEOUT=60 ct "$h" sh -c 'rm -rf /root/qe2e-client && quorate cert client e2e --out /root/qe2e-client && stat -c "%a %n" /root/qe2e-client/*' 2>&1) ||
        DIAG_HOSTS=$h fail "$h: quorate cert client e2e --out DIR" "$out"
    grep -qx '600 /root/qe2e-client/e2e-key.pem' <<<"$out" || fail "client key written 0600" "$out"
    mkdir -p "$WORK/client"
    cp "$(root_of "$h")"/root/qe2e-client/{ca.pem,e2e.pem,e2e-key.pem} "$WORK/client/" ||
        fail "quorate cert client wrote ca.pem, e2e.pem, e2e-key.pem" "$out"
    pass "$h: quorate cert client wrote ca.pem, e2e.pem and e2e-key.pem (0600)"
}

snapshot_state() {
    # plan.json must never change once decided; record it.
    local h s
    for h in "${HOSTS[@]}"; do
        s=$(CT_TIMEOUT=10 ct "$h" sha256sum /var/lib/quorate/plan.json 2>/dev/null | awk '{print $1}' || true)
        printf '%s ' "${s:-none}"
    done
}

# ---------------------------------------------------------------- main
DEB=""
RPM=""
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
        *.deb) DEB=$1 ;;
        *.rpm) RPM=$1 ;;
        *) die "unknown argument: $1 (expected a .deb and optionally an .rpm)" ;;
    esac
    shift
done

trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

phase "host prerequisites"
host_prereqs

phase "packages"
get_packages

phase "rootfs (cache: $CACHE)"
prepare_rootfs
ETCDCTL=$ROOTFS/usr/bin/etcdctl

phase "network and containers"
setup_network
prepare_containers
boot_all

phase "cloud-init"
for h in "${HOSTS[@]}"; do
    wait_for "$h: cloud-init finished" 300 "$h" cloud_init_done "$h"
done
for h in "${HOSTS[@]}"; do
    out=$(CT_TIMEOUT=60 ct "$h" cloud-init schema --system 2>&1) || fail "$h: user-data is valid per cloud-init schema" "$out"
done
pass "user-data valid per cloud-init schema on all hosts"
out=$(CT_TIMEOUT=30 ct h1 systemd-analyze verify quorate.service 2>&1) || fail "systemd-analyze verify quorate.service" "$out"
[ -z "$out" ] || fail "systemd-analyze verify quorate.service is clean" "$out"
pass "systemd-analyze verify quorate.service: clean"
out=$(CT_TIMEOUT=10 ct h1 dpkg-query -W -f '${Version}' quorate 2>&1) || true
[ "$out" = "$PKG_VERSION" ] || fail "h1: quorate $PKG_VERSION installed by cloud-init" "$out"
pass "quorate $PKG_VERSION installed by cloud-init"

phase "cluster formation"
wait_for "quorate.service active on all three hosts" "$FORM_TIMEOUT" "${HOSTS[*]}" quorate_active
wait_for "status line says healthy on all three hosts" 60 "${HOSTS[*]}" all_healthy
check_hosts_basic
out=$(CT_TIMEOUT=30 ct h1 quorate status 2>&1) || fail "h1: quorate status" "$out"
pass "h1: quorate status exits 0"
printf '%s\n' "$out" | sed 's/^/       | /'

phase "etcd from the host"
make_client_cert
wait_for "etcdctl sees three started members h1 h2 h3" 60 "${HOSTS[*]}" three_started h1
MEMBERS=$(members h1)
CLUSTER_ID=$(cluster_id h1)
[ -n "$CLUSTER_ID" ] || fail "cluster ID readable" "$(ectl "$(ep_of h1)" endpoint status -w fields 2>&1)"
for h in h2 h3; do
    [ "$(cluster_id "$h")" = "$CLUSTER_ID" ] || fail "$h reports cluster ID $CLUSTER_ID" "$(cluster_id "$h" 2>&1)"
done
pass "all members report cluster ID $CLUSTER_ID"
out=$(ectl "$(all_eps)" endpoint health 2>&1) || fail "etcdctl endpoint health (all three)" "$out"
pass "etcdctl endpoint health: all three endpoints healthy"
out=$(CT_TIMEOUT=60 ct h1 sh -c 'eval "$(quorate env)" && etcdctl member list' 2>&1) ||
    fail "h1: etcdctl with the exports of quorate env (docs/install.md)" "$out"
[ "$(grep -c ', started, ' <<<"$out")" -eq 3 ] || fail "h1: etcdctl with quorate env sees three started members" "$out"
pass "h1: etcdctl with the exports of quorate env sees three started members"
VALUE="written-through-h1-$RANDOM"
out=$(ectl "$(ep_of h1)" put qe2e/key "$VALUE" 2>&1) || fail "put qe2e/key through h1" "$out"
expect_key h2 qe2e/key "$VALUE"
expect_key h3 qe2e/key "$VALUE"
PLAN=$(snapshot_state)
[[ "$PLAN" != *none* ]] || fail "plan.json exists on every host" "$PLAN"
out=$(for h in "${HOSTS[@]}"; do ct "$h" systemctl show -p NRestarts --value quorate.service; done | tr '\n' ' ')
[ "$out" = "0 0 0 " ] || fail "no agent was restarted by systemd (watchdog, crash)" "NRestarts: $out"
pass "no restarts so far (watchdog fed): NRestarts $out"

phase "consumer host (client mode, client.yaml)"
# A fourth container from the same cached rootfs, set up with the shipped client.yaml:
# quorate-client.service keeps a client certificate and the endpoints in $CLIENT_DIR and
# runs on_change, here `systemctl try-restart qe2e-consumer.service` (a dummy consumer
# that appends a line per start), which checks the unit's sandbox lets on_change use systemctl.
out=$(CT_TIMEOUT=60 ct h1 quorate token create --client 2>&1) || fail "h1: quorate token create --client" "$out"
CLIENT_TOKEN=$(grep -o 'qrt1:sha256:[^[:space:]]*' <<<"$out" | head -n 1)
[ -n "$CLIENT_TOKEN" ] || fail "h1: quorate token create --client prints the pinned client token" "$out"
pass "h1: quorate token create --client printed a pinned client token"
h=$CONSUMER
prepare_ct $h
r=$(root_of $h)
cat >"$r/etc/systemd/system/qe2e-consumer.service" <<'EOF'
[Unit]
Description=qe2e dummy consumer (restarted by quorate's on_change)
# Running before cloud-init's runcmd enables quorate-client, so try-restart has something to restart.
Before=cloud-final.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'date +%%s >>/var/lib/qe2e-consumer.starts'
[Install]
WantedBy=multi-user.target
EOF
ln -s /etc/systemd/system/qe2e-consumer.service "$r/etc/systemd/system/multi-user.target.wants/qe2e-consumer.service"
sed -e "s|QUORATE_CLIENT_TOKEN|$CLIENT_TOKEN|" \
    -e "s|QUORATE_MEMBER_ADDRS|\"$SUBNET.1\", \"$SUBNET.2\", \"$SUBNET.3\"|" \
    -e "s|QUORATE_CLIENT_NAME|$CLIENT_NAME|" \
    -e "s|QUORATE_CONSUMER_UNIT|qe2e-consumer.service|" \
    -e "s|^  - quorate\$|  - $PKG_IN_CT|" "$REPO/packaging/cloud-init/client.yaml" >"$r/var/lib/cloud/seed/nocloud/user-data"
grep -q "^  - $PKG_IN_CT\$" "$r/var/lib/cloud/seed/nocloud/user-data" || die "client.yaml: no '  - quorate' packages entry"
! grep -q 'QUORATE_[A-Z_]*' "$r/var/lib/cloud/seed/nocloud/user-data" || die "client.yaml: placeholder left"
sed "s|$CLIENT_TOKEN|<client token>|" "$r/var/lib/cloud/seed/nocloud/user-data" >"$LOGS/$h-user-data.yaml"
start_ct $h
wait_for "$h: booted (basic.target)" 120 $h is_booted $h
wait_for "$h: cloud-init finished" 300 $h cloud_init_done $h
client_active() {
    local s
    s=$(CT_TIMEOUT=10 ct "$1" systemctl is-active quorate-client.service 2>&1 || true)
    echo "quorate-client: $s ($(CT_TIMEOUT=10 ct "$1" systemctl show -p StatusText --value quorate-client.service 2>&1))"
    [ "$s" != failed ] || return 99
    [ "$s" = active ]
}
wait_for "$h: quorate-client.service active (READY=1)" 120 $h client_active $h
out=$(CT_TIMEOUT=10 ct $h systemctl show -p Type --value quorate-client.service 2>&1)
[ "$out" = notify ] || fail "$h: quorate-client.service is Type=notify" "Type=$out"
out=$(CT_TIMEOUT=10 ct $h systemctl is-enabled quorate-client.service 2>&1 || true)
[ "$out" = enabled ] || DIAG_HOSTS=$h fail "$h: cloud-init enabled quorate-client.service" "is-enabled: $out"
out=$(CT_TIMEOUT=10 ct $h systemctl is-active quorate.service 2>&1 || true)
[ "$out" != active ] && [ "$out" != activating ] || DIAG_HOSTS=$h fail "$h: quorate.service is not running on the consumer" "is-active: $out"
pass "$h: quorate-client.service (Type=notify) active and enabled, quorate.service $out"
out=$(CT_TIMEOUT=15 ct $h sh -c "cd $CLIENT_DIR && stat -c '%a %U %n' ca.pem $CLIENT_NAME.pem $CLIENT_NAME-key.pem endpoints endpoints.json etcdctl.env" 2>&1) ||
    DIAG_HOSTS=$h fail "$h: the client files exist in $CLIENT_DIR" "$out"
grep -qx "600 root $CLIENT_NAME-key.pem" <<<"$out" || fail "$h: $CLIENT_NAME-key.pem is 0600 root" "$out"
[ "$(grep -v -- '-key.pem$' <<<"$out" | grep -cv '^644 root ')" = 0 ] || fail "$h: the other client files are 0644 root" "$out"
pass "$h: $CLIENT_DIR holds ca.pem, $CLIENT_NAME.pem, $CLIENT_NAME-key.pem (0600), endpoints, endpoints.json, etcdctl.env"
eps=$(cat "$r$CLIENT_DIR/endpoints")
[ "$(tr ',' '\n' <<<"$eps" | grep -v '^$' | sort | tr '\n' ',')" = "$(all_eps)," ] || fail "$h: endpoints lists the three members" "endpoints: $eps"
pass "$h: endpoints lists the three members ($eps)"
CVALUE="written-by-$h-$RANDOM"
out=$(CT_TIMEOUT=60 ct $h sh -c "cd $CLIENT_DIR && ETCDCTL_API=3 etcdctl --endpoints=\$(cat endpoints) --dial-timeout=5s --command-timeout=15s \
    --cacert=ca.pem --cert=$CLIENT_NAME.pem --key=$CLIENT_NAME-key.pem put qe2e/from-client $CVALUE >/dev/null && \
    ETCDCTL_API=3 etcdctl --endpoints=\$(cat endpoints) --dial-timeout=5s --command-timeout=15s \
    --cacert=ca.pem --cert=$CLIENT_NAME.pem --key=$CLIENT_NAME-key.pem get qe2e/from-client --print-value-only" 2>&1) ||
    DIAG_HOSTS=$h fail "$h: etcdctl with only the files in $CLIENT_DIR puts and gets a key" "$out"
[ "$out" = "$CVALUE" ] || fail "$h: etcdctl with the client files reads back what it wrote" "$out"
pass "$h: etcdctl with only the files in $CLIENT_DIR put and got qe2e/from-client"
expect_key h2 qe2e/from-client "$CVALUE"
consumer_restarted() {
    local n
    n=$(CT_TIMEOUT=10 ct "$1" cat /var/lib/qe2e-consumer.starts 2>&1 | wc -l)
    echo "qe2e-consumer.service starts: $n"
    CT_TIMEOUT=10 ct "$1" journalctl -u quorate-client.service --no-pager -n 5 2>&1 | tail -n 5
    [ "$n" -ge 2 ]
}
wait_for "$h: on_change ran systemctl try-restart qe2e-consumer.service (a second start)" 60 $h consumer_restarted $h
out=$(CT_TIMEOUT=30 ct $h quorate status 2>&1) || DIAG_HOSTS=$h fail "$h: quorate status" "$out"
grep -qF '(client mode)' <<<"$out" || fail "$h: quorate status says (client mode)" "$out"
pass "$h: quorate status says (client mode)"
# The run is counted once the command has finished (the restart above may still be returning).
on_change_counted() {
    local out
    out=$(CT_TIMEOUT=30 ct "$1" quorate status 2>&1)
    grep '^on_change:' <<<"$out" || echo "$out"
    grep -Eq '^on_change: .* [1-9][0-9]* run\(s\), 0 failed' <<<"$out"
}
wait_for "$h: quorate status counts the on_change run, none failed" 30 $h on_change_counted $h
printf '%s\n' "$(CT_TIMEOUT=30 ct $h quorate status 2>&1)" | sed 's/^/       | /'
out=$(CT_TIMEOUT=10 ct $h systemctl show -p NRestarts --value quorate-client.service 2>&1)
[ "$out" = 0 ] || fail "$h: quorate-client.service was not restarted by systemd" "NRestarts: $out"
pass "$h: quorate-client.service NRestarts 0"
# The consumer's part is done: its journal is kept, and it stops so the later phases
# run on three containers as before.
CT_TIMEOUT=30 ct $h journalctl -b --no-pager -o short-monotonic >"$LOGS/$h-journal.log" 2>&1 || true
CT_TIMEOUT=10 ct $h cat /var/log/cloud-init-output.log >"$LOGS/$h-cloud-init-output.log" 2>&1 || true
stop_ct $h

phase "systemctl restart quorate (h2)"
old=$(main_pid h2)
out=$(CT_TIMEOUT=240 ct h2 systemctl restart quorate.service 2>&1) || DIAG_HOSTS=h2 fail "h2: systemctl restart quorate" "$out"
new=$(main_pid h2)
[ "$new" != "$old" ] && [ "$new" != 0 ] || fail "h2: the agent was restarted" "MainPID $old -> $new"
pass "h2: systemctl restart returned with a new agent (pid $old -> $new)"
wait_for "h2: status line healthy again" 60 h2 is_healthy h2
check_etcd_child h2
[ "$(members h2)" = "$MEMBERS" ] || fail "h2 kept its member (same member IDs)" "before: $MEMBERS
after: $(members h2 2>&1)"
[ "$(cluster_id h2)" = "$CLUSTER_ID" ] || fail "h2: same cluster ID after restart" "$(cluster_id h2 2>&1)"
pass "h2: same member IDs and cluster ID after restart"
expect_key h2 qe2e/key "$VALUE" s
out=$(ectl "$(ep_of h2)" put qe2e/after-restart yes 2>&1) || fail "put through h2 after restart" "$out"
expect_key h1 qe2e/after-restart yes

phase "power cycle of all three hosts"
for h in "${HOSTS[@]}"; do CT_TIMEOUT=20 ct "$h" systemctl poweroff --no-block >/dev/null 2>&1 || true; done
for h in "${HOSTS[@]}"; do
    wait_for "$h: powered off" 90 "$h" nspawn_gone "$h"
    rm -f "$WORK/$h.nspawn" "$WORK/$h.init"
done
boot_all
wait_for "quorate.service active on all three hosts after boot" "$FORM_TIMEOUT" "${HOSTS[*]}" quorate_active
wait_for "status line healthy on all three hosts after boot" 60 "${HOSTS[*]}" all_healthy
check_hosts_basic
[ "$(members h1)" = "$MEMBERS" ] || fail "same members after the power cycle" "before: $MEMBERS
after: $(members h1 2>&1)"
for h in "${HOSTS[@]}"; do
    [ "$(cluster_id "$h")" = "$CLUSTER_ID" ] || fail "$h: same cluster ID after the power cycle" "$(cluster_id "$h" 2>&1)"
done
pass "same cluster ID $CLUSTER_ID and member IDs after the power cycle"
[ "$(snapshot_state)" = "$PLAN" ] || fail "plan.json unchanged on every host (no new bootstrap)" "before: $PLAN
after: $(snapshot_state)"
pass "plan.json unchanged on every host (no new bootstrap)"
expect_key h3 qe2e/key "$VALUE"
expect_key h3 qe2e/after-restart yes

phase "the new package on all three hosts at the same moment, under a writer"
declare -A old_agent old_etcd conf_sum
for h in "${HOSTS[@]}"; do
    old_agent[$h]=$(main_pid $h)
    old_etcd[$h]=$(ct $h pgrep -x etcd)
    conf_sum[$h]=$(sha256sum <"$(root_of $h)/etc/quorate/quorate.toml")
done
# The writer: one put at a time through all endpoints, each acknowledged key recorded.
rm -f "$WORK/upgrade-stop"
acked=$WORK/upgrade-acked
: >"$acked"
(
    i=0
    while [ ! -e "$WORK/upgrade-stop" ]; do
        i=$((i + 1))
        if ectl "$(all_eps)" put "qe2e/upgrade/$i" "v$i" >/dev/null 2>&1; then echo "qe2e/upgrade/$i" >>"$acked"; fi
        sleep 0.1
    done
) &
writer=$!
# The sampler: how many agents say healthy, every second.
samples=$WORK/upgrade-healthy
: >"$samples"
(
    while [ ! -e "$WORK/upgrade-stop" ]; do
        n=0
        for h in "${HOSTS[@]}"; do [[ "$(status_text $h 2>/dev/null)" == healthy* ]] && n=$((n + 1)); done
        echo $n >>"$samples"
        sleep 1
    done
) &
sampler=$!
declare -A inst
for h in "${HOSTS[@]}"; do
    CT_TIMEOUT=300 ct $h env DEBIAN_FRONTEND=noninteractive apt-get install -y \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$UPGRADE_IN_CT" \
        >"$WORK/upgrade-$h.log" 2>&1 &
    inst[$h]=$!
done
for h in "${HOSTS[@]}"; do
    wait "${inst[$h]}" || DIAG_HOSTS=$h fail "$h: upgrade to $UPGRADE_VERSION" "$(cat "$WORK/upgrade-$h.log")"
    [ "$(ct $h dpkg-query -W -f '${Version}' quorate)" = "$UPGRADE_VERSION" ] || fail "$h: $UPGRADE_VERSION installed" "$(cat "$WORK/upgrade-$h.log")"
done
pass "$UPGRADE_VERSION installed on all three hosts at once"
restarted_in_place() {
    local h=$1 exe etcd
    exe=$(ct $h readlink "/proc/${old_agent[$h]}/exe")
    etcd=$(ct $h pgrep -x etcd || true)
    echo "$h: agent ${old_agent[$h]} runs $exe; etcd ${old_etcd[$h]} -> $etcd; $(status_text $h)"
    [ "$(main_pid $h)" = "${old_agent[$h]}" ] || return 99
    [[ "$exe" != *deleted* ]] && [ -n "$etcd" ] && [ "$etcd" != "${old_etcd[$h]}" ] && is_healthy $h
}
for h in "${HOSTS[@]}"; do
    wait_for "$h: the agent re-executed the new binary in place (same MainPID, new etcd), healthy" 240 $h restarted_in_place $h
done
sleep 2
touch "$WORK/upgrade-stop"
wait "$writer" "$sampler" || true
fewest=$(sort -n "$samples" | head -n 1)
[ "$(wc -l <"$samples")" -ge 10 ] || fail "enough health samples during the upgrade" "$(cat "$samples")"
[ "$fewest" -ge 2 ] || fail "never fewer than two healthy agents during the upgrade" "samples: $(tr '\n' ' ' <"$samples")"
pass "never fewer than two healthy agents during the upgrade (fewest $fewest over $(wc -l <"$samples") samples)"
keys=$(ectl "$(all_eps)" get qe2e/upgrade/ --prefix --keys-only | grep -v '^$' | sort)
lost=$(sort "$acked" | comm -23 - <(echo "$keys"))
[ -s "$acked" ] && [ -z "$lost" ] || fail "every key acknowledged during the upgrade is there" "acked $(wc -l <"$acked"), lost: $lost"
pass "every key acknowledged during the upgrade is there ($(wc -l <"$acked") keys)"
for h in "${HOSTS[@]}"; do
    journal=$(ct $h journalctl -u quorate.service --no-pager 2>&1 || true)
    grep -q "stopping to restart on the installed quorate binary" <<<"$journal" ||
        fail "$h: the journal says the agent restarted on the new binary" "$(tail -n 30 <<<"$journal")"
    [ "$(sha256sum <"$(root_of $h)/etc/quorate/quorate.toml")" = "${conf_sum[$h]}" ] || fail "$h: upgrade kept /etc/quorate/quorate.toml"
done
pass "every agent restarted on the new binary; every host kept its quorate.toml"
h=h3
r=$(root_of $h)
[ -f "$r/etc/quorate/quorate.toml.dpkg-dist" ] || fail "$h: the new default config is left as quorate.toml.dpkg-dist" "$(ls -la "$r/etc/quorate")"
pass "$h: upgrade kept the operator's quorate.toml (new default in quorate.toml.dpkg-dist)"
[ "$(members h1)" = "$MEMBERS" ] || fail "same members after the upgrade" "$(members h1 2>&1)"
pass "still the same members after the upgrade"

phase "dpkg remove / purge / install (h3)"
out=$(CT_TIMEOUT=120 ct $h dpkg -r quorate 2>&1) || fail "$h: dpkg -r quorate" "$out"
st=$(ct $h systemctl is-active quorate.service 2>&1 || true)
[ "$st" != active ] && [ "$st" != activating ] || fail "$h: remove stopped the agent" "is-active: $st"
out=$(ct $h pgrep -a -x etcd 2>&1 || true)
[ -z "$out" ] || fail "$h: remove stopped etcd as well" "$out"
[ "$(ct $h dpkg-query -W -f '${db:Status-Abbrev}' quorate)" = "rc " ] || fail "$h: package in state rc (config-files)" "$(ct $h dpkg -l quorate 2>&1)"
for f in /etc/quorate/quorate.toml /etc/quorate/token /var/lib/quorate/plan.json /var/lib/quorate/pki/node-key.pem /var/lib/quorate/etcd/member; do
    [ -e "$r$f" ] || fail "$h: remove left $f in place" "$(ls -la "$(dirname "$r$f")" 2>&1)"
done
pass "$h: dpkg -r stopped agent and etcd, kept /etc/quorate and /var/lib/quorate"
out=$(ct $h systemctl is-active etcd.service 2>&1 || true)
[ "$out" != active ] || fail "$h: removing quorate does not start Debian's etcd.service" "$out"

out=$(CT_TIMEOUT=120 ct $h dpkg -P quorate 2>&1) || fail "$h: dpkg -P quorate" "$out"
[ ! -e "$r/etc/quorate" ] && [ ! -e "$r/var/lib/quorate" ] || fail "$h: purge deleted /etc/quorate and /var/lib/quorate" "$(ls -la "$r/etc/quorate" "$r/var/lib/quorate" 2>&1)"
[ ! -e "$r/etc/systemd/system/multi-user.target.wants/quorate.service" ] || fail "$h: purge removed the enablement link"
ct $h getent passwd quorate >/dev/null || fail "$h: purge keeps the system user (Debian practice)"
pass "$h: dpkg -P deleted config and data, kept the user"

# Fresh install on a host where Debian's etcd.service is enabled and running.
out=$(CT_TIMEOUT=60 ct $h systemctl enable --now etcd.service 2>&1) || fail "$h: start Debian's etcd.service for the install test" "$out"
out=$(CT_TIMEOUT=120 ct $h env DEBIAN_FRONTEND=noninteractive dpkg -i "$PKG_IN_CT" 2>&1) || fail "$h: dpkg -i $PKG_IN_CT" "$out"
grep -q "disabled Debian's etcd.service" <<<"$out" || fail "$h: install says it disabled etcd.service" "$out"
[ "$(ct $h systemctl is-active etcd.service 2>&1 || true)" != active ] || fail "$h: install stopped etcd.service"
[ "$(ct $h systemctl is-enabled etcd.service 2>&1 || true)" = disabled ] || fail "$h: install disabled etcd.service"
pass "$h: install stopped and disabled a running Debian etcd.service"
[ "$(ct $h systemctl is-enabled quorate.service 2>&1 || true)" = disabled ] || fail "$h: install does not enable quorate.service"
[ "$(ct $h systemctl is-active quorate.service 2>&1 || true)" = inactive ] || fail "$h: install does not start quorate.service"
out=$(ct $h stat -c '%a %U:%G %n' /var/lib/quorate /etc/quorate 2>&1)
grep -qx '700 quorate:quorate /var/lib/quorate' <<<"$out" && grep -qx '750 root:quorate /etc/quorate' <<<"$out" ||
    fail "$h: install created /var/lib/quorate (0700 quorate) and /etc/quorate (0750 root:quorate)" "$out"
pass "$h: install created user and state dir, and neither enabled nor started quorate"

phase_end
trap - INT TERM
exit 0
