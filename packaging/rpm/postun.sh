# %postun of the quorate .rpm ($1: 0 = removal, 1 = upgrade).
# Upgrade: restart the agent if it is running. Removal: configuration
# (/etc/quorate, %config(noreplace) files are kept as .rpmsave if changed)
# and data (/var/lib/quorate) are left in place; RPM has no purge, delete
# them by hand if you really mean it (see /usr/share/doc/quorate/install.md).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart quorate.service >/dev/null 2>&1 || :
    fi
fi
exit 0
