#!/bin/bash
# build-guest-image.sh [OUTDIR] — build the tiny peerstack test guest.
#
# Produces, in OUTDIR (default: <repo>/build):
#   guest.qcow2  the bootable image (a BIOS hybrid ISO made by grub-mkrescue,
#                converted with qemu-img convert -O qcow2); use it as the
#                backing file of per-VM overlays on a virtio-blk disk
#   vmlinuz      the Debian kernel it boots
#   initrd.gz    the busybox-static initramfs with /init
#   cache/       the extracted Debian kernel (.deb + vmlinuz + the modules used)
#
# Nothing is mounted and nothing is installed: the kernel comes from
# `apt-get download` + `dpkg -x`.
# The build is idempotent and cached: when the inputs (this script, busybox,
# the kernel package, scripts/guestio) are unchanged and the outputs exist,
# it does nothing.
# Concurrent runs on the same OUTDIR serialise on OUTDIR/.lock.
#
# The guest's /init:
#   - loads virtio (pci, blk, net), button (ACPI power button), cdrom + isofs;
#   - finds the config drive (the block device labelled config-2; peerstack
#     attaches it as a read-only virtio-blk disk), mounts it read-only on
#     /mnt/config, reads openstack/latest/meta_data.json with sed, sets the
#     hostname and prints   PEERSTACK-BOOT hostname=<h> uuid=<uuid>
#     (without a config drive: PEERSTACK-BOOT hostname=guest uuid=none);
#   - brings up eth0 (if present) with udhcpc in the background and prints
#     PEERSTACK-IP <ip> once bound;
#   - runs openstack/latest/user_data with sh if it starts with #! and prints
#     PEERSTACK-USERDATA-DONE rc=<rc>;
#   - reports every virtio disk, at boot and hot-plugged:
#     PEERSTACK-DISK <name> sectors=<n>, and PEERSTACK-DISK-GONE <name>; with
#     "disktest": "write" in the metadata's meta it writes a marker at sector
#     2048 of every hot-plugged disk and prints PEERSTACK-DISK-READBACK;
#   - powers off when the ACPI power button is pressed (QMP system_powerdown);
#   - prints PEERSTACK-READY, then runs a shell on the console.
# It also carries /bin/guestio (scripts/guestio, built here with go), the
# O_DIRECT disk benchmark the volume throughput benchmark runs as user data.
#
# Needs: apt-get dpkg busybox-static cpio gzip grub-pc-bin grub-common xorriso
# mtools qemu-utils (and apt lists: apt-get update) on the first run.
set -euo pipefail

die() { echo "build-guest-image: $*" >&2; exit 1; }

ROOT=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
OUT=${1:-$ROOT/build}
mkdir -p "$OUT/cache" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)
CACHE=$OUT/cache

for t in apt-get apt-cache dpkg cpio gzip grub-mkrescue xorriso mformat qemu-img sha256sum flock go; do
  command -v "$t" >/dev/null 2>&1 || die "missing tool '$t' (apt-get install -y busybox-static cpio grub-pc-bin grub-common xorriso mtools qemu-utils)"
done
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "missing $BUSYBOX (apt-get install -y busybox-static)"
if ldd "$BUSYBOX" >/dev/null 2>&1; then die "$BUSYBOX is dynamically linked (apt-get install -y busybox-static)"; fi

exec 9>"$OUT/.lock"
flock 9

# Modules, in load order (the .deb has no modules.dep). Paths relative to
# lib/modules/<kver>/kernel.
MODS="drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev
drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci net/core/failover
drivers/net/net_failover drivers/net/virtio_net drivers/block/virtio_blk
drivers/firmware/qemu_fw_cfg drivers/acpi/button drivers/cdrom/cdrom fs/isofs/isofs"

# 1. Kernel: the package linux-image-amd64 currently depends on; cached.
KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}' || true)
if [ -z "$KPKG" ]; then
  KPKG=$(cd "$CACHE" && ls -1d linux-image-*/ 2>/dev/null | tr -d / | sort -V | tail -1 || true)
  [ -n "$KPKG" ] && [ -f "$CACHE/$KPKG/vmlinuz" ] || \
    die "cannot resolve the Debian kernel package (run: apt-get update) and no cached kernel in $CACHE"
  echo "build-guest-image: apt has no linux-image-amd64; using cached $KPKG" >&2
