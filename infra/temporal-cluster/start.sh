#!/usr/bin/env bash
# A real Temporal server, as an operator runs one: the server binary built from go.temporal.io/server at a
# pinned version (infra/install.sh, under .cache/temporal-server), on a PostgreSQL 15 cluster of its own with
# the schemas set up by temporal-sql-tool, mTLS on the frontend (a CA and certificates made here with openssl;
# clients must present a certificate of that CA), internode traffic on mTLS too, a namespace of its own and
# the project's search attributes registered through the operator API (the Temporal CLI), as on any cluster.
#
# Usage: infra/temporal-cluster/start.sh STATE_DIR [--namespace NAME] [--port PORT]
#   STATE_DIR  created if missing; keeps the certificates (tls/), the database (pg/), the server config and
#              logs. Starting again on the same folder reuses them.
#   --port     the frontend's gRPC port (default: a free loopback port); every other port is a free one.
# Prints the client settings and writes them to STATE_DIR/client.env (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
# TEMPORAL_TLS_CA, TEMPORAL_TLS_CERT, TEMPORAL_TLS_KEY, TEMPORAL_TLS_SERVER_NAME: the project's variables; the
# address is an IP, the certificate's name `localhost`). Stop everything with
# infra/temporal-cluster/stop.sh STATE_DIR. Secrets (keys, the database password) stay in 0600 files under
# STATE_DIR and are never printed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
TEMPORAL_SERVER_VERSION="${TEMPORAL_SERVER_VERSION:-1.32.2}"
bin="$root/.cache/temporal-server/bin"
cli="$root/.cache/temporal/bin/temporal"
pgbin="/usr/lib/postgresql/15/bin"

say() { printf '[temporal-cluster] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ $# -ge 1 ] || die "usage: $0 STATE_DIR [--namespace NAME] [--port PORT]"
state="$1"; shift
namespace=fleet
fport=""
while [ $# -gt 0 ]; do
  case "$1" in
    --namespace) namespace="$2"; shift 2 ;;
    --port) fport="$2"; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
[[ "$namespace" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$ ]] || die "invalid namespace $namespace"
[ "$namespace" != default ] || die "use a namespace of your own, not default"

for f in "$bin/temporal-server" "$bin/temporal-sql-tool" "$cli" "$pgbin/initdb" "$pgbin/pg_ctl" /usr/bin/openssl; do
  [ -x "$f" ] || die "$f not found: run infra/install.sh (npm run setup)"
done
"$bin/temporal-server" --version 2>/dev/null | grep -q "$TEMPORAL_SERVER_VERSION" ||
  die "$bin/temporal-server is not version $TEMPORAL_SERVER_VERSION: run infra/install.sh"

mkdir -p "$state"
state="$(cd "$state" && pwd)"
# PostgreSQL refuses to run as root: as root, its cluster belongs to the `postgres` user (Debian's package
# creates it), who must be able to reach its folder.
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || die "user postgres missing (apt-get install postgresql-15)"
  as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }
  chmod 0711 "$state"
  as_pg test -x "$state" || die "user postgres cannot reach $state: let it through the folders above (chmod o+x)"
else
  as_pg() { "$@"; }
  chmod 0700 "$state"
fi

# A free loopback port below the kernel's ephemeral range (32768+), where no outgoing connection takes it
# later, and which the server's membership table can hold (its ports are SQL smallint: at most 32767).
free_port() {
  python3 -c '
import random, socket
for _ in range(1000):
    p = random.randint(20000, 32767)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        s.close()
else:
    raise SystemExit("no free port")'
}

cleanup_on_error() {
  local rc=$?
  if [ $rc -ne 0 ]; then
    say "start failed (exit $rc); stopping what was started"
    for log in "$state/temporal.log" "$state/pg.log"; do
      [ -f "$log" ] && { say "tail of $log:"; tail -n 15 "$log" | cut -c1-400 >&2; }
    done
    bash "$here/stop.sh" "$state" >&2 || true
  fi
}
trap cleanup_on_error EXIT

# ---- certificates ------------------------------------------------------------------------------------
bash "$here/make-certs.sh" "$state/tls"

