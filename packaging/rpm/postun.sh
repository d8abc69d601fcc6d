# %postun of the quorate .rpm ($1: 0 = removal, 1 = upgrade).
# Upgrade: the running agent is asked to restart itself on the new binary once
# it holds the cluster's member-down lock (`quorate restart`, returns at once),
# so that upgrading every host at the same moment takes one etcd member down at
# a time; an agent too old to know the request is restarted at once. Removal: configuration
# (/etc/quorate, %config(noreplace) files are kept as .rpmsave if changed)
# and data (/var/lib/quorate) are left in place; RPM has no purge, delete
# them by hand if you really mean it (see /usr/share/doc/quorate/install.md).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ] && systemctl --quiet is-active quorate.service; then
        /usr/bin/quorate restart --config /etc/quorate/quorate.toml ||
            systemctl try-restart quorate.service >/dev/null 2>&1 || :
    fi
    # A running client-mode agent (consumer hosts) is restarted on the new
    # binary without waiting for it; it keeps its key and files.
    if [ "$1" -ge 1 ]; then
        systemctl try-restart --no-block quorate-client.service >/dev/null 2>&1 || :
    fi
fi
exit 0