fi
KDIR=$CACHE/$KPKG
kernel_complete() {
  [ -f "$KDIR/vmlinuz" ] || return 1
  for m in $MODS; do [ -f "$KDIR/modules/${m##*/}.ko" ] || return 1; done
}
if ! kernel_complete; then
  DEB=$(ls "$CACHE/${KPKG}"_*.deb 2>/dev/null | head -1 || true)
  if [ -z "$DEB" ]; then
    echo "build-guest-image: downloading $KPKG" >&2
    (cd "$CACHE" && apt-get download "$KPKG" 2>&1 | grep -v 'unsandboxed' >&2) || true
    DEB=$(ls "$CACHE/${KPKG}"_*.deb 2>/dev/null | head -1 || true)
    [ -n "$DEB" ] || die "apt-get download $KPKG failed (network? apt-get update?)"
  fi
  X=$(mktemp -d "$CACHE/extract.XXXXXX")
  trap 'rm -rf "$X"' EXIT
  dpkg -x "$DEB" "$X"
  KVER=$(ls "$X/lib/modules" | head -1)
  rm -rf "$KDIR.new" && mkdir -p "$KDIR.new/modules"
  cp "$X/boot/vmlinuz-$KVER" "$KDIR.new/vmlinuz"
  cp "$X/boot/config-$KVER" "$KDIR.new/config"
  echo "$KVER" > "$KDIR.new/version"
  for m in $MODS; do
    cp "$X/lib/modules/$KVER/kernel/$m.ko" "$KDIR.new/modules/" || die "module $m.ko not in $KPKG"
  done
  rm -rf "$KDIR" && mv "$KDIR.new" "$KDIR"
  rm -rf "$X"; trap - EXIT
fi

# 2. Up to date?
INPUTS=$( { sha256sum "$0" "$BUSYBOX" "$KDIR/vmlinuz" "$KDIR"/modules/*.ko "$ROOT"/scripts/guestio/*.go | awk '{print $1}'; echo "$KPKG $MODS $(go env GOVERSION)"; } | sha256sum | awk '{print $1}')
if [ -f "$OUT/guest.qcow2" ] && [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initrd.gz" ] && \
   [ "$(cat "$OUT/.inputs" 2>/dev/null)" = "$INPUTS" ]; then
  echo "build-guest-image: $OUT/guest.qcow2 is up to date ($KPKG)"
  exit 0
fi

W=$(mktemp -d "$OUT/.work.XXXXXX")
trap 'rm -rf "$W"' EXIT

# 3. initramfs
I=$W/initrd
mkdir -p "$I"/{bin,sbin,etc/udhcpc,proc,sys,dev,tmp,run,mnt/config,lib/modules}
cp "$BUSYBOX" "$I/bin/busybox"
# guestio: the disk benchmark of the volume tests (scripts/guestio), static.
(cd "$ROOT" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags='-s -w' -o "$I/bin/guestio" ./scripts/guestio) ||
  die "cannot build scripts/guestio"
LOADORDER=""
for m in $MODS; do cp "$KDIR/modules/${m##*/}.ko" "$I/lib/modules/"; LOADORDER="$LOADORDER ${m##*/}"; done
echo "$LOADORDER" > "$I/lib/modules/order"

cat > "$I/etc/udhcpc/default.script" <<'EOF'
#!/bin/busybox sh
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    echo "PEERSTACK-IP $ip" > /dev/console ;;
esac
EOF
chmod +x "$I/etc/udhcpc/default.script"

cat > "$I/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko 2>/dev/null; done
say() { echo "$*" > /dev/console; }

# Config drive: the block device whose ISO9660 label is config-2. First let
# every virtio-blk device (virtio id 0x0002) show up as a disk (5 s at most).
i=0
while [ $i -lt 50 ]; do
  want=$(grep -l '^0x0002$' /sys/bus/virtio/devices/*/device 2>/dev/null | wc -l)
  have=$(ls -d /sys/block/vd* 2>/dev/null | wc -l)
  [ "$have" -ge "$want" ] && break
  i=$((i+1)); usleep 100000
done
CD=""; i=0
while [ $i -lt 10 ]; do
  CD=$(findfs LABEL=config-2 2>/dev/null) && [ -n "$CD" ] && break
  CD=""; i=$((i+1)); usleep 100000
done
HOST=guest; UUID=none; MD=""; DISKTEST=""
if [ -n "$CD" ] && mount -t iso9660 -o ro "$CD" /mnt/config 2>/dev/null; then
  MD=/mnt/config/openstack/latest/meta_data.json
  # meta_data.json is written with one top-level key per line ("  \"key\": ...").
  get() { sed -n "s/^  \"$1\": *\"\([^\"]*\)\",\{0,1\}\$/\1/p" "$MD" 2>/dev/null | head -1; }
  if [ -r "$MD" ]; then
    U=$(get uuid); [ -n "$U" ] && UUID=$U
    H=$(get hostname); [ -z "$H" ] && H=$(get name); [ -n "$H" ] && HOST=$H
    grep -q '"disktest": *"write"' "$MD" && DISKTEST=1
  fi
else
  say "PEERSTACK-NO-CONFIG-DRIVE"
fi
hostname "$HOST"
say "PEERSTACK-BOOT hostname=$HOST uuid=$UUID"

ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up
  udhcpc -i eth0 -f -S -t 1000000 -T 3 -s /etc/udhcpc/default.script >/dev/null 2>&1 &
fi

# Disk watcher: report every virtio disk (boot-time and hot-plugged).
( seen=""; first=1
  while true; do
    now=""
    for d in /sys/block/vd*; do [ -e "$d" ] || continue; n=${d##*/}; now="$now $n"
      case " $seen " in *" $n "*) continue;; esac
      say "PEERSTACK-DISK $n sectors=$(cat $d/size)"
      if [ -z "$first" ] && [ -n "$DISKTEST" ]; then
        echo "PEERSTACK-WROTE-BY-$HOST-ON-$n" | dd of=/dev/$n bs=512 seek=2048 conv=fsync 2>/dev/null; sync
        say "PEERSTACK-DISK-READBACK $n: $(dd if=/dev/$n bs=512 skip=2048 count=1 2>/dev/null | head -c 48 | tr -d '\0')"
      fi
    done
    for n in $seen; do case " $now " in *" $n "*) ;; *) say "PEERSTACK-DISK-GONE $n";; esac; done
    seen=$now; first=""; sleep 1
  done ) &

