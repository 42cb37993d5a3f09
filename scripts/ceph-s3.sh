#!/usr/bin/env bash
# A real S3-compatible server for tests: a throw-away one-node Ceph cluster (one monitor, one
# memstore OSD, no manager) with a RADOS Gateway in front, all bound to 127.0.0.1, all state
# under one directory. No systemd: the daemons are started by hand from a ceph.conf in that
# directory. Debian 12 packages (Ceph 16.2 "pacific"); installing needs root.
#
#   scripts/ceph-s3.sh install        install radosgw, ceph-mon and ceph-osd if missing
#   scripts/ceph-s3.sh start DIR      make and start a cluster under DIR (created; must be empty
#                                     or absent). The last line of stdout is JSON:
#                                     {"endpoint":"http://127.0.0.1:PORT","accessKeyId":"...",
#                                      "secretAccessKey":"...","region":"us-east-1","pids":[...]}
#                                     Progress goes to stderr; the daemons' logs to DIR/log/.
#   scripts/ceph-s3.sh stop DIR       kill the daemons recorded in DIR/pids and remove DIR
#
# Environment for `start`:
#   CEPH_MEMSTORE_BYTES   size of the in-memory OSD (default 3 GiB). Memory is only used as
#                         objects are written; writes fail once ~95% of it is used.
#   CEPH_S3_OWNER_PID     if set, a watchdog stops the cluster (as `stop DIR` does) as soon as
#                         that process is gone, so no daemon outlives a killed test runner.
#   CEPH_S3_ACCESS_KEY, CEPH_S3_SECRET_KEY   the S3 user's keys (fixed defaults below).
#   CEPH_S3_TIMEOUT       seconds to wait for the gateway to answer (default 120).
set -euo pipefail

PACKAGES=(ceph-mon ceph-osd radosgw)
BINARIES=(ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool)

log() { echo "ceph-s3: $*" >&2; }
die() { log "error: $*"; exit 1; }

