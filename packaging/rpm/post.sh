# %post of the quorate .rpm ($1: 1 = install, 2 = upgrade).
# No unit is enabled or started here: run `systemctl enable --now quorate` (a
# member) or `systemctl enable --now quorate-client` (a consumer host, client
# mode) once /etc/quorate/quorate.toml and the token are in place.
install -d -o quorate -g quorate -m 0700 /var/lib/quorate
install -d -o root -g quorate -m 0750 /etc/quorate
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
# quorate runs its own etcd on ports 2379/2380; a stand-alone etcd.service
# (from the etcd package) must not run next to it.
if systemctl --quiet is-enabled etcd.service 2>/dev/null || \
   { [ -d /run/systemd/system ] && systemctl --quiet is-active etcd.service; }; then
    systemctl disable --now etcd.service >/dev/null 2>&1 || :
    echo "quorate: stopped and disabled etcd.service: quorate runs its own etcd (see /usr/share/doc/quorate/install.md)." >&2
fi
exit 0
