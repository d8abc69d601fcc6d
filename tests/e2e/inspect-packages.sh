#!/usr/bin/env bash
# Static checks of the built packages (no installation):
#   tests/e2e/inspect-packages.sh target/debian/quorate_*.deb [target/generate-rpm/quorate-*.rpm]
# The .deb: file list, conffiles, Depends, stripped binary, maintainer scripts
# with the generated systemd fragments. The .rpm (with Debian's `rpm` tool):
# file list, %config(noreplace), Requires, scriptlets.
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
has "deb: ships /etc/quorate/quorate.toml" "$contents" ' \./etc/quorate/quorate\.toml$'
has "deb: ships the sysusers.d entry" "$contents" ' \./usr/lib/sysusers\.d/quorate\.conf$'
has "deb: ships docs/install.md" "$contents" ' \./usr/share/doc/quorate/install\.md$'
has "deb: ships the cloud-init examples" "$contents" ' \./usr/share/doc/quorate/examples/cloud-init/member\.yaml$'
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
if ! diff -q "$WORK/root/usr/lib/systemd/system/quorate.service" "$(dirname "$0")/../../systemd/quorate.service" >/dev/null; then
    bad "deb: unit is systemd/quorate.service"
else
    ok "deb: unit is systemd/quorate.service"
fi
postinst=$(cat "$WORK/control/postinst")
prerm=$(cat "$WORK/control/prerm")
postrm=$(cat "$WORK/control/postrm")
hasnt "deb: no #DEBHELPER# token left" "$postinst$prerm$postrm" '#DEBHELPER#'
has "deb postinst: creates the user" "$postinst" 'useradd --system'
has "deb postinst: creates /var/lib/quorate 0700" "$postinst" 'install -d -o "\$QUORATE_USER" -g "\$QUORATE_USER" -m 0700 "\$STATE_DIR"'
has "deb postinst: disables Debian's etcd.service" "$postinst" 'systemctl disable etcd\.service'
has "deb postinst: only keeps an existing enablement (no enable on install)" "$postinst" 'if deb-systemd-helper debian-installed quorate\.service; then'
hasnt "deb postinst: no enable-on-install fragment" "$postinst" 'new installations run enable'
has "deb postinst: asks the agent to restart itself on upgrade" "$postinst" '/usr/bin/quorate restart --config /etc/quorate/quorate\.toml'
has "deb postinst: try-restart when the agent does not take the request" "$postinst" 'systemctl try-restart quorate\.service'
hasnt "deb postinst: no restart fragment on upgrade" "$postinst" 'deb-systemd-invoke (try-)?restart'
has "deb prerm: stops quorate on remove only (not on upgrade)" "$prerm" '"\$1" = remove'
hasnt "deb postinst: never starts quorate on install" "$postinst" 'deb-systemd-invoke (start|\$_dh_action)'
has "deb prerm: stops quorate on remove" "$prerm" 'deb-systemd-invoke stop quorate\.service'
has "deb postrm: purge deletes /var/lib/quorate" "$postrm" 'rm -rf /var/lib/quorate'
has "deb postrm: purge deletes /etc/quorate" "$postrm" 'rm -rf /etc/quorate'
has "deb postrm: purge forgets the unit state" "$postrm" 'deb-systemd-helper purge quorate\.service'

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
    has "rpm: /etc/quorate/quorate.toml is %config(noreplace)" "$files" ' cn /etc/quorate/quorate\.toml$'
    has "rpm: ships the sysusers.d entry" "$files" ' /usr/lib/sysusers\.d/quorate\.conf$'
    has "rpm: ships docs (%doc)" "$files" ' d /usr/share/doc/quorate/install\.md$'
    has "rpm: ships the Prometheus alert rules (0644)" "$files" '^-rw-r--r-- root .* /usr/share/quorate/prometheus/quorate-alerts\.yml$'
    has "rpm: Requires etcd" "$requires" '^etcd( >= 3\.4)?$'
    has "rpm %pre: creates the user" "$scripts" 'useradd --system'
    has "rpm %post: creates /var/lib/quorate 0700" "$scripts" 'install -d -o quorate -g quorate -m 0700 /var/lib/quorate'
    has "rpm %post: disables etcd.service" "$scripts" 'systemctl disable --now etcd\.service'
    has "rpm %preun: stops and disables on removal only" "$scripts" 'if \[ "\$1" -eq 0 \]; then'
    has "rpm %postun: asks the agent to restart itself on upgrade" "$scripts" '/usr/bin/quorate restart --config /etc/quorate/quorate\.toml'
    has "rpm %postun: try-restart when the agent does not take the request" "$scripts" 'systemctl try-restart quorate\.service'
    hasnt "rpm: scriptlets never delete data" "$scripts" 'rm -rf'
fi

echo "inspect-packages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
