#!/bin/bash
# Start one harness node: per-container host keys, users, the chosen firewall, then sshd.
#   SSHD_PORT  port sshd listens on (default 22)
#   FIREWALL   none | iptables | nftables | ufw | firewalld: the backend that is active here
set -euo pipefail
SSHD_PORT="${SSHD_PORT:-22}"
FIREWALL="${FIREWALL:-none}"

# Host keys are made here, once per container, never baked into the image.
ssh-keygen -A >/dev/null

# Users as real sites have them: root, an operator with passwordless sudo, and one whose sudo
# asks for a password (sfcluster must stop before changing anything there).
id sfops >/dev/null 2>&1 || { useradd -m -s /bin/bash sfops; echo 'sfops ALL=(ALL) NOPASSWD:ALL' >/etc/sudoers.d/sfops; }
if ! id sfstrict >/dev/null 2>&1; then
  useradd -m -s /bin/bash sfstrict
  echo "sfstrict:$(head -c 18 /dev/urandom | base64)" | chpasswd
  echo 'sfstrict ALL=(ALL) ALL' >/etc/sudoers.d/sfstrict
fi
# The user Ray runs as (inventory `ray_user`), as a site makes it: no sudo rights, no SSH login; the
# SSH users reach it with `sudo -n -u sfray` (root and sfops: their sudo covers it).
id sfray >/dev/null 2>&1 || useradd -m -s /bin/bash sfray
chmod 0440 /etc/sudoers.d/*
for u in root sfops sfstrict; do
  home="$(getent passwd "$u" | cut -d: -f6)"
  install -d -m 0700 -o "$u" -g "$u" "$home/.ssh"
  install -m 0600 -o "$u" -g "$u" /etc/sfcluster/authorized_keys "$home/.ssh/authorized_keys"
done

cat >/etc/ssh/sshd_config.d/sfcluster.conf <<CONF
Port ${SSHD_PORT}
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
MaxStartups 100:30:200
MaxSessions 100
CONF
mkdir -p /run/sshd

case "$FIREWALL" in
  none) ;;
  iptables)
    # a host with an iptables firewall has a filter table with some rules of its own
    iptables -A INPUT -m conntrack --ctstate INVALID -j DROP ;;
  nftables)
    # a native nftables host, as Debian's nftables.service sets up (without its `flush ruleset`,
    # which would also drop Docker's DNS rules in this network namespace)
    nft add table inet filter
    nft add chain inet filter input '{ type filter hook input priority 0; policy accept; }' ;;
  ufw)
    ufw --force reset >/dev/null
    ufw default allow incoming >/dev/null   # a permissive site policy: sfcluster's rules scope its ports
    ufw --force enable >/dev/null
    # `enable` leaves ufw's ip6 limit chains empty; the first reload (after ANY rule change, by
    # anyone) fills them. Reload once so the node starts in ufw's steady state and "ruleset
    # before == after" compares like with like.
    ufw reload >/dev/null ;;
  firewalld)
    mkdir -p /run/dbus
    dbus-daemon --system --fork
    firewalld --nofork >/var/log/firewalld.log 2>&1 &
    for _ in $(seq 1 100); do firewall-cmd --state >/dev/null 2>&1 && break; sleep 0.2; done
    firewall-cmd --permanent --zone=public --add-port="${SSHD_PORT}/tcp" >/dev/null
    firewall-cmd --reload >/dev/null ;;
  *) echo "unknown FIREWALL=$FIREWALL" >&2; exit 1 ;;
esac
echo "$FIREWALL" >/etc/sfcluster/firewall-backend 2>/dev/null || true

exec /usr/sbin/sshd -D -e
