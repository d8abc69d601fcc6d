#!/usr/bin/env bash
# Static checks of the built packages (no installation):
#   tests/e2e/inspect-packages.sh target/debian/quorate_*.deb [target/generate-rpm/quorate-*.rpm]
# The .deb: file list, conffiles, Depends, stripped binary, maintainer scripts
# with the generated systemd fragments, and the two units (the member's
# quorate.service and the client mode's quorate-client.service: they conflict
# with each other, the client unit runs as root without NoNewPrivileges but
# keeps the sandbox). The .rpm (with Debian's `rpm` tool): file list,
# %config(noreplace), Requires, scriptlets.
# Prints one line per check and a closing "N passed, M failed" line.
set -euo pipefail

DEB=${1:?usage: inspect-packages.sh DEB [RPM]}
RPM=${2:-}
passed=0 failed=0
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

ok()   { passed=$((passed + 1)); printf 'ok     %s\n' "$1"; }
bad()  { failed=$((failed + 1)); printf 'FAILED %s\n' "$1"; [ -z "${2:-}" ] || printf '%s\n' "$2" | sed 's/^/       | /'; }
# check DESCRIPTION HAYSTACK PATTERN (grep -E on a multi-line string)
has()  { if grep -qE -- "$3" <<<"$2"; then ok "$1"; else bad "$1" "$2"; fi; }
hasnt(){ if grep -qE -- "$3" <<<"$2"; then bad "$1" "$2"; else ok "$1"; fi; }

# ---------------------------------------------------------------- .deb
[ -f "$DEB" ] || { echo "no such file: $DEB" >&2; exit 1; }
echo "# $DEB"
contents=$(dpkg-deb -c "$DEB")
control=$(dpkg-deb -f "$DEB")
dpkg-deb -e "$DEB" "$WORK/control"
dpkg-deb -x "$DEB" "$WORK/root"

has "deb: ships /usr/bin/quorate (0755)" "$contents" '^-rwxr-xr-x .* \./usr/bin/quorate$'
has "deb: ships the unit in /usr/lib/systemd/system" "$contents" ' \./usr/lib/systemd/system/quorate\.service$'
has "deb: ships the client-mode unit in /usr/lib/systemd/system (0644)" "$contents" '^-rw-r--r-- .* \./usr/lib/systemd/system/quorate-client\.service$'
has "deb: ships /etc/quorate/quorate.toml" "$contents" ' \./etc/quorate/quorate\.toml$'
has "deb: ships the sysusers.d entry" "$contents" ' \./usr/lib/sysusers\.d/quorate\.conf$'
has "deb: ships docs/install.md" "$contents" ' \./usr/share/doc/quorate/install\.md$'
has "deb: ships the cloud-init examples" "$contents" ' \./usr/share/doc/quorate/examples/cloud-init/member\.yaml$'
has "deb: ships the cloud-init client-mode example" "$contents" ' \./usr/share/doc/quorate/examples/cloud-init/client\.yaml$'
has "deb: ships the Prometheus alert rules (0644)" "$contents" '^-rw-r--r-- .* \./usr/share/quorate/prometheus/quorate-alerts\.yml$'
has "deb: /etc/quorate/quorate.toml is a conffile" "$(cat "$WORK/control/conffiles" 2>/dev/null)" '^/etc/quorate/quorate\.toml$'
has "deb: Depends on etcd-server (>= 3.4)" "$(grep '^Depends:' <<<"$control")" 'etcd-server \(>= 3\.4\)'
if command -v readelf >/dev/null; then
    if readelf -h "$WORK/root/usr/bin/quorate" >/dev/null 2>&1; then
        hasnt "deb: /usr/bin/quorate is stripped (no .symtab)" "$(readelf -S "$WORK/root/usr/bin/quorate" 2>&1)" '\.symtab|\.debug_info'
    else
        bad "deb: /usr/bin/quorate is an ELF binary"
    fi
fi
for unit in quorate.service quorate-client.service; do
    if ! diff -q "$WORK/root/usr/lib/systemd/system/$unit" "$(dirname "$0")/../../systemd/$unit" >/dev/null 2>&1; then
        bad "deb: unit is systemd/$unit"
    else
        ok "deb: unit is systemd/$unit"
    fi
