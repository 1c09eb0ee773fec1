#!/usr/bin/env bash
# Builds a .deb from a camgw binary: bash cross/package.sh DEB_ARCH BINARY [OUTDIR]
# DEB_ARCH is arm64, armhf or amd64. Holds the binary, boards/, a commented default config
# at /etc/camgw/camgw.toml (a conffile: dpkg never overwrites a changed one), the systemd
# unit, and maintainer scripts that create the camgw user (groups gpio, i2c) and /var/lib/camgw.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=$1 bin=$2 out=${3:-cross/out}
version=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -D -m 0755 "$bin" "$stage/usr/bin/camgw"
install -d "$stage/usr/share/camgw/boards"
cp -r boards/. "$stage/usr/share/camgw/boards/" 2>/dev/null || true
install -D -m 0644 cross/debian/camgw.toml "$stage/etc/camgw/camgw.toml"
install -D -m 0644 cross/debian/camgw.service "$stage/lib/systemd/system/camgw.service"
install -D -m 0644 docs/install.md "$stage/usr/share/doc/camgw/install.md"
install -D -m 0644 docs/reference.md "$stage/usr/share/doc/camgw/reference.md"
install -d "$stage/DEBIAN"
for s in postinst prerm postrm; do install -m 0755 "cross/debian/$s" "$stage/DEBIAN/$s"; done
echo /etc/camgw/camgw.toml > "$stage/DEBIAN/conffiles"
depends=""
if file -b "$bin" | grep -q "dynamically linked"; then depends="Depends: libc6"; fi
cat > "$stage/DEBIAN/control" <<CTL
Package: camgw
Version: $version
Architecture: $arch
Maintainer: camgw developers <camgw@localhost>
Section: net
Priority: optional
Installed-Size: $(du -sk "$stage" | cut -f1)
${depends:+$depends
}Description: edge agent for neighbourhood camera gateways
 Checks every camera's health, buffers motion events durably and reports
 them over MQTT to the ward station; takes signed remote commands.
CTL
mkdir -p "$out"
deb="$out/camgw_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
