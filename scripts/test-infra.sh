#!/usr/bin/env bash
# Starts what the integration tests and benchmarks need on a machine that may have none of it:
# a Docker engine (Debian's docker.io 20.10, when none answers), two current engines beside it
# (Docker 28 on the graphdriver store and on the containerd image store, scripts/modern-docker.sh),
# a throwaway Ceph RADOS Gateway on loopback (a real S3 with SigV4, pagination, multipart and
# conditional writes), and a static busybox for FROM-scratch test images.
#   scripts/test-infra.sh up     start them (idempotent); prints the environment to use.
#                                S3DOCK_TEST_ENGINES (default "20.10 28-graphdriver 28-containerd")
#                                names the engines; without a 28-* one the current engines are skipped
#   scripts/test-infra.sh down   stop the gateway and remove its data (and stop the current engines)
#   scripts/test-infra.sh env    print the environment variables for the running servers
#   scripts/test-infra.sh gateway-b up|stop|start|down
#                                a second radosgw on 127.0.0.1:$RGW_B_PORT (default 7481) over the same
#                                cluster, which fault tests may stop, restart or firewall without
#                                disturbing the shared gateway on 7480
#   scripts/test-infra.sh small-engine up|down
#                                a second dockerd whose data-root is a $SMALL_ENGINE_MB MiB tmpfs (default
#                                64), for tests of a full disk; prints its DOCKER_HOST
set -euo pipefail

RGW_DIR=${RGW_DIR:-/tmp/s3dock-rgw}
RGW_PORT=${RGW_PORT:-7480}
MON_PORT=${MON_PORT:-16789}
ACCESS_KEY=${RGW_ACCESS_KEY:-s3dock-test}
SECRET_KEY=${RGW_SECRET_KEY:-s3dock-test-secret}

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || { echo "need root to install: ${missing[*]}" >&2; exit 1; }
  apt-get update >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
}

docker_up() {
  if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then return 0; fi
  apt_install docker.io iptables
  nohup dockerd >"${DOCKERD_LOG:-/tmp/s3dock-dockerd.log}" 2>&1 &
  for _ in $(seq 1 60); do docker version >/dev/null 2>&1 && return 0; sleep 1; done
  echo "dockerd did not come up; see ${DOCKERD_LOG:-/tmp/s3dock-dockerd.log}" >&2
  exit 1
}

rgw_answers() { curl -s -o /dev/null "http://127.0.0.1:$RGW_PORT"; }

