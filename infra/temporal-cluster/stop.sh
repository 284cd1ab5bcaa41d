#!/usr/bin/env bash
# Stops what infra/temporal-cluster/start.sh STATE_DIR started: the Temporal server (SIGTERM, SIGKILL after
# 20 s) and its PostgreSQL cluster (fast shutdown). The state (database, certificates) stays; remove STATE_DIR
# to drop it. Safe to run when nothing runs.
set -uo pipefail
state="${1:?usage: stop.sh STATE_DIR}"
pgbin="/usr/lib/postgresql/15/bin"
if [ -f "$state/temporal.pid" ]; then
  pid=$(cat "$state/temporal.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$state/temporal.pid"
fi
if [ -f "$state/pg/data/postmaster.pid" ]; then
  if [ "$(id -u)" = 0 ]; then
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$pgbin/pg_ctl" -D "$state/pg/data" -m fast -w -t 30 stop >/dev/null 2>&1
  else
    "$pgbin/pg_ctl" -D "$state/pg/data" -m fast -w -t 30 stop >/dev/null 2>&1
  fi
  # Last resort: the postmaster by its pid file.
  if [ -f "$state/pg/data/postmaster.pid" ]; then
    ppid=$(head -1 "$state/pg/data/postmaster.pid")
    [ -n "$ppid" ] && kill -KILL "$ppid" 2>/dev/null
  fi
fi
exit 0