# On a failed start: kill what was started; keep DIR (for its logs) only if CEPH_S3_KEEP_ON_FAILURE=1.
on_start_exit() {
  local rc=$?
  [ "$rc" -eq 0 ] && return 0
  [ -n "${DIR:-}" ] && [ -f "$DIR/pids" ] || return 0
  local p
  while read -r p; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null; done <"$DIR/pids" || true
  kill_watchdog "$DIR"
  if [ "${CEPH_S3_KEEP_ON_FAILURE:-0}" = 1 ]; then
    log "start failed; daemons killed, logs kept in $DIR/log"
  else
    local f
    for f in "$DIR"/log/*; do
      [ -s "$f" ] || continue
      log "---- last lines of $(basename "$f")"
      tail -n 15 "$f" >&2 || true
    done
    log "start failed; daemons killed, $DIR removed (CEPH_S3_KEEP_ON_FAILURE=1 keeps it)"
    rm -rf "$DIR"
  fi
}

cmd_install() {
  local missing=0 b
  for b in "${BINARIES[@]}"; do command -v "$b" >/dev/null 2>&1 || missing=1; done
  if [ "$missing" -eq 0 ]; then return 0; fi
  [ "$(id -u)" -eq 0 ] || die "Ceph is not installed and installing it needs root: sudo apt-get install -y --no-install-recommends ${PACKAGES[*]}"
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install ${PACKAGES[*]} (Ceph 16+) by hand"
  export DEBIAN_FRONTEND=noninteractive
  log "+ apt-get install -y --no-install-recommends ${PACKAGES[*]}"
  if ! apt-get install -y --no-install-recommends "${PACKAGES[@]}" >&2; then
    log "+ apt-get update (install failed with the current package lists)"
    apt-get update >&2
    apt-get install -y --no-install-recommends "${PACKAGES[@]}" >&2
  fi
  for b in "${BINARIES[@]}"; do command -v "$b" >/dev/null 2>&1 || die "$b still missing after installing ${PACKAGES[*]}"; done
}

# A TCP port on 127.0.0.1 that nothing listens on now (random, checked by connecting).
# Below the kernel's ephemeral range when there is room: a port there can be the local end of
# any outgoing connection, which a connect test does not see and which makes a daemon's bind fail
# ("Address already in use": the monitor gives up after three tries, and the OSD's mkfs then
# waits for it forever).
free_port() {
  local p i low=32768 span
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  span=$(( low > 21000 ? low - 20000 : 30000 ))
  for i in $(seq 1 200); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % span ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  die "no free port found"
}

# Launch a daemon in the foreground of its own session, detached from our stdio; echo its pid.
launch() {
  local name=$1; shift
  setsid "$@" </dev/null >>"$DIR/log/$name.out" 2>&1 &
  local pid=$!
  echo "$pid" >>"$DIR/pids"
  echo "$pid"
}

alive_or_die() { # pid name
  kill -0 "$1" 2>/dev/null || die "$2 exited during startup"
}

cmd_start() {
  DIR=${1:?usage: ceph-s3.sh start DIR}
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  [ -z "$(ls -A "$DIR")" ] || die "$DIR is not empty"
  trap on_start_exit EXIT
  local t0=$SECONDS
  local mem_bytes=${CEPH_MEMSTORE_BYTES:-$((3 * 1024 * 1024 * 1024))}
  local access=${CEPH_S3_ACCESS_KEY:-OUTPOSTTESTACCESSKEY}
  local secret=${CEPH_S3_SECRET_KEY:-outpost-test-secret-key-0123456789abcdef}
  local timeout=${CEPH_S3_TIMEOUT:-120}
  local fsid mon_port rgw_port
  fsid=$(cat /proc/sys/kernel/random/uuid)
  mon_port=$(free_port)
  rgw_port=$(free_port)
  while [ "$rgw_port" = "$mon_port" ]; do rgw_port=$(free_port); done
  mkdir -p "$DIR/mon/a" "$DIR/osd/0" "$DIR/rgw" "$DIR/log" "$DIR/run"
  : >"$DIR/pids"
  if [ -n "${CEPH_S3_OWNER_PID:-}" ]; then
    # Polls the owner once a second; when it is gone (even SIGKILLed), runs `stop DIR`.
    local self
    self=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
    setsid bash -c 'while kill -0 "$1" 2>/dev/null && [ -d "$2" ]; do sleep 1; done; [ -d "$2" ] && exec bash "$3" stop "$2"' \
      ceph-s3-watchdog "$CEPH_S3_OWNER_PID" "$DIR" "$self" </dev/null >/dev/null 2>&1 &
    echo "$!" >"$DIR/watchdog.pid"
  fi

  # auth = none: the cluster is private to this machine and this run; S3 requests are still
  # signed and checked by the gateway (SigV4 against the user's keys), which is what tests need.
  cat >"$DIR/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind msgr2 = true
auth cluster required = none
auth service required = none
auth client required = none
# With auth none there is no session key, so "secure" connection mode is impossible; radosgw
# asks for it towards the monitor by default and then fails with EACCES (-13). Use crc throughout.
ms cluster mode = crc
ms service mode = crc
ms client mode = crc
ms mon cluster mode = crc
ms mon service mode = crc
ms mon client mode = crc
keyring = $DIR/keyring
run dir = $DIR/run
# No admin sockets: unix socket paths are limited to 107 bytes and a long TMPDIR would break them.
admin socket =
pid file = $DIR/run/\$name.pid
log file = $DIR/log/\$name.log
log to stderr = false
err to stderr = true
mon cluster log file = $DIR/log/cluster.log
crash dir = $DIR/crash
# One OSD: pools of size 1, few placement groups, no host-level replication.
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
# Don't mark the only OSD out/down for being quiet, and no mgr is a known state here.
mon osd down out interval = 0
mon osd report timeout = 3600
osd heartbeat grace = 3600
mgr initial modules =
# The monitor batches map changes for 1 s by default; each pool radosgw creates costs a round.
paxos propose interval = 0.05
paxos min wait = 0.01

[mon]
mon data = $DIR/mon/\$id

[osd]
osd data = $DIR/osd/\$id
osd objectstore = memstore
memstore device bytes = $mem_bytes
osd op num shards = 2
osd op num threads per shard = 1

[client]
rgw data = $DIR/rgw
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw enable usage log = false
rgw enable ops log = false
rgw thread pool size = 64
EOF
  : >"$DIR/keyring"
  unset CEPH_ARGS CEPH_KEYRING
  export CEPH_CONF="$DIR/ceph.conf"

  log "monitor on 127.0.0.1:$mon_port"
  monmaptool --create --clobber --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$DIR/monmap" >/dev/null
  ceph-mon --mkfs -i a --monmap "$DIR/monmap" >>"$DIR/log/mon.a.out" 2>&1 || die "ceph-mon --mkfs failed"
  local mon_pid
  mon_pid=$(launch mon.a ceph-mon -f -i a)

  # The OSD's identity and store can be made while the monitor starts.
  local osd_uuid
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  # mkfs waits for the monitor; one that did not come up must not hang the start.
  timeout "$timeout" ceph-osd --mkfs -i 0 --osd-uuid "$osd_uuid" >>"$DIR/log/osd.0.out" 2>&1 || { alive_or_die "$mon_pid" mon.a; die "ceph-osd --mkfs failed"; }
  alive_or_die "$mon_pid" mon.a

  local osd_id
  osd_id=$(ceph --connect-timeout 30 osd new "$osd_uuid" 0 2>>"$DIR/log/client.out") || { alive_or_die "$mon_pid" mon.a; die "ceph osd new failed"; }
  [ "$osd_id" = 0 ] || die "expected OSD id 0, got '$osd_id'"
  local osd_pid
  osd_pid=$(launch osd.0 ceph-osd -f -i 0)
  log "OSD started (memstore, $mem_bytes bytes)"

  # Start the gateway only once the OSD is up and placed in the CRUSH map: a gateway that creates
  # its first pool while the OSD is still booting stalls ~5 s on its first write.
  local deadline=$((SECONDS + timeout))
  until grep -q 'state: booting -> active' "$DIR/log/osd.0.log" 2>/dev/null; do
    alive_or_die "$mon_pid" mon.a
    alive_or_die "$osd_pid" osd.0
    [ "$SECONDS" -lt "$deadline" ] || die "the OSD did not boot within ${timeout}s"
    sleep 0.1
  done

  local rgw_pid
  rgw_pid=$(launch client.rgw radosgw -f -n client.rgw)
  log "gateway on 127.0.0.1:$rgw_port"

  # Ready when the gateway answers HTTP (it does so only after its pools and zone exist). Its
  # port was free when chosen, but another process (a parallel test's server) may take it before
  # the gateway binds: then it exits saying so, and starts again on another port, a few times.
  local code rgw_tries=0
  while :; do
    alive_or_die "$mon_pid" mon.a
    alive_or_die "$osd_pid" osd.0
    if ! kill -0 "$rgw_pid" 2>/dev/null && [ "$rgw_tries" -lt 3 ] && grep -q 'failed to bind address' "$DIR/log/client.rgw.log" 2>/dev/null; then
      rgw_tries=$((rgw_tries + 1))
      rgw_port=$(free_port)
      sed -i "s|^rgw frontends = .*|rgw frontends = beast endpoint=127.0.0.1:$rgw_port|" "$DIR/ceph.conf"
      : >"$DIR/log/client.rgw.log"
      rgw_pid=$(launch client.rgw radosgw -f -n client.rgw)
      log "gateway port was taken; again on 127.0.0.1:$rgw_port"
      continue
    fi
    alive_or_die "$rgw_pid" client.rgw
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$rgw_port/" 2>/dev/null || true)
    case "$code" in 2??|403) break ;; esac
    [ "$SECONDS" -lt "$deadline" ] || die "gateway did not answer within ${timeout}s"
    sleep 0.2
  done

  radosgw-admin user create --uid=outpost-test --display-name="Outpost tests" \
    --access-key="$access" --secret="$secret" >>"$DIR/log/client.out" 2>&1 \
    || die "radosgw-admin user create failed"

  local pids="$mon_pid,$osd_pid,$rgw_pid"
  log "ready in $((SECONDS - t0))s"
  printf '{"endpoint":"http://127.0.0.1:%s","accessKeyId":"%s","secretAccessKey":"%s","region":"us-east-1","pids":[%s]}\n' \
    "$rgw_port" "$access" "$secret" "$pids"
}

# True if pid is a live ceph-mon, ceph-osd or radosgw started for DIR (its environment has
# CEPH_CONF=DIR/ceph.conf): a recycled pid, or another cluster's daemon, is never killed.
is_ours() { # pid dir
  local cmd
  cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  case "$cmd" in *ceph-mon*|*ceph-osd*|*radosgw*) ;; *) return 1 ;; esac
  tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | grep -qxF "CEPH_CONF=$2/ceph.conf"
}

kill_watchdog() { # dir
  local p
  [ -f "$1/watchdog.pid" ] || return 0
  p=$(cat "$1/watchdog.pid")
  if [ -n "$p" ] && [ "$p" != "$$" ] && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q ceph-s3-watchdog; then
    kill "$p" 2>/dev/null || true
  fi
}

cmd_stop() {
  local dir=${1:?usage: ceph-s3.sh stop DIR}
  [ -d "$dir" ] || return 0
  dir=$(cd "$dir" && pwd)
  [ -f "$dir/ceph.conf" ] || [ -f "$dir/pids" ] || die "$dir does not look like a ceph-s3 directory; not removing it"
  local pids=() p i
  if [ -f "$dir/pids" ]; then
    while read -r p; do [ -n "$p" ] && is_ours "$p" "$dir" && pids+=("$p"); done <"$dir/pids" || true
  fi
  if [ "${#pids[@]}" -gt 0 ]; then
    # The store is in memory and thrown away: no need for a clean shutdown.
    kill -KILL "${pids[@]}" 2>/dev/null || true
    for i in $(seq 1 50); do
      local left=0
      for p in "${pids[@]}"; do is_ours "$p" "$dir" && left=1; done
      [ "$left" -eq 0 ] && break
      sleep 0.1
    done
  fi
  kill_watchdog "$dir"
  rm -rf "$dir"
}

case "${1:-}" in
  install) cmd_install ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  *) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2 ;;
esac
