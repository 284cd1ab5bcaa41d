#!/usr/bin/env bash
# Builds the small Linux guest used by the real-QEMU tests and the demo, into the git-ignored cache:
#   .cache/guest/vmlinuz     Debian bookworm's current linux-image-6.1.0-*-amd64 kernel
#   .cache/guest/initrd.img  a gzip'd newc initramfs: static busybox, the virtio/SCSI modules, and /init
# /init (below) reads fu.ip= and fu.disk= from the kernel command line and reports on the first serial port
# (fu-ready, fu-wrote <n>, fu-tick <n>); infra/guest/linux-guest.ts holds the matching TypeScript helpers.
#
# The packages are fetched with `apt-get download` and unpacked with `dpkg -x` into a scratch folder: nothing
# is installed on this machine except the host tools the build and the tests need (cpio, qemu-img, ping).
# Idempotent: skipped when both outputs exist and the stamp names the same package versions and the same
# version of this script (which carries /init, so editing it rebuilds the image).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$root/.cache/guest"
work="$root/.cache/guest-build"

# The modules /init loads. Their dependencies are added from each module's own `depends=` field: the kernel
# package ships no modules.dep (depmod writes it at install time), and this machine may have no kmod.
WANT_MODULES=(virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
  failover net_failover virtio_net virtio_blk virtio_scsi scsi_mod sd_mod)

