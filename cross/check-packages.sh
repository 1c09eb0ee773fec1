#!/usr/bin/env bash
# Checks built .deb packages: contents, the systemd unit (systemd-analyze verify), and an
# install of the host-architecture package on this machine that then starts the agent once
# against a Mosquitto it starts. Run as root (CI). Usage: cross/check-packages.sh DEB...
set -euo pipefail
host_arch=$(dpkg --print-architecture)
host_deb=""
for deb in "$@"; do
  echo "--- $deb"
  dpkg-deb -I "$deb" | sed -n '/Package:/,$p'
  list=$(dpkg-deb -c "$deb")
  for f in ./usr/bin/camgw ./etc/camgw/camgw.toml ./lib/systemd/system/camgw.service ./usr/share/doc/camgw/install.md ./usr/share/doc/camgw/reference.md ./usr/share/camgw/boards/; do
    echo "$list" | grep -q " $f\$" || echo "$list" | grep -q " $f" || { echo "missing $f in $deb"; exit 1; }
  done
  dpkg-deb -e "$deb" /tmp/camgw-ctl
  grep -qx /etc/camgw/camgw.toml /tmp/camgw-ctl/conffiles || { echo "camgw.toml is not a conffile"; exit 1; }
  rm -rf /tmp/camgw-ctl
  case "$deb" in *_"$host_arch".deb) host_deb=$deb ;; esac
done
[ -n "$host_deb" ] || { echo "no $host_arch package to install"; exit 1; }

echo "--- install $host_deb on this machine (a fresh install: any earlier one is purged first)"
dpkg --purge camgw >/dev/null 2>&1 || true
dpkg -i "$host_deb"
id camgw
stat -c '%U %a %n' /var/lib/camgw /etc/camgw /etc/camgw/camgw.toml
camgw check-config /etc/camgw/camgw.toml
echo "--- systemd-analyze verify"
systemd-analyze verify /lib/systemd/system/camgw.service
grep -E '^(Type|WatchdogSec|Restart|ProtectSystem|ReadWritePaths|NoNewPrivileges|User|SupplementaryGroups)=' /lib/systemd/system/camgw.service

echo "--- conffile kept on reinstall when changed"
echo "# changed by a technician" >> /etc/camgw/camgw.toml
dpkg -i --force-confold "$host_deb" >/dev/null
grep -q "changed by a technician" /etc/camgw/camgw.toml || { echo "the changed config was overwritten"; exit 1; }

echo "--- start the installed agent once, as the camgw user, against Mosquitto"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mosquitto -p "$port" >/tmp/camgw-pkg-mosquitto.log 2>&1 &
mq=$!
sed -e "s#mqtt://127.0.0.1:1883#mqtt://127.0.0.1:$port#" -e 's#^listen = .*#listen = "127.0.0.1:0"#' \
    -e 's#^ward = .*#ward = "pkg-test"#' -e 's#^id = "change-me-gw01"#id = "pkg-gw"#' /etc/camgw/camgw.toml > /etc/camgw/pkg-test.toml
chgrp camgw /etc/camgw/pkg-test.toml; chmod 0640 /etc/camgw/pkg-test.toml
sleep 0.5
timeout 20 mosquitto_sub -p "$port" -t 'camgw/pkg-test/pkg-gw/status' -C 1 > /tmp/camgw-pkg-status.json &
sub=$!
sleep 0.5
runuser -u camgw -- camgw run --config /etc/camgw/pkg-test.toml 2>/tmp/camgw-pkg-agent.log &
agent=$!
wait $sub || { echo "no status from the installed agent"; cat /tmp/camgw-pkg-agent.log; kill $agent $mq; exit 1; }
cat /tmp/camgw-pkg-status.json
grep -q '"online":true' /tmp/camgw-pkg-status.json
# Signal the agent itself (runuser does not forward signals) and expect a clean exit 0.
pkill -TERM -u camgw -x camgw
code=0; wait $agent || code=$?
echo "agent exited $code"
[ "$code" = 0 ] || { cat /tmp/camgw-pkg-agent.log; exit 1; }
kill $mq
rm -f /etc/camgw/pkg-test.toml
echo "packages OK"