# ACPI power button -> clean poweroff (so QMP system_powerdown works).
( while true; do
    if [ -r /sys/firmware/acpi/interrupts/ff_pwr_btn ] && [ "$(awk '{print $1}' /sys/firmware/acpi/interrupts/ff_pwr_btn)" != 0 ]; then
      say "PEERSTACK-POWERDOWN"; sync; poweroff -f; fi
    sleep 1; done ) &

UD=/mnt/config/openstack/latest/user_data
if [ -n "$MD" ] && [ -r "$UD" ] && [ "$(head -c 2 "$UD")" = "#!" ]; then
  cp "$UD" /tmp/user_data; chmod +x /tmp/user_data
  sh /tmp/user_data </dev/null >/dev/console 2>&1; rc=$?
  say "PEERSTACK-USERDATA-DONE rc=$rc"
fi

say "PEERSTACK-READY hostname=$HOST uptime=$(cut -d' ' -f1 /proc/uptime)"
exec setsid cttyhack sh -c 'exec sh </dev/console >/dev/console 2>&1'
EOF
chmod +x "$I/init"
(cd "$I" && find . | cpio -o -H newc --quiet | gzip -9) > "$W/initrd.gz"

# 4. Bootable hybrid ISO (BIOS) via grub-mkrescue, then qcow2.
mkdir -p "$W/iso/boot/grub"
cp "$KDIR/vmlinuz" "$W/iso/boot/vmlinuz"
cp "$W/initrd.gz" "$W/iso/boot/initrd.gz"
cat > "$W/iso/boot/grub/grub.cfg" <<'EOF'
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
menuentry "peerstack-guest" {
  linux /boot/vmlinuz console=ttyS0 quiet panic=-1
  initrd /boot/initrd.gz
}
EOF
grub-mkrescue -o "$W/guest.iso" "$W/iso" >"$W/grub.log" 2>&1 || { cat "$W/grub.log" >&2; die "grub-mkrescue failed"; }
qemu-img convert -q -f raw -O qcow2 "$W/guest.iso" "$W/guest.qcow2"

cp "$KDIR/vmlinuz" "$W/vmlinuz"
for f in vmlinuz initrd.gz guest.qcow2; do mv -f "$W/$f" "$OUT/$f"; done
echo "$INPUTS" > "$OUT/.inputs"
echo "build-guest-image: built $OUT/guest.qcow2 ($KPKG, initrd $(stat -c %s "$OUT/initrd.gz") bytes)"