rgw_down() {
  if [ -d "$RGW_DIR/run" ]; then
    for pidfile in "$RGW_DIR"/run/*.pid; do
      [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    sleep 1
  fi
  rm -rf "$RGW_DIR"
}

rgw_up() {
  if rgw_answers && [ -f "$RGW_DIR/ready" ]; then return 0; fi
  apt_install ceph-mon ceph-osd radosgw ceph-common curl
  rgw_down
  mkdir -p "$RGW_DIR"/{mon,osd0,run,log,rgw}
  local fsid
  fsid=$(cat /proc/sys/kernel/random/uuid)
  cat >"$RGW_DIR/ceph.conf" <<CONF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$MON_PORT
osd pool default size = 1
osd pool default min size = 1
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
auth allow insecure global id reclaim = false
# BlueStore on a sparse file, as Ceph's own dev clusters run: the data lives on disk, so multi-GB
# benchmarks and many layer blobs fit (an in-memory store fills up, and a full RGW hangs requests).
osd objectstore = bluestore
bluestore block create = true
bluestore block size = ${RGW_DISK_BYTES:-107374182400}
bluestore fsck on mkfs = false
bluestore fsck on mount = false
osd memory target = 1073741824
run dir = $RGW_DIR/run
admin socket = $RGW_DIR/run/\$name.asok
log file = $RGW_DIR/log/\$name.log
pid file = $RGW_DIR/run/\$name.pid
keyring = $RGW_DIR/\$name.keyring
[mon.a]
mon data = $RGW_DIR/mon
[osd.0]
osd data = $RGW_DIR/osd0
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw data = $RGW_DIR/rgw
rgw gc obj min wait = 0
# Deleted objects' data goes back to the in-memory store only when the GC runs (hourly by default);
# benchmarks that push and delete gigabytes would fill the store, and a full RGW hangs requests.
rgw gc processor period = 10
CONF
  export CEPH_CONF=$RGW_DIR/ceph.conf
  ceph-authtool --create-keyring "$RGW_DIR/mon.a.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$RGW_DIR/client.admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
  ceph-authtool "$RGW_DIR/mon.a.keyring" --import-keyring "$RGW_DIR/client.admin.keyring" >/dev/null
  monmaptool --create --addv a "v2:127.0.0.1:$MON_PORT" --fsid "$fsid" "$RGW_DIR/monmap" >/dev/null
  ceph-mon --mkfs -i a --monmap "$RGW_DIR/monmap" --keyring "$RGW_DIR/mon.a.keyring"
  ceph-mon -i a
  ceph -n client.admin osd create >/dev/null
  ceph auth get-or-create osd.0 mon 'allow profile osd' osd 'allow *' mgr 'allow profile osd' \
    -o "$RGW_DIR/osd.0.keyring" >/dev/null
  ceph-osd -i 0 --mkfs >/dev/null 2>&1
  ceph-osd -i 0 2>/dev/null
  ceph osd crush add osd.0 1.0 host=localhost >/dev/null 2>&1 || true
  ceph osd crush move localhost root=default >/dev/null 2>&1 || true
  ceph auth get-or-create client.rgw.a mon 'allow rw' osd 'allow rwx' \
    -o "$RGW_DIR/client.rgw.a.keyring" >/dev/null
  radosgw -n client.rgw.a
  for _ in $(seq 1 90); do rgw_answers && break; sleep 1; done
  rgw_answers || { echo "radosgw did not come up; see $RGW_DIR/log" >&2; exit 1; }
  radosgw-admin user create --uid=s3dock-test --display-name=s3dock-test \
    --access-key="$ACCESS_KEY" --secret="$SECRET_KEY" >/dev/null
  touch "$RGW_DIR/ready"
}

RGW_B_PORT=${RGW_B_PORT:-7481}
RGW_B_PIDFILE=$RGW_DIR/run/client.rgw.b.pid

gateway_b_answers() { curl -s -o /dev/null "http://127.0.0.1:$RGW_B_PORT"; }

gateway_b_start() {
  [ -f "$RGW_DIR/ready" ] || { echo "the first gateway is not up: run '$0 up' first" >&2; exit 1; }
  if gateway_b_answers; then return 0; fi
  export CEPH_CONF=$RGW_DIR/ceph.conf
  if [ ! -f "$RGW_DIR/client.rgw.b.keyring" ]; then
    ceph auth get-or-create client.rgw.b mon 'allow rw' osd 'allow rwx' -o "$RGW_DIR/client.rgw.b.keyring" >/dev/null
  fi
  mkdir -p "$RGW_DIR/rgw-b"
  radosgw -n client.rgw.b --rgw-frontends="beast endpoint=127.0.0.1:$RGW_B_PORT" --rgw-data="$RGW_DIR/rgw-b"
  for _ in $(seq 1 60); do gateway_b_answers && return 0; sleep 0.5; done
  echo "the second radosgw did not come up; see $RGW_DIR/log/client.rgw.b.log" >&2
  exit 1
}

# SIGKILL, like a crashed server: connections drop mid-transfer with no goodbye.
gateway_b_stop() {
  if [ -f "$RGW_B_PIDFILE" ]; then
    local pid
    pid=$(cat "$RGW_B_PIDFILE")
    kill -9 "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$RGW_B_PIDFILE"
  fi
}

SMALL_ENGINE_DIR=${SMALL_ENGINE_DIR:-/tmp/s3dock-small-engine}
SMALL_ENGINE_BRIDGE=s3dock-small0

small_engine_answers() { DOCKER_HOST="unix://$SMALL_ENGINE_DIR/docker.sock" docker version >/dev/null 2>&1; }

small_engine_up() {
  if ! small_engine_answers; then
    apt_install docker.io iptables iproute2
    mkdir -p "$SMALL_ENGINE_DIR/root" "$SMALL_ENGINE_DIR/exec"
    mountpoint -q "$SMALL_ENGINE_DIR/root" || mount -t tmpfs -o "size=${SMALL_ENGINE_MB:-64}m" tmpfs "$SMALL_ENGINE_DIR/root"
    # Its own bridge: `--bridge none` would make dockerd delete the shared engine's docker0.
    if ! ip link show "$SMALL_ENGINE_BRIDGE" >/dev/null 2>&1; then
      ip link add "$SMALL_ENGINE_BRIDGE" type bridge
      ip addr add 172.31.254.1/24 dev "$SMALL_ENGINE_BRIDGE"
      ip link set "$SMALL_ENGINE_BRIDGE" up
    fi
    nohup dockerd --data-root "$SMALL_ENGINE_DIR/root/data" --exec-root "$SMALL_ENGINE_DIR/exec" \
      --pidfile "$SMALL_ENGINE_DIR/dockerd.pid" -H "unix://$SMALL_ENGINE_DIR/docker.sock" \
      --containerd-namespace s3dock-small --containerd-plugins-namespace s3dock-small-plugins \
      --bridge "$SMALL_ENGINE_BRIDGE" --iptables=false --ip-masq=false >"$SMALL_ENGINE_DIR/dockerd.log" 2>&1 &
    for _ in $(seq 1 60); do small_engine_answers && break; sleep 0.5; done
    small_engine_answers || { echo "the small dockerd did not come up; see $SMALL_ENGINE_DIR/dockerd.log" >&2; exit 1; }
  fi
  echo "export S3DOCK_TEST_SMALL_DOCKER_HOST=unix://$SMALL_ENGINE_DIR/docker.sock"
}

small_engine_down() {
  if [ -f "$SMALL_ENGINE_DIR/dockerd.pid" ]; then
    local pid
    pid=$(cat "$SMALL_ENGINE_DIR/dockerd.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  mountpoint -q "$SMALL_ENGINE_DIR/root" && umount "$SMALL_ENGINE_DIR/root"
  ip link show "$SMALL_ENGINE_BRIDGE" >/dev/null 2>&1 && ip link delete "$SMALL_ENGINE_BRIDGE"
  rm -rf "$SMALL_ENGINE_DIR"
}

wants_modern_engines() { case "${S3DOCK_TEST_ENGINES:-28-}" in *28-*) return 0 ;; *) return 1 ;; esac; }

print_env() {
  if wants_modern_engines; then "$(dirname "$0")/modern-docker.sh" env; fi
  cat <<ENV
export S3DOCK_TEST_ENDPOINT=http://127.0.0.1:$RGW_PORT
export S3DOCK_TEST_ACCESS_KEY=$ACCESS_KEY
export S3DOCK_TEST_SECRET_KEY=$SECRET_KEY
export S3DOCK_TEST_REGION=us-east-1
ENV
}

case "${1:-up}" in
  up)
    # faketime: the clock-skew tests run the CLI with a shifted clock.
    apt_install busybox-static faketime
    docker_up
    if wants_modern_engines; then "$(dirname "$0")/modern-docker.sh" up >/dev/null; fi
    rgw_up
    echo "docker engines and radosgw ready (http://127.0.0.1:$RGW_PORT)" >&2
    print_env
    ;;
  down)
    rgw_down
    if wants_modern_engines; then "$(dirname "$0")/modern-docker.sh" down; fi
    ;;
  env) print_env ;;
  gateway-b)
    case "${2:-up}" in
      up | start) gateway_b_start; echo "export S3DOCK_TEST_ENDPOINT_B=http://127.0.0.1:$RGW_B_PORT" ;;
      stop | down) gateway_b_stop ;;
      *) echo "usage: $0 gateway-b up|start|stop|down" >&2; exit 2 ;;
    esac
    ;;
  small-engine)
    case "${2:-up}" in
      up) small_engine_up ;;
      down) small_engine_down ;;
      *) echo "usage: $0 small-engine up|down" >&2; exit 2 ;;
    esac
    ;;
  *) echo "usage: $0 up|down|env|gateway-b up|start|stop|down|small-engine up|down" >&2; exit 2 ;;
esac
