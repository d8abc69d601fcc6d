# %preun of the quorate .rpm ($1: 0 = removal, 1 = upgrade).
# On removal: stop the agent (it stops its etcd) and disable the units, the
# member's (quorate.service) and the client's (quorate-client.service).
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl --no-reload disable --now quorate.service quorate-client.service >/dev/null 2>&1 || :
    else
        systemctl --no-reload disable quorate.service quorate-client.service >/dev/null 2>&1 || :
    fi
fi
exit 0
