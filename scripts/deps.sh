#!/usr/bin/env bash
# Installs the Debian packages peerstack needs, only when missing (idempotent).
#   scripts/deps.sh run    what the daemon needs to run VMs, networks and volumes,
#                          plus the openstack client that `make run` tells you to use
#   scripts/deps.sh guest  what `make guest-image` needs to build the test guest
#   scripts/deps.sh test   all of the above plus what the tests need (NFS server, headless
#                          Chromium for the dashboard tests, tools)
set -euo pipefail
what=${1:-test}
run_pkgs="qemu-system-x86 qemu-utils qemu-block-extra iproute2 python3-openstackclient"
guest_pkgs="busybox-static cpio grub-pc-bin grub-common xorriso mtools qemu-utils"
test_pkgs="$run_pkgs $guest_pkgs chromium chromium-driver nfs-ganesha nfs-ganesha-vfs rpcbind socat libnfs-utils iputils-ping lintian debootstrap systemd-container iperf3 qemu-user qemu-system-arm qemu-efi-aarch64"
case "$what" in
  run) pkgs=$run_pkgs ;;
  guest) pkgs=$guest_pkgs ;;
  test) pkgs=$test_pkgs ;;
  *) echo "usage: $0 run|guest|test" >&2; exit 2 ;;
esac
missing=()
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
command -v go >/dev/null || { echo "deps: Go is not installed (need Go 1.26 at /usr/local/go or on PATH)" >&2; exit 1; }
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "deps: missing Debian packages: ${missing[*]}; run as root or: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
