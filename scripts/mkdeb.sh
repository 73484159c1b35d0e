#!/usr/bin/env bash
# mkdeb.sh VERSION ARCH OUTDIR — build peerstack_VERSION_ARCH.deb with
# dpkg-deb from the Go source and packaging/. ARCH is amd64 or arm64; the
# binary is cross-compiled (pure Go, CGO_ENABLED=0). Nothing is fetched
# but Go modules.
set -euo pipefail
version=${1:?version}; arch=${2:?arch}; out=${3:?outdir}
top=$(cd "$(dirname "$0")/.." && pwd)
case "$arch" in
  amd64) qemu_dep="qemu-system-x86" ;;
  arm64) qemu_dep="qemu-system-arm, qemu-efi-aarch64" ;;
  *) echo "mkdeb: unsupported arch $arch (amd64 or arm64)" >&2; exit 2 ;;
esac
mkdir -p "$out"
out=$(cd "$out" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/root"
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/lib/systemd/system-sleep" "$root/etc/peerstack" \
  "$root/usr/share/doc/peerstack" "$root/usr/share/man/man8" "$root/usr/share/lintian/overrides"

(cd "$top" && CGO_ENABLED=0 GOOS=linux GOARCH="$arch" go build -trimpath \
  -ldflags "-s -w -X github.com/peerstack/peerstack/node.Version=$version" -o "$root/usr/bin/peerstack" .)
install -m 0644 "$top/packaging/peerstack.service" "$root/lib/systemd/system/peerstack.service"
# systemd-sleep's hook (docs/ha.md); bookworm's systemd reads /lib/systemd/system-sleep.
install -m 0755 "$top/packaging/peerstack.sleep" "$root/lib/systemd/system-sleep/peerstack"
install -m 0644 "$top/packaging/peerstack.env" "$root/etc/peerstack/peerstack.env"
install -m 0644 "$top/packaging/copyright" "$root/usr/share/doc/peerstack/copyright"
install -m 0644 "$top/packaging/lintian-overrides" "$root/usr/share/lintian/overrides/peerstack"
gzip -9n < "$top/packaging/peerstack.8" > "$root/usr/share/man/man8/peerstack.8.gz"
chmod 0644 "$root/usr/share/man/man8/peerstack.8.gz"
date_r=$(date -u -R -d "@${SOURCE_DATE_EPOCH:-$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)}")
printf 'peerstack (%s) unstable; urgency=medium\n\n  * Release %s.\n\n -- peerstack authors <peerstack-maintainers@users.noreply.github.com>  %s\n' \
  "$version" "$version" "$date_r" | gzip -9n > "$root/usr/share/doc/peerstack/changelog.gz"
for s in postinst prerm postrm; do install -m 0755 "$top/packaging/$s" "$root/DEBIAN/$s"; done
echo /etc/peerstack/peerstack.env > "$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CTL
Package: peerstack
Version: $version
Architecture: $arch
Maintainer: peerstack authors <peerstack-maintainers@users.noreply.github.com>
Installed-Size: $size
Depends: $qemu_dep, qemu-utils, qemu-block-extra, iproute2, nftables
Recommends: python3-openstackclient
Section: admin
Priority: optional
Homepage: https://github.com/peerstack/peerstack
Description: private cloud for edge and homelab clusters, with no controller
 Every host runs the same daemon: hosts gossip capacity, replicate the
 cluster state with Raft, and whichever host leads schedules VMs, while
 every host serves an OpenStack-compatible API and runs QEMU VMs, VXLAN
 tenant networks and volumes. Installing starts nothing: run
 "peerstack init" on the first host and "peerstack join TOKEN" on others.
CTL
deb="$out/peerstack_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