# ---- PostgreSQL ----------------------------------------------------------------------------------------
pg="$state/pg"
pwfile="$state/db-password"
if [ ! -f "$pg/data/PG_VERSION" ]; then
  say "initdb: a PostgreSQL 15 cluster in $pg/data"
  rm -rf "$pg"
  mkdir -p "$pg"
  (umask 077; openssl rand -hex 24 > "$pwfile")
  cp "$pwfile" "$pg/pw"
  [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$pg"
  chmod 0700 "$pg"
  # The superuser is `temporal`, with a password (scram-sha-256 for every connection, none over a socket).
  as_pg "$pgbin/initdb" -D "$pg/data" -U temporal --pwfile="$pg/pw" --auth=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 --no-sync >"$pg/initdb.log" 2>&1 || { cat "$pg/initdb.log" >&2; exit 1; }
  rm -f "$pg/pw"
fi
pgport=$(free_port)
touch "$state/pg.log"; [ "$(id -u)" = 0 ] && chown postgres:postgres "$state/pg.log"
say "postgres on 127.0.0.1:$pgport"
as_pg "$pgbin/pg_ctl" -D "$pg/data" -l "$state/pg.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -c port=$pgport -c unix_socket_directories='' -c max_connections=200 -c synchronous_commit=off" \
  start >/dev/null
echo "$pgport" > "$state/pg.port"

# ---- schemas (temporal-sql-tool, the schemas embedded in the server module) ---------------------------
export SQL_PASSWORD; SQL_PASSWORD="$(cat "$pwfile")"
sqltool() { "$bin/temporal-sql-tool" --plugin postgres12 --ep 127.0.0.1 -p "$pgport" -u temporal "$@"; }
for db in temporal temporal_visibility; do
  schema=temporal; [ "$db" = temporal_visibility ] && schema=visibility
  sqltool --db "$db" create-database >/dev/null 2>&1 || true # exists already on a restart
  if ! sqltool --db "$db" update-schema --schema-name "postgresql/v12/$schema" >"$state/schema-$db.log" 2>&1; then
    # A fresh database: the versioning tables first, then every versioned step.
    sqltool --db "$db" setup-schema -v 0.0 >>"$state/schema-$db.log" 2>&1 || { cat "$state/schema-$db.log" >&2; exit 1; }
    sqltool --db "$db" update-schema --schema-name "postgresql/v12/$schema" >>"$state/schema-$db.log" 2>&1 ||
      { cat "$state/schema-$db.log" >&2; exit 1; }
  fi
done
unset SQL_PASSWORD
say "schemas up to date (temporal, temporal_visibility)"

# ---- server config -------------------------------------------------------------------------------------
[ -n "$fport" ] || fport=$(free_port)
declare -A p
for k in fm hg hm mg mm wg wm; do p[$k]=$(free_port); done
tls="$state/tls"
(umask 077; cat > "$state/config.yaml" <<EOF
# Written by infra/temporal-cluster/start.sh (Temporal server $TEMPORAL_SERVER_VERSION), after the server's
# config/development-postgres12.yaml, with TLS as Temporal's deployment guides set it up.
log:
  stdout: true
  level: warn
persistence:
  defaultStore: default
  visibilityStore: visibility
  numHistoryShards: 4 # fixed for the life of a cluster: production clusters use 512 or more
  datastores:
    default:
      sql:
        pluginName: postgres12
        databaseName: temporal
        connectAddr: "127.0.0.1:$pgport"
        connectProtocol: tcp
        user: temporal
        password: "$(cat "$pwfile")"
        maxConns: 10
        maxIdleConns: 10
        maxConnLifetime: 1h
    visibility:
      sql:
        pluginName: postgres12
        databaseName: temporal_visibility
        connectAddr: "127.0.0.1:$pgport"
        connectProtocol: tcp
        user: temporal
        password: "$(cat "$pwfile")"
        maxConns: 4
        maxIdleConns: 4
        maxConnLifetime: 1h
global:
  membership:
    maxJoinDuration: 30s
    broadcastAddress: 127.0.0.1
  pprof:
    port: 0
  tls:
    internode:
      server:
        certFile: $tls/internode.pem
        keyFile: $tls/internode.key
        requireClientAuth: true
        clientCaFiles: [$tls/ca.pem]
      client:
        serverName: localhost
        rootCaFiles: [$tls/ca.pem]
    frontend:
      server:
        certFile: $tls/frontend.pem
        keyFile: $tls/frontend.key
        requireClientAuth: true
        clientCaFiles: [$tls/ca.pem]
      client:
        serverName: localhost
        rootCaFiles: [$tls/ca.pem]
    systemWorker:
      certFile: $tls/system-worker.pem
      keyFile: $tls/system-worker.key
      client:
        serverName: localhost
        rootCaFiles: [$tls/ca.pem]
services:
  frontend:
    rpc: { grpcPort: $fport, membershipPort: ${p[fm]}, bindOnLocalHost: true, httpPort: 0 }
  history:
    rpc: { grpcPort: ${p[hg]}, membershipPort: ${p[hm]}, bindOnLocalHost: true }
  matching:
    rpc: { grpcPort: ${p[mg]}, membershipPort: ${p[mm]}, bindOnLocalHost: true }
  worker:
    rpc: { grpcPort: ${p[wg]}, membershipPort: ${p[wm]}, bindOnLocalHost: true }
clusterMetadata:
  enableGlobalNamespace: false
  failoverVersionIncrement: 10
  masterClusterName: active
  currentClusterName: active
  clusterInformation:
    active:
      enabled: true
      initialFailoverVersion: 1
      rpcName: frontend
      rpcAddress: "localhost:$fport"
dcRedirectionPolicy:
  policy: noop
publicClient:
  hostPort: "localhost:$fport"
dynamicConfigClient:
  filepath: "$state/dynamicconfig.yaml"
  pollInterval: 10s
EOF
)
[ -f "$state/dynamicconfig.yaml" ] || cat > "$state/dynamicconfig.yaml" <<'EOF'
# Dynamic config of the server (polled every 10 s); every other value is the release's default.
# Each history shard's queue readers poll for new tasks at most 20 times a second by default, so a task
# waits up to 50 ms before it reaches a worker; with 4 shards (512+ in production) that is most of a short
# upgrade step. 200 per shard keeps it at a few ms (the same as the dev server, infra/devserver.ts).
history.transferProcessorMaxPollRPS:
  - value: 200
history.timerProcessorMaxPollRPS:
  - value: 200
history.visibilityProcessorMaxPollRPS:
  - value: 200
EOF

# ---- server --------------------------------------------------------------------------------------------
say "temporal-server $TEMPORAL_SERVER_VERSION: frontend on 127.0.0.1:$fport (mTLS)"
started=$(date +%s%N)
setsid "$bin/temporal-server" --config-file "$state/config.yaml" --allow-no-auth start \
  >>"$state/temporal.log" 2>&1 </dev/null &
echo $! > "$state/temporal.pid"

# Every call below is a client of the frontend with the operator's certificate.
tctl() {
  "$cli" --address "127.0.0.1:$fport" --tls-ca-path "$tls/ca.pem" --tls-cert-path "$tls/client.pem" \
    --tls-key-path "$tls/client.key" --tls-server-name localhost --command-timeout 10s "$@"
}
deadline=$(( $(date +%s) + 120 ))
until tctl operator cluster health >/dev/null 2>&1; do
  kill -0 "$(cat "$state/temporal.pid")" 2>/dev/null || die "temporal-server exited during start"
  [ "$(date +%s)" -lt "$deadline" ] || die "temporal-server not serving after 120 s"
  sleep 0.5
done
say "serving after $(( ($(date +%s%N) - started) / 1000000 )) ms"

# ---- namespace and search attributes, as an operator registers them ------------------------------------
if ! tctl operator namespace describe --namespace "$namespace" >/dev/null 2>&1; then
  tctl operator namespace create --namespace "$namespace" --retention 72h >/dev/null
fi
attrs=(FleetHost FleetVm FleetPhase FleetTarget FleetRollout)
missing=()
for a in "${attrs[@]}"; do
  tctl operator search-attribute list --namespace "$namespace" -o json 2>/dev/null | grep -q "\"$a\"" || missing+=("$a")
done
deadline=$(( $(date +%s) + 60 ))
for a in "${missing[@]}"; do
  # One per call (the CLI pairs each --name with a --type). The namespace reaches every service's cache
  # within seconds of its creation: retry until then.
  until tctl operator search-attribute create --namespace "$namespace" --name "$a" --type Keyword >/dev/null 2>"$state/sa.err"; do
    [ "$(date +%s)" -lt "$deadline" ] || die "registering search attribute $a: $(head -1 "$state/sa.err")"
    sleep 1
  done
done
rm -f "$state/sa.err"
say "namespace $namespace with search attributes ${attrs[*]} (Keyword)"

(umask 077; cat > "$state/client.env" <<EOF
TEMPORAL_ADDRESS=127.0.0.1:$fport
TEMPORAL_NAMESPACE=$namespace
TEMPORAL_TLS_CA=$tls/ca.pem
TEMPORAL_TLS_CERT=$tls/client.pem
TEMPORAL_TLS_KEY=$tls/client.key
TEMPORAL_TLS_SERVER_NAME=localhost
EOF
)
cat "$state/client.env"
trap - EXIT
