#!/bin/sh
# Current Docker engines beside the machine's own Docker 20.10, for the integration suite: Debian
# sid's docker.io (28.x) with containerd 2.x, run from a debootstrapped root, as two daemons at once:
# one on the graphdriver store (overlay2) and one on the containerd image store (the default of
# fresh Docker 29 installs). Both share one containerd, each in its own namespace.
#
#   scripts/modern-docker.sh up     start both (idempotent); prints their DOCKER_HOSTs as variables
#   scripts/modern-docker.sh env    print those variables
#   scripts/modern-docker.sh down   stop both and remove their bridges
#
# Traps, both seen here:
#  - dockerd deletes the interface named docker0 (the shared engine's bridge) on a start that finds an
#    old "bridge" network in its store while `default-address-pools` is set, and with bridge=none.
#    Neither is used below, and `up` checks that docker0 survives.
#  - sid's Release files can look expired to apt: Check-Valid-Until=false.
# The daemons run chrooted in a private mount namespace (their mounts vanish when they exit), with
# their own sockets, data roots, exec roots and bridges, and no iptables rules of their own (published
# ports go through docker-proxy): the host's FORWARD policy (DROP, set by Docker 20.10) would drop
# traffic between containers on their user networks, so `up` accepts forwarding between bridges named
# s3dt* (tests that need containers to talk create their networks with
# `-o com.docker.network.bridge.name=s3dt…`).
set -eu
SUITE=${MODERN_DOCKER_SUITE:-sid}
ROOT=${MODERN_DOCKER_ROOT:-/opt/docker-$SUITE}
STATE=/run/s3dock-modern
STORES="graphdriver containerd"

sock() { echo "$STATE/docker-$1.sock"; }
bridge() { echo "s3dm-$1" | cut -c1-15; }
subnet() { case "$1" in graphdriver) echo 172.30.98.1/24 ;; containerd) echo 172.30.99.1/24 ;; esac; }
answers() { DOCKER_HOST="unix://$(sock "$1")" docker version >/dev/null 2>&1; }

install_root() {
  [ -x "$ROOT/usr/sbin/dockerd" ] && return 0
  command -v debootstrap >/dev/null || { apt-get update >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >/dev/null; }
  rm -rf "$ROOT.partial"
  debootstrap --variant=minbase "$SUITE" "$ROOT.partial" http://deb.debian.org/debian >/dev/null
  printf '#!/bin/sh\nexit 101\n' >"$ROOT.partial/usr/sbin/policy-rc.d"; chmod +x "$ROOT.partial/usr/sbin/policy-rc.d"
  cp /etc/resolv.conf "$ROOT.partial/etc/"
  mount -t proc proc "$ROOT.partial/proc"
  chroot "$ROOT.partial" sh -c 'export DEBIAN_FRONTEND=noninteractive; apt-get -o Acquire::Check-Valid-Until=false update >/dev/null && apt-get -o Acquire::Check-Valid-Until=false install -y --no-install-recommends docker.io containerd runc iptables ca-certificates tini >/dev/null 2>&1' \
    || { umount "$ROOT.partial/proc"; echo "installing docker.io into $ROOT.partial failed" >&2; exit 1; }
  umount "$ROOT.partial/proc"
  mv "$ROOT.partial" "$ROOT"
}

write_config() {
  mkdir -p "$ROOT/etc/s3dock-modern"
  # containerd 2.x reads config version 3; 1.7 only version 2.
  if chroot "$ROOT" containerd --version | grep -qE ' v?1\.'; then
    cversion=2; disabled='"io.containerd.grpc.v1.cri","io.containerd.nri.v1.nri","io.containerd.snapshotter.v1.btrfs","io.containerd.snapshotter.v1.zfs"'
  else
    cversion=3; disabled='"io.containerd.grpc.v1.cri","io.containerd.cri.v1.images","io.containerd.cri.v1.runtime","io.containerd.nri.v1.nri","io.containerd.snapshotter.v1.btrfs","io.containerd.snapshotter.v1.zfs"'
  fi
  cat >"$ROOT/etc/s3dock-modern/containerd.toml" <<TOML
version = $cversion
root = "/var/lib/s3dock-containerd"
state = "/run/s3dock-containerd"
disabled_plugins = [$disabled]
[grpc]
  address = "/run/s3dock-containerd/containerd.sock"
[ttrpc]
  address = "/run/s3dock-containerd/containerd.sock.ttrpc"
[debug]
  address = "/run/s3dock-containerd/debug.sock"
[metrics]
  address = ""
TOML
  for store in $STORES; do
    snap=false; driver='"storage-driver":"overlay2",'
    [ "$store" = containerd ] && { snap=true; driver=; }
    # Paths as seen inside the root, where /run/host is the machine's /run.
    cat >"$ROOT/etc/s3dock-modern/daemon-$store.json" <<JSON
{"hosts":["unix:///run/host/${STATE#/run/}/docker-$store.sock"],"pidfile":"/run/host/${STATE#/run/}/dockerd-$store.pid",
 "data-root":"/var/lib/s3dock-docker-$store","exec-root":"/run/s3dock-docker-$store",
 "containerd":"/run/s3dock-containerd/containerd.sock","containerd-namespace":"s3dock-$store","containerd-plugins-namespace":"s3dock-$store-plugins",
 "bridge":"$(bridge "$store")","iptables":false,"ip6tables":false,"ip-masq":false,"ip-forward":false,"userland-proxy":true,
 $driver "cgroup-parent":"/s3dock-docker-$store","features":{"containerd-snapshotter":$snap}}
JSON
    if grep -qE 'default-address-pools|"bridge": *"none"' "$ROOT/etc/s3dock-modern/daemon-$store.json"; then
      echo "refusing: this configuration would delete docker0" >&2; exit 1
    fi
  done
}