log() { printf '[build-guest] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
apt_update_once() {
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
}
apt_install() {
  apt_update_once
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ---- host tools: cpio packs the image; the tests use qemu-img (disk images) and ping (guest network) ------
command -v cpio >/dev/null || { log "installing cpio"; apt_install cpio; }
command -v qemu-img >/dev/null || { log "installing qemu-utils"; apt_install qemu-utils; }
command -v ping >/dev/null || { log "installing iputils-ping"; apt_install iputils-ping; }

# Two setups at once (parallel test runs call install.sh) would share the scratch folder: one at a time.
mkdir -p "$out"
exec 9>"$out.lock"
flock 9

# ---- which packages: the kernel ABI package that linux-image-amd64 currently points at ------------------
resolve_versions() {
  kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-6\.1\.0-[0-9]+-amd64$/ { print $2; exit }')
  kver=""
  bver=""
  if [ -n "$kpkg" ]; then
    # One apt-cache call for both (each takes about a second): "<package> <version>" lines.
    versions=$(apt-cache show --no-all-versions "$kpkg" busybox-static 2>/dev/null |
      awk '$1 == "Package:" { p = $2 } $1 == "Version:" { print p, $2 }')
    kver=$(awk -v p="$kpkg" '$1 == p { print $2; exit }' <<<"$versions")
    bver=$(awk '$1 == "busybox-static" { print $2; exit }' <<<"$versions")
  fi
}
stamp_text() {
  printf '%s=%s busybox-static=%s script=%s\n' "$kpkg" "$kver" "$bver" \
    "$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"
}

# First from the package lists already on the machine, so an up-to-date image needs no network at all.
resolve_versions
if [ -n "$kver" ] && [ -n "$bver" ] && [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ] &&
  [ "$(cat "$out/stamp" 2>/dev/null)" = "$(stamp_text)" ]; then
  log "guest up to date ($kpkg $kver, busybox-static $bver)"
  exit 0
fi
# Building downloads, so refresh the lists first: stale lists name versions the mirror no longer has.
apt_update_once
resolve_versions
[ -n "$kpkg" ] || die "no linux-image-6.1.0-*-amd64 behind linux-image-amd64 (bookworm apt sources?)"
if [ -z "$kver" ] || [ -z "$bver" ]; then die "no candidate version for $kpkg or busybox-static"; fi
log "building the guest from $kpkg $kver and busybox-static $bver"

rm -rf "$work"
trap 'rm -rf "$work"' EXIT # the unpacked kernel package is some 400 MB
mkdir -p "$work/debs" "$work/pkg" "$work/initramfs"
# APT::Sandbox::User=root: the _apt user may not be able to write into the cache folder.
(cd "$work/debs" && apt-get -o APT::Sandbox::User=root download -qq "$kpkg=$kver" "busybox-static=$bver")
for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$work/pkg"; done

kernels=("$work"/pkg/boot/vmlinuz-*)
kernel=${kernels[0]}
[ -f "$kernel" ] || die "$kpkg holds no /boot/vmlinuz-*"
moddirs=("$work"/pkg/lib/modules/*/)
moddir=${moddirs[0]}
[ -d "$moddir" ] || die "$kpkg holds no /lib/modules/<version>"
[ -x "$work/pkg/bin/busybox" ] || die "busybox-static holds no /bin/busybox"

# ---- initramfs tree ---------------------------------------------------------------------------------
ird="$work/initramfs"
mkdir -p "$ird"/{bin,dev,proc,sys,tmp,lib/modules}
cp "$work/pkg/bin/busybox" "$ird/bin/busybox"
# /init needs a shell before it can run `busybox --install`; every other applet link is made at boot.
ln -s busybox "$ird/bin/sh"
# The kernel opens /dev/console for PID 1 before /init can mount devtmpfs. Making the node needs root;
# without it /init still works because it reopens the console itself after mounting devtmpfs.
mknod -m 600 "$ird/dev/console" c 5 1 2>/dev/null || log "no /dev/console node (not root): /init reopens it"

# Index every module file by module name. Names are compared with '-' as '_', as the kernel does
# (depends= says crc-t10dif, the file may be crc-t10dif.ko or crc_t10dif.ko).
declare -A modfile=()
while IFS= read -r -d '' f; do
  name=${f##*/}
  name=${name%%.ko*}
  modfile[${name//-/_}]=$f
done < <(find "$moddir" \( -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz' \) -print0)

# Copies one module into the image uncompressed (busybox insmod reads plain ELF only).
stage_module() {
  local src=$1 dst=$2
  case "$src" in
    *.ko.xz) xz -dc "$src" >"$dst" ;;
    *.ko.zst) zstd -qdc "$src" >"$dst" ;;
    *.ko.gz) gzip -dc "$src" >"$dst" ;;
    *) cp "$src" "$dst" ;;
  esac
}
# The module's hard dependencies, from the NUL-separated key=value strings of its .modinfo section.
module_depends() {
  tr '\0' '\n' <"$1" | sed -n 's/^depends=//p' | head -1 | tr ',' ' '
}

# Depth-first: a module is appended to the load order after everything it depends on.
declare -A visited=()
load_order=()
add_module() {
  local name=${1//-/_} dep
  case "${visited[$name]:-}" in
    done) return 0 ;;
    active) die "module dependency cycle at $name" ;;
  esac
  [ -n "${modfile[$name]:-}" ] || die "module $name not found under $moddir"
  visited[$name]=active
  stage_module "${modfile[$name]}" "$ird/lib/modules/$name.ko"
  for dep in $(module_depends "$ird/lib/modules/$name.ko"); do add_module "$dep"; done
  visited[$name]="done"
  load_order+=("$name")
}
for m in "${WANT_MODULES[@]}"; do add_module "$m"; done
printf '%s\n' "${load_order[@]}" >"$ird/lib/modules/load-order"
log "modules: ${load_order[*]}"

# ---- /init ------------------------------------------------------------------------------------------
cat >"$ird/init" <<'INIT'
#!/bin/sh
# PID 1 of the fleet-upgrade test guest. Console protocol (first serial port):
#   fu-ready        modules loaded, eth0 configured (fu.ip=) and the disk writer started (fu.disk=)
#   fu-wrote <n>    sequence write n is on the virtual disk (O_DIRECT + fsync returned)
#   fu-tick <n>     once a second, forever
#   fu-error <why>  something failed; when it happens before fu-ready, fu-ready is never printed
# PID 1 must never exit (the kernel panics), so nothing here uses `set -e` and it ends in an endless loop.
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
# No /sbin/modprobe: the kernel's on-demand module requests (crypto helpers) fail fast instead of
# running a modprobe that has no modules.dep.
echo >/proc/sys/kernel/modprobe

ok=1
fail() {
  echo "fu-error $*"
  ok=0
}

# wait_for <tenths of a second> <command...>: runs the command until it succeeds or the time is up.
wait_for() {
  tenths=$1
  shift
  i=0
  until "$@"; do
    [ "$i" -ge "$tenths" ] && return 1
    usleep 100000
    i=$((i + 1))
  done
}

# Modules in dependency order; a failure is retried in later rounds in case the order was not enough.
pending=$(cat /lib/modules/load-order)
round=0
while [ -n "$pending" ] && [ "$round" -lt 5 ]; do
  round=$((round + 1))
  left=""
  for m in $pending; do
    insmod "/lib/modules/$m.ko" 2>/dev/null || [ -d "/sys/module/$m" ] || left="$left $m"
  done
  pending=$left
done
[ -z "$pending" ] || fail "modules not loaded:$pending"

ip_cidr=""
disk=""
read -r cmdline </proc/cmdline
for arg in $cmdline; do
  case "$arg" in
    fu.ip=*) ip_cidr=${arg#fu.ip=} ;;
    fu.disk=*) disk=${arg#fu.disk=} ;;
  esac
done

ip link set lo up
if [ -n "$ip_cidr" ]; then
  if wait_for 100 test -e /sys/class/net/eth0; then
    if ! { ip addr add "$ip_cidr" dev eth0 && ip link set eth0 up; }; then
      fail "cannot configure eth0 with $ip_cidr"
    fi
  else
    fail "no eth0 after 10 s"
  fi
fi

# Writes sequence number n into sector (n mod 2048)+1 (sector 0 is left alone), and reports it only once
# the write is on the virtual disk: oflag=direct bypasses the page cache, conv=fsync then flushes the
# device's write cache. A failed write is retried with the same n, so "fu-wrote n" always means 1..n are
# durable (each in its sector until n+2048 overwrites it).
writer() {
  n=1
  while :; do
    if printf 'fu-seq %d\n' "$n" |
      dd of="$1" bs=512 seek=$((n % 2048 + 1)) count=1 conv=notrunc,sync,fsync oflag=direct 2>/dev/null; then
      echo "fu-wrote $n"
      n=$((n + 1))
      usleep 50000
    else
      echo "fu-error write $n to $1 failed"
      sleep 1
    fi
  done
}
if [ -n "$disk" ]; then
  # SCSI disks are scanned asynchronously, and TCG is slow: give the block device time to appear.
  if wait_for 300 test -b "$disk"; then
    writer "$disk" &
  else
    fail "no block device $disk after 30 s"
  fi
fi

[ "$ok" = 1 ] && echo fu-ready
t=0
while :; do
  sleep 1
  t=$((t + 1))
  echo "fu-tick $t"
done
INIT
chmod 755 "$ird/init"

# ---- pack and install atomically --------------------------------------------------------------------
(cd "$ird" && find . -print0 | LC_ALL=C sort -z |
  cpio --null -H newc -o --quiet --owner=0:0 --reproducible) | gzip -9n >"$out/initrd.img.tmp"
cp "$kernel" "$out/vmlinuz.tmp"
rm -f "$out/stamp"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
mv "$out/initrd.img.tmp" "$out/initrd.img"
stamp_text >"$out/stamp"
log "guest ready in $out: vmlinuz $(du -h "$out/vmlinuz" | cut -f1), initrd.img $(du -h "$out/initrd.img" | cut -f1)"
