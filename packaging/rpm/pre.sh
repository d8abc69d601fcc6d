# %pre of the quorate .rpm ($1: 1 = install, 2 = upgrade).
# Create the service user before the files are unpacked.
getent group quorate >/dev/null || groupadd --system quorate
getent passwd quorate >/dev/null || \
    useradd --system --gid quorate --home-dir /var/lib/quorate --no-create-home \
        --shell /sbin/nologin --comment "quorate etcd agent" quorate
exit 0