done
# The units as shipped (settings only, comments dropped).
member_unit=$(grep -v '^[[:space:]]*[#;]' "$WORK/root/usr/lib/systemd/system/quorate.service" 2>/dev/null || true)
client_unit=$(grep -v '^[[:space:]]*[#;]' "$WORK/root/usr/lib/systemd/system/quorate-client.service" 2>/dev/null || true)
has "unit: quorate.service conflicts with quorate-client.service" "$member_unit" '^Conflicts=(.* )?quorate-client\.service( |$)'
has "client unit: conflicts with quorate.service" "$client_unit" '^Conflicts=(.* )?quorate\.service( |$)'
has "client unit: runs quorate run --config /etc/quorate/quorate.toml" "$client_unit" '^ExecStart=/usr/bin/quorate run --config /etc/quorate/quorate\.toml$'
has "client unit: Type=notify, NotifyAccess=main" "$(grep -E '^(Type|NotifyAccess)=' <<<"$client_unit" | sort | tr '\n' ' ')" '^NotifyAccess=main Type=notify $'
has "client unit: WatchdogSec" "$client_unit" '^WatchdogSec=[1-9]'
has "client unit: Restart=on-failure" "$client_unit" '^Restart=on-failure$'
has "client unit: no restart on exit status 2 (bad config)" "$client_unit" '^RestartPreventExitStatus=2$'
hasnt "client unit: runs as root (no User=/DynamicUser=, so on_change can use systemctl)" "$client_unit" '^(User|DynamicUser)='
hasnt "client unit: no NoNewPrivileges" "$client_unit" '^NoNewPrivileges='
has "client unit: keeps CAP_SYS_ADMIN in a bounded capability set (no implied NoNewPrivileges)" "$client_unit" '^CapabilityBoundingSet=(.* )?CAP_SYS_ADMIN( |$)'
has "client unit: ProtectSystem=strict" "$client_unit" '^ProtectSystem=strict$'
has "client unit: may write /var/lib/quorate (StateDirectory=quorate)" "$client_unit" '^StateDirectory=quorate$'
has "client unit: may write /etc/quorate/client (ConfigurationDirectory=quorate/client)" "$client_unit" '^ConfigurationDirectory=quorate/client$'
has "client unit: AF_UNIX allowed (systemctl's socket)" "$client_unit" '^RestrictAddressFamilies=.*AF_UNIX'
for setting in ProtectHome=yes PrivateTmp=yes PrivateDevices=yes ProtectKernelTunables=yes \
               ProtectKernelModules=yes ProtectControlGroups=yes RestrictNamespaces=yes \
               RestrictSUIDSGID=yes MemoryDenyWriteExecute=yes SystemCallFilter=@system-service; do
    has "client unit: $setting" "$client_unit" "^${setting}\$"
done
postinst=$(cat "$WORK/control/postinst")
prerm=$(cat "$WORK/control/prerm")
postrm=$(cat "$WORK/control/postrm")
hasnt "deb: no #DEBHELPER# token left" "$postinst$prerm$postrm" '#DEBHELPER#'
has "deb postinst: creates the user" "$postinst" 'useradd --system'
has "deb postinst: creates /var/lib/quorate 0700" "$postinst" 'install -d -o "\$QUORATE_USER" -g "\$QUORATE_USER" -m 0700 "\$STATE_DIR"'
has "deb postinst: disables Debian's etcd.service" "$postinst" 'systemctl disable etcd\.service'
has "deb postinst: only keeps an existing enablement (no enable on install)" "$postinst" 'if deb-systemd-helper debian-installed quorate\.service; then'
has "deb postinst: client unit: only keeps an existing enablement" "$postinst" 'if deb-systemd-helper debian-installed quorate-client\.service; then'
has "deb postinst: restarts a running client agent on upgrade, without waiting" "$postinst" 'systemctl try-restart --no-block quorate-client\.service'
hasnt "deb postinst: no enable-on-install fragment" "$postinst" 'new installations run enable'
has "deb postinst: asks the agent to restart itself on upgrade" "$postinst" '/usr/bin/quorate restart --config /etc/quorate/quorate\.toml'
has "deb postinst: try-restart when the agent does not take the request" "$postinst" 'systemctl try-restart quorate\.service'
hasnt "deb postinst: no restart fragment on upgrade" "$postinst" 'deb-systemd-invoke (try-)?restart'
has "deb prerm: stops quorate on remove only (not on upgrade)" "$prerm" '"\$1" = remove'
hasnt "deb postinst: never starts quorate on install" "$postinst" 'deb-systemd-invoke (start|\$_dh_action)'
has "deb prerm: stops quorate on remove" "$prerm" 'deb-systemd-invoke stop quorate\.service'
has "deb prerm: stops quorate-client on remove" "$prerm" 'deb-systemd-invoke stop quorate-client\.service'
has "deb postrm: purge deletes /var/lib/quorate" "$postrm" 'rm -rf /var/lib/quorate'
has "deb postrm: purge deletes /etc/quorate" "$postrm" 'rm -rf /etc/quorate'
has "deb postrm: purge forgets the unit state" "$postrm" 'deb-systemd-helper purge quorate\.service'
has "deb postrm: purge forgets the client unit's state" "$postrm" 'deb-systemd-helper purge quorate-client\.service'

