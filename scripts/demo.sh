#!/usr/bin/env bash
# A local three-node quorate cluster on 127.0.0.1, 127.0.0.2 and 127.0.0.3: three agents with
# empty state and one join token, exactly as on three hosts. Prints what happens, gets a client
# certificate, shows the etcdctl command to try, and stops everything on Ctrl-C.
#
#   bash scripts/demo.sh            (state under a new /tmp/quorate-demo.XXXX)
#   QUORATE_DEMO_DIR=/path bash scripts/demo.sh    (reuse a directory: restarts that cluster)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

ensure_build_deps
ensure_runtime_deps
log "building quorate"
cargo build -q -p quorate --bins
BIN=$PWD/target/debug/quorate

for port in 2379 2380 2381 7946 7947; do
    if ss -Hltn "sport = :$port" 2>/dev/null | grep -q '127\.0\.0\.[123]:'; then
        die "port $port on 127.0.0.1-3 is in use (Debian's etcd.service? stop it: systemctl disable --now etcd)"
    fi
done

DIR=${QUORATE_DEMO_DIR:-$(mktemp -d /tmp/quorate-demo.XXXX)}
mkdir -p "$DIR"
if [ ! -f "$DIR/token" ]; then
    "$BIN" token generate > "$DIR/token"
    chmod 600 "$DIR/token"
fi
for i in 1 2 3; do
    mkdir -p "$DIR/n$i"
    if [ "$i" = 1 ]; then seed=true; join='[]'; else seed=false; join='["127.0.0.1"]'; fi
    cat > "$DIR/n$i/quorate.toml" <<TOML
# Demo node $i (see docs/configuration.md)
node_name = "demo-$i"
advertise_addr = "127.0.0.$i"
seed = $seed
bootstrap_expect = 3
join = $join
token_file = "$DIR/token"
state_dir = "$DIR/n$i/state"

[etcd]
# The three members share one loopback interface, so none listens on 127.0.0.1 for all.
listen_localhost = false
metrics_listen = "127.0.0.$i:2381"

[health]
listen = "127.0.0.$i:7947"
TOML
done

PIDS=()
cleanup() {
    trap - INT TERM EXIT
    echo
    log "stopping the agents (each stops its etcd)"
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    log "stopped; state and logs kept in $DIR (QUORATE_DEMO_DIR=$DIR bash scripts/demo.sh restarts this cluster)"
}
trap cleanup INT TERM EXIT

for i in 1 2 3; do
    "$BIN" --config "$DIR/n$i/quorate.toml" run > "$DIR/n$i/agent.log" 2>&1 &
    PIDS+=($!)
    log "started agent demo-$i on 127.0.0.$i (log: $DIR/n$i/agent.log)"
done

# Follow each agent's status line until all three are ready.
declare -A last
start=$(date +%s%N)
deadline=$(( $(date +%s) + 120 ))
while :; do
    ready=0
    for i in 1 2 3; do
        line=$(curl -s "http://127.0.0.$i:7947/readyz" || true)
        [ -n "$line" ] || line="starting"
        if [ "${last[$i]:-}" != "$line" ]; then
            printf '  demo-%s: %s\n' "$i" "$line"
            last[$i]=$line
        fi
        case $line in ready:*) ready=$((ready + 1));; esac
    done
    [ "$ready" = 3 ] && break
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || die "an agent exited; see $DIR/n*/agent.log"
    done
    [ "$(date +%s)" -lt "$deadline" ] || die "the cluster did not become ready in 120 s; see $DIR/n*/agent.log"
    sleep 0.1
done
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
log "cluster ready in $((elapsed_ms / 1000)).$(printf '%03d' $((elapsed_ms % 1000))) s"

"$BIN" --config "$DIR/n2/quorate.toml" cert client demo-user --out "$DIR/client" --force >/dev/null
"$BIN" --config "$DIR/n1/quorate.toml" status
cat <<TRY

The cluster is up: three etcd members with mutual TLS, formed by the agents on their own.
Try, in another terminal:

  export ETCDCTL_API=3 ETCDCTL_ENDPOINTS=https://127.0.0.1:2379,https://127.0.0.2:2379,https://127.0.0.3:2379
  export ETCDCTL_CACERT=$DIR/client/ca.pem ETCDCTL_CERT=$DIR/client/demo-user.pem ETCDCTL_KEY=$DIR/client/demo-user-key.pem
  etcdctl member list -w table
  etcdctl put hello world && etcdctl get hello
  curl -s http://127.0.0.1:2381/metrics | grep ^etcd_mvcc_db_total_size
  $BIN --config $DIR/n3/quorate.toml status

Ctrl-C stops the cluster.
TRY
wait