# Runs in its own mount namespace (see `up`): the chroot's mounts go away with the daemons.
in_namespace() {
  mount --bind "$ROOT" "$ROOT"   # containerd and dockerd need the root to be a mount point
  mount -t proc proc "$ROOT/proc"; mount --rbind /sys "$ROOT/sys"; mount --rbind /dev "$ROOT/dev"
  mount -t tmpfs -o mode=755 tmpfs "$ROOT/run"; mkdir -p "$ROOT/run/host" "$ROOT/run/lock"; mount --bind /run "$ROOT/run/host"
  chroot "$ROOT" /usr/bin/containerd --config /etc/s3dock-modern/containerd.toml >>"$STATE/containerd.log" 2>&1 &
  echo $! >"$STATE/containerd.pid"
  for _ in $(seq 50); do [ -S "$ROOT/run/s3dock-containerd/containerd.sock" ] && break; sleep 0.2; done
  for store in $STORES; do
    chroot "$ROOT" /usr/sbin/dockerd --config-file "/etc/s3dock-modern/daemon-$store.json" >>"$STATE/dockerd-$store.log" 2>&1 &
  done
  wait
}

print_env() {
  echo "export S3DOCK_TEST_DOCKER_28_GRAPHDRIVER=unix://$(sock graphdriver)"
  echo "export S3DOCK_TEST_DOCKER_28_CONTAINERD=unix://$(sock containerd)"
}

up() {
  if answers graphdriver && answers containerd; then print_env; return 0; fi
  down >/dev/null 2>&1 || true
  install_root; write_config; mkdir -p "$STATE"
  had_docker0=0; ip link show docker0 >/dev/null 2>&1 && had_docker0=1
  for store in $STORES; do
    b=$(bridge "$store")
    ip link show "$b" >/dev/null 2>&1 || { ip link add "$b" type bridge; ip addr add "$(subnet "$store")" dev "$b"; ip link set "$b" up; }
  done
  iptables -C FORWARD -i 's3dt+' -o 's3dt+' -j ACCEPT 2>/dev/null || iptables -I FORWARD 1 -i 's3dt+' -o 's3dt+' -j ACCEPT
  setsid unshare --mount --propagation private "$0" __namespace </dev/null >/dev/null 2>&1 &
  for store in $STORES; do
    for _ in $(seq 150); do answers "$store" && break; sleep 0.3; done
    answers "$store" || { echo "the Docker 28 ($store) daemon did not come up; see $STATE/dockerd-$store.log" >&2; exit 1; }
  done
  if [ "$had_docker0" = 1 ] && ! ip link show docker0 >/dev/null 2>&1; then echo "docker0 disappeared while starting" >&2; exit 1; fi
  print_env
}

down() {
  for name in dockerd-graphdriver dockerd-containerd containerd; do
    f="$STATE/$name.pid"; [ -f "$f" ] || continue
    pid=$(cat "$f"); kill "$pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    rm -f "$f"
  done
  for store in $STORES; do b=$(bridge "$store"); ! ip link show "$b" >/dev/null 2>&1 || ip link delete "$b"; done
  iptables -D FORWARD -i 's3dt+' -o 's3dt+' -j ACCEPT 2>/dev/null || true
}

case "${1:-}" in
  up) up ;;
  env) print_env ;;
  down) down ;;
  __namespace) in_namespace ;;
  *) echo "usage: $0 up|env|down" >&2; exit 2 ;;
esac