# ---------------------------------------------------------------- .rpm
if [ -n "$RPM" ]; then
    [ -f "$RPM" ] || { echo "no such file: $RPM" >&2; exit 1; }
    command -v rpm >/dev/null || { echo "rpm not found: apt-get install -y rpm" >&2; exit 1; }
    echo "# $RPM"
    files=$(rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]' "$RPM" 2>/dev/null)
    requires=$(rpm -qp --requires "$RPM" 2>/dev/null)
    scripts=$(rpm -qp --scripts "$RPM" 2>/dev/null)
    has "rpm: ships /usr/bin/quorate (0755)" "$files" '^-rwxr-xr-x root .* /usr/bin/quorate$'
    has "rpm: ships the unit in /usr/lib/systemd/system" "$files" ' /usr/lib/systemd/system/quorate\.service$'
    has "rpm: ships the client-mode unit in /usr/lib/systemd/system (0644)" "$files" '^-rw-r--r-- root .* /usr/lib/systemd/system/quorate-client\.service$'
    has "rpm: ships the cloud-init client-mode example (%doc)" "$files" ' d /usr/share/doc/quorate/examples/cloud-init/client\.yaml$'
    has "rpm: /etc/quorate/quorate.toml is %config(noreplace)" "$files" ' cn /etc/quorate/quorate\.toml$'
    has "rpm: ships the sysusers.d entry" "$files" ' /usr/lib/sysusers\.d/quorate\.conf$'
    has "rpm: ships docs (%doc)" "$files" ' d /usr/share/doc/quorate/install\.md$'
    has "rpm: ships the Prometheus alert rules (0644)" "$files" '^-rw-r--r-- root .* /usr/share/quorate/prometheus/quorate-alerts\.yml$'
    has "rpm: Requires etcd" "$requires" '^etcd( >= 3\.4)?$'
    has "rpm %pre: creates the user" "$scripts" 'useradd --system'
    has "rpm %post: creates /var/lib/quorate 0700" "$scripts" 'install -d -o quorate -g quorate -m 0700 /var/lib/quorate'
    has "rpm %post: disables etcd.service" "$scripts" 'systemctl disable --now etcd\.service'
    has "rpm %preun: stops and disables on removal only" "$scripts" 'if \[ "\$1" -eq 0 \]; then'
    has "rpm %preun: stops and disables the client unit too" "$scripts" 'disable --now quorate\.service quorate-client\.service'
    hasnt "rpm: scriptlets never enable or start a unit" "$(grep -v '^[[:space:]]*#' <<<"$scripts")" '(^|[[:space:]])systemctl([[:space:]]+-[^[:space:]]+)*[[:space:]]+(enable|start|preset)([[:space:]]|$)'
    has "rpm %postun: restarts a running client agent on upgrade, without waiting" "$scripts" 'systemctl try-restart --no-block quorate-client\.service'
    has "rpm %postun: asks the agent to restart itself on upgrade" "$scripts" '/usr/bin/quorate restart --config /etc/quorate/quorate\.toml'
    has "rpm %postun: try-restart when the agent does not take the request" "$scripts" 'systemctl try-restart quorate\.service'
    hasnt "rpm: scriptlets never delete data" "$scripts" 'rm -rf'
fi

echo "inspect-packages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
