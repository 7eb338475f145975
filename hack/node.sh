#!/usr/bin/env bash
# A real Kubernetes node for Mendel's end-to-end tests: kubelet v1.20.2 + containerd + runc.
#
# The local control plane (hack/control-plane.sh) has no kubelet, so its Pods never run. This
# script adds one real node to a running plane: kubelet built from the plane's own source tree
# (same version stamps), containerd and runc from Debian, a CNI bridge `mendel0` on
# 10.244.0.0/24, and a pause image compiled from the tree's build/pause/linux/pause.c and
# written as a docker-archive without any image builder. No registry is involved: images are
# imported into containerd and Pods use imagePullPolicy IfNotPresent or Never.
# See docs/control-plane.md, "A real node".
#
#   hack/node.sh install                      packages, kubelet, pause image (cached, idempotent)
#   hack/node.sh start PLANE_DIR NODE_DIR     start a node on the plane in PLANE_DIR; state in NODE_DIR
#   hack/node.sh import NODE_DIR ARCHIVE...   import image archives (docker or OCI) into the node
#   hack/node.sh stop NODE_DIR                stop it and remove everything it left on the host
#   hack/node.sh status [NODE_DIR]            installed or not (exit 0 when ready to start)
#   hack/node.sh leftovers NODE_DIR           list host state a stopped node left (exit 1 if any)
#   hack/node.sh image-archive OUT TAG ENTRYPOINT USER SRC:DEST...
#                                             write a one-layer docker-archive of static files
#
# Needs root: containerd, runc, mounts and the bridge all do. One node per machine at a time
# (the bridge name and the node name `localhost` are fixed).
#
# Environment:
#   MENDEL_K8S_CACHE        the plane's cache root; kubelet goes to its bin/, the pause image
#                           to its node/ (default ${XDG_CACHE_HOME:-$HOME/.cache}/mendel/k8s-1.20.2)
#   MENDEL_START_TIMEOUT    seconds to wait for each step of start (default 120)
#   MENDEL_STOP_TIMEOUT     seconds between SIGTERM and SIGKILL on stop (default 10)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE
readonly PLANE_SCRIPT=$HERE/control-plane.sh
readonly K8S_VERSION=1.20.2
readonly APT_PACKAGES=(containerd runc containernetworking-plugins iproute2 gcc libc6-dev python3 curl)
readonly CNI_BIN_DIR=/usr/lib/cni
readonly BRIDGE=mendel0
readonly POD_SUBNET=10.244.0.0/24
readonly POD_GATEWAY=10.244.0.1
readonly NODE_NAME=localhost
# Bump when the pause image's build changes: the archive is rebuilt when its key differs.
readonly PAUSE_REV=1

CACHE=${MENDEL_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mendel/k8s-${K8S_VERSION}}
BIN=$CACHE/bin
NODE_CACHE=$CACHE/node
TREE=$CACHE/src/kubernetes-$K8S_VERSION
PAUSE_ARCHIVE=$NODE_CACHE/pause.docker.tar

log() { printf '[node] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

need_root() { [[ $EUID -eq 0 ]] || die "$1 needs root (containerd, runc, mounts and the $BRIDGE bridge)"; }

pause_key() { # the pause image's cache key: the tree's pause.c, its TAG and our build revision
  echo "$(sha256sum <"$TREE/build/pause/linux/pause.c" | cut -d' ' -f1) $(pause_tag) rev$PAUSE_REV"
}
pause_tag() { echo "localhost/pause:$(awk '$1 == "TAG" { print $3 }' "$TREE/build/pause/Makefile")"; }
cached_pause_tag() { cat "$NODE_CACHE/pause.tag" 2>/dev/null; }

is_installed() {
  [[ -x $BIN/kubelet ]] && bash "$PLANE_SCRIPT" status >/dev/null 2>&1 \
    && bash "$PLANE_SCRIPT" status-kubelet >/dev/null 2>&1 \
    && [[ -s $PAUSE_ARCHIVE && -s $NODE_CACHE/pause.tag ]] \
    && command -v containerd >/dev/null && command -v ctr >/dev/null && command -v runc >/dev/null \
    && [[ -x $CNI_BIN_DIR/bridge && -x $CNI_BIN_DIR/host-local && -x $CNI_BIN_DIR/loopback ]] \
    && command -v ip >/dev/null && command -v python3 >/dev/null && command -v curl >/dev/null
}

# ---------------------------------------------------------------------------- image archive

# write_archive OUT TAG ENTRYPOINT USER SRC:DEST... : a docker-archive (`docker save` layout:
# manifest.json, a config JSON, one layer tar) holding the given files, executable, owned by
# root. `ctr images import` reads it; no image builder or daemon is needed. Deterministic
# (mtime 0), so the same inputs give the same image ID.
write_archive() {
  python3 - "$@" <<'EOF'
import hashlib, io, json, os, platform, sys, tarfile

out, tag, entrypoint, user, *files = sys.argv[1:]
if not files:
    sys.exit("image-archive: no SRC:DEST files given")

def member(name, data=b"", mode=0o755, kind=tarfile.REGTYPE):
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.type = len(data), mode, 0, kind
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info, io.BytesIO(data)

layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
    dirs = set()
    for spec in files:
        src, sep, dest = spec.partition(":")
        if not sep or not dest.startswith("/"):
            sys.exit(f"image-archive: {spec!r}: expected SRC:/absolute/dest")
        parts = dest.strip("/").split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.add(d)
                tar.addfile(*member(d + "/", kind=tarfile.DIRTYPE))
        with open(src, "rb") as f:
            tar.addfile(*member("/".join(parts), f.read()))
layer_bytes = layer.getvalue()
diff_id = hashlib.sha256(layer_bytes).hexdigest()
arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
config = {
    "architecture": arch,
    "os": "linux",
    "created": "1970-01-01T00:00:00Z",
    "config": {"Entrypoint": [entrypoint], "User": user, "Env": ["PATH=/"]},
    "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
    "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "hack/node.sh image-archive"}],
}
config_bytes = json.dumps(config, sort_keys=True).encode()
config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [f"{diff_id}/layer.tar"]}]
tmp = f"{out}.tmp{os.getpid()}"
with tarfile.open(tmp, mode="w", format=tarfile.USTAR_FORMAT) as tar:
    tar.addfile(*member(config_name, config_bytes, 0o644))
    tar.addfile(*member(diff_id + "/", kind=tarfile.DIRTYPE))
    tar.addfile(*member(f"{diff_id}/layer.tar", layer_bytes, 0o644))
    tar.addfile(*member("manifest.json", json.dumps(manifest).encode(), 0o644))
os.replace(tmp, out)
print(f"{out}: {tag}, image id sha256:{config_name[:-5]}")
EOF
}

cmd_image_archive() {
  [[ $# -ge 5 ]] || die "usage: $0 image-archive OUT TAG ENTRYPOINT USER SRC:DEST..."
  write_archive "$@"
}

# --------------------------------------------------------------------------------- install

install_packages() {
  local t0; t0=$(now)
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    [[ $EUID -eq 0 ]] || die "need root to apt-get install ${missing[*]}"
    # Wait for another apt (a parallel setup) instead of failing on its lock.
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
      --no-install-recommends "${missing[@]}" >/dev/null
    log "installed ${missing[*]} ($(since "$t0") s)"
  fi
}

build_pause() {
  local t0; t0=$(now)
  [[ -f $TREE/build/pause/linux/pause.c ]] || die "no $TREE/build/pause/linux/pause.c: run '$PLANE_SCRIPT install'"
  local key; key=$(pause_key)
  if [[ -s $PAUSE_ARCHIVE && $(cat "$NODE_CACHE/pause.key" 2>/dev/null) == "$key" ]]; then return 0; fi
  mkdir -p "$NODE_CACHE"
  rm -f "$NODE_CACHE/pause.key"
  local tag; tag=$(pause_tag)
  # As the tree's build/pause/Makefile does, minus the cross-compiling container.
  gcc -Os -Wall -Werror -static -DVERSION="${tag##*:}-mendel" \
    -o "$NODE_CACHE/pause" "$TREE/build/pause/linux/pause.c"
  strip "$NODE_CACHE/pause"
  write_archive "$PAUSE_ARCHIVE" "$tag" /pause 65535:65535 "$NODE_CACHE/pause:/pause" >/dev/null
  echo "$tag" >"$NODE_CACHE/pause.tag"
  echo "$key" >"$NODE_CACHE/pause.key"
  log "pause image $tag written to $PAUSE_ARCHIVE ($(since "$t0") s)"
}

cmd_install() {
  local t0; t0=$(now)
  bash "$PLANE_SCRIPT" install
  install_packages
  bash "$PLANE_SCRIPT" install-kubelet
  build_pause
  is_installed || die "install finished but the node is incomplete (see '$0 status')"
  log "node installed ($(since "$t0") s)"
}

# ----------------------------------------------------------------------------------- start

free_ports() { # N -> N distinct free loopback ports, one per line
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# launch NAME ARGV... : start a component in the background, record its pid in DIR/pids.
launch() {
  local name=$1; shift
  "$@" >"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo "$name $!" >>"$DIR/pids"
}

alive() {
  local pid; pid=$(awk -v n="$1" '$1 == n { print $2 }' "$DIR/pids")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

fail_start() { log "error: $*"; exit 1; } # the EXIT trap set by start cleans up

# wait_until NAME WHAT COMMAND... : run COMMAND until it succeeds; fail if NAME dies or time runs out.
wait_until() {
  local name=$1 what=$2; shift 2
  local deadline=$((SECONDS + ${MENDEL_START_TIMEOUT:-120}))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$name"; then
      tail -n 40 "$DIR/logs/$name.log" >&2 || true
      fail_start "$name exited while waiting for $what (log: $DIR/logs/$name.log)"
    fi
    if ((SECONDS > deadline)); then
      tail -n 40 "$DIR/logs/$name.log" >&2 || true
      fail_start "timed out after ${MENDEL_START_TIMEOUT:-120} s waiting for $what (log: $DIR/logs/$name.log)"
    fi
    sleep 0.5
  done
}

api() { # METHOD PATH [CURL-ARGS...] : call the plane's API server as admin
  local method=$1 path=$2; shift 2
  curl -fsSk --max-time 10 -X "$method" -H "Authorization: Bearer $API_TOKEN" "$@" "$API_SERVER$path"
}

node_ready() {
  api GET "/api/v1/nodes/$NODE_NAME" | python3 -c '
import json, sys
node = json.load(sys.stdin)
conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
sys.exit(0 if conds.get("Ready") == "True" else 1)'
}

# No node-lifecycle controller runs on the plane, so the not-ready taint that admission puts
# on every new Node is never lifted: lift it once the Node is Ready.
untaint_node() {
  local patch
  patch=$(api GET "/api/v1/nodes/$NODE_NAME" | python3 -c '
import json, sys
taints = json.load(sys.stdin)["spec"].get("taints") or []
keep = [t for t in taints if t["key"] != "node.kubernetes.io/not-ready"]
print(json.dumps([{"op": "test", "path": "/spec/taints", "value": taints},
                  {"op": "replace", "path": "/spec/taints", "value": keep}] if taints != keep else []))')
  [[ $patch == "[]" ]] && return 0
  api PATCH "/api/v1/nodes/$NODE_NAME" -H 'Content-Type: application/json-patch+json' -d "$patch" >/dev/null
}

write_containerd_config() {
  local tag=$1
  cat >"$DIR/containerd.toml" <<EOF
# Written by hack/node.sh: containerd for one test node, all state under this directory.
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"

[grpc]
  address = "$DIR/containerd/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$tag"
  # The CRI asks runc for oom_score_adj -998 on the pause container; lowering it needs
  # CAP_SYS_RESOURCE, which a container or VM often lacks ("can't get final child's PID").
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$DIR/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$DIR/runc"
EOF
  cat >"$DIR/cni/net.d/10-mendel.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "mendel",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_SUBNET", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
}

# What the host looked like before this node, so that stop removes only what the node added.
record_host_state() {
  {
    echo "ip_forward $(cat /proc/sys/net/ipv4/ip_forward)"
    local p
    for p in /run/netns /var/log/pods /var/log/containers; do
      [[ -d $p ]] && find "$p" -mindepth 1 -maxdepth 1 -printf "existing %p\n"
    done
    for p in /run/netns /var/log/pods /var/log/containers /var/lib/kubelet /run/containerd \
      /sys/fs/cgroup/memory/kubepods /sys/fs/cgroup/kubepods; do
      [[ -e $p ]] || echo "created $p"
    done
  } >"$DIR/host-state"
}

cmd_start() {
  [[ $# -eq 2 ]] || die "usage: $0 start PLANE_DIR NODE_DIR"
  need_root start
  is_installed || die "the node is not installed: run '$0 install' first"
  local plane; plane=$(cd "$1" 2>/dev/null && pwd) || die "no plane directory $1"
  [[ -f $plane/plane.env && -s $plane/pids ]] \
    || die "no running plane in $plane: start one with '$PLANE_SCRIPT start $plane'"
  API_SERVER=$(sed -n 's/^MENDEL_K8S_SERVER=//p' "$plane/plane.env")
  API_TOKEN=$(sed -n 's/^MENDEL_K8S_TOKEN=//p' "$plane/plane.env")
  local api_port=${API_SERVER##*:}
  mkdir -p "$2"
  DIR=$(cd "$2" && pwd)
  [[ -s $DIR/pids ]] && die "$DIR/pids exists: a node may be running there; run '$0 stop $DIR' first"
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    die "the bridge $BRIDGE exists: another node is running, or one was not stopped ('$0 stop NODE_DIR'; or 'ip link del $BRIDGE')"
  fi
  # Never rm -rf into the mounts of a node that was not stopped cleanly.
  if awk -v d="$DIR" 'index($5, d "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
    die "mounts under $DIR remain from an earlier node: run '$0 stop $DIR' first"
  fi
  local t0; t0=$(now)
  rm -rf "$DIR/containerd" "$DIR/kubelet" "$DIR/cni" "$DIR/runc" "$DIR/logs"
  mkdir -p "$DIR/logs" "$DIR/cni/net.d" "$DIR/containerd" "$DIR/kubelet"
  : >"$DIR/pids"
  record_host_state
  # Whatever fails from here on (set -e included), undo what was done so far.
  trap 'log "start failed; cleaning up"; cmd_stop "$DIR" || true' EXIT
  local tag; tag=$(cached_pause_tag)
  write_containerd_config "$tag"

  # Made here, not by the bridge plugin on the first Pod, so that a server on the host can
  # listen on the Pods' gateway before any Pod exists.
  ip link add "$BRIDGE" type bridge
  echo "link $BRIDGE" >>"$DIR/host-state"
  ip addr add "$POD_GATEWAY/${POD_SUBNET#*/}" dev "$BRIDGE"
  ip link set "$BRIDGE" up

  local sock=$DIR/containerd/containerd.sock
  launch containerd containerd --config "$DIR/containerd.toml"
  wait_until containerd "containerd at $sock" ctr -a "$sock" version
  log "containerd ready ($(since "$t0") s)"
  ctr -a "$sock" -n k8s.io images import "$PAUSE_ARCHIVE" >/dev/null \
    || fail_start "importing $PAUSE_ARCHIVE failed"

  # A Node left by an earlier node on this plane still says Ready: start from none.
  api DELETE "/api/v1/nodes/$NODE_NAME" -o /dev/null 2>/dev/null || true
  local -a ports; mapfile -t ports < <(free_ports 2)
  local kubelet_port=${ports[0]} healthz_port=${ports[1]}
  # --hostname-override=localhost: the apiserver reaches the kubelet (logs, exec) at the
  # Node's Hostname address, i.e. 127.0.0.1. No swap check, no disk-pressure eviction or
  # image GC: a test machine's disk is often fuller than a real node's. No iptables chains
  # (KUBE-FIREWALL & co. are for kube-proxy, which does not run here, and would outlive us).
  # Status every 2 s: the Node turns Ready on the second status update, 10 s later by default.
  launch kubelet "$BIN/kubelet" \
    --kubeconfig "$plane/kubeconfig" \
    --container-runtime=remote --container-runtime-endpoint="unix://$sock" \
    --runtime-request-timeout=2m --cgroup-driver=cgroupfs --fail-swap-on=false \
    --root-dir "$DIR/kubelet" --cert-dir "$DIR/kubelet/pki" \
    --volume-plugin-dir "$DIR/kubelet/volume-plugins" \
    --hostname-override="$NODE_NAME" --address=127.0.0.1 --port="$kubelet_port" \
    --healthz-bind-address=127.0.0.1 --healthz-port="$healthz_port" --read-only-port=0 \
    --max-pods=20 --image-gc-high-threshold=100 --eviction-hard= \
    --make-iptables-util-chains=false --node-status-update-frequency=2s \
    --node-labels=mendel.dev/real-node=true --v=1
  wait_until kubelet "kubelet healthz" curl -fs --max-time 2 "http://127.0.0.1:$healthz_port/healthz"
  log "kubelet healthy ($(since "$t0") s)"
  wait_until kubelet "Node $NODE_NAME Ready" node_ready
  untaint_node || fail_start "could not remove the not-ready taint from Node $NODE_NAME"

  cat >"$DIR/node.env" <<EOF
NODE_NAME=$NODE_NAME
POD_GATEWAY=$POD_GATEWAY
POD_SUBNET=$POD_SUBNET
CONTAINERD_SOCKET=$sock
API_HOST=127.0.0.1
API_PORT=$api_port
KUBELET_PORT=$kubelet_port
PAUSE_IMAGE=$tag
PLANE_DIR=$plane
EOF
  trap - EXIT
  log "node $NODE_NAME Ready in $(since "$t0") s (logs: $DIR/logs)"
  echo "$DIR/node.env"
}

# ---------------------------------------------------------------------------------- import

cmd_import() {
  [[ $# -ge 2 ]] || die "usage: $0 import NODE_DIR ARCHIVE..."
  local dir; dir=$(cd "$1" 2>/dev/null && pwd) || die "no node directory $1"
  shift
  local sock=$dir/containerd/containerd.sock a t0
  [[ -S $sock ]] || die "no containerd socket at $sock: start the node with '$0 start PLANE_DIR $dir'"
  for a in "$@"; do
    [[ -f $a ]] || die "no image archive $a"
    t0=$(now)
    ctr -a "$sock" -n k8s.io images import "$a" >/dev/null || die "ctr images import $a failed"
    log "imported $a ($(since "$t0") s)"
  done
}

# ------------------------------------------------------------------------------------ stop

# our_pid PID : true when PID is alive and its command line names this node's directory.
our_pid() { [[ -r /proc/$1/cmdline ]] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$dir/"; }

term_and_wait() { # NAME PID
  kill -TERM "$2" 2>/dev/null || true
  local deadline=$((SECONDS + ${MENDEL_STOP_TIMEOUT:-10}))
  while kill -0 "$2" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "$1 (pid $2) ignored SIGTERM; sending SIGKILL"
      kill -KILL "$2" 2>/dev/null || true
      sleep 0.2
      break
    fi
    sleep 0.1
  done
}

# Kill every container of ours through containerd while it still runs: the shims then unmount
# the rootfs and exit. Processes left in the node's cgroups afterwards are killed directly.
kill_containers() {
  local sock=$dir/containerd/containerd.sock id
  if [[ -S $sock ]] && ctr -a "$sock" version >/dev/null 2>&1; then
    for id in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -a "$sock" -n k8s.io tasks rm -f "$id" >/dev/null 2>&1 || true
    done
  fi
}

created() { grep -qxF "created $1" "$dir/host-state" 2>/dev/null; }

# The kubepods cgroups exist only because of this node (recorded at start): kill what is left
# in them, then remove them, deepest first.
clean_cgroups() {
  local root pid
  for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d $root ]] || continue
    created /sys/fs/cgroup/memory/kubepods || created /sys/fs/cgroup/kubepods || continue
    find "$root" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r pid; do
      kill -KILL "$pid" 2>/dev/null || true
    done
    find "$root" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [[ -d $root ]] && log "warning: could not remove cgroup $root"
  done
  return 0
}

unmount_under() { # unmount every mount point at or below $1, deepest first
  local mp
  awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo \
    | sort -r | while read -r mp; do
        mp=${mp//\\040/ }
        umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || log "warning: could not unmount $mp"
      done
}

clean_host() {
  local p
  [[ -f $dir/host-state ]] || return 0
  # Network namespaces the CRI made for our Pods: unmounting them also removes their veths.
  for p in /run/netns/cni-*; do
    [[ -e $p ]] || continue
    grep -qxF "existing $p" "$dir/host-state" && continue
    umount "$p" 2>/dev/null || umount -l "$p" 2>/dev/null || true
    rm -f "$p"
  done
  if created /run/netns; then rmdir /run/netns 2>/dev/null || true; fi
  if grep -qxF "link $BRIDGE" "$dir/host-state" && ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link del "$BRIDGE"
  fi
  local fwd; fwd=$(awk '$1 == "ip_forward" { print $2 }' "$dir/host-state")
  [[ -n $fwd ]] && echo "$fwd" >/proc/sys/net/ipv4/ip_forward
  # Pod logs: the kubelet writes them to fixed host paths.
  for p in /var/log/containers/* /var/log/pods/*; do
    [[ -e $p || -L $p ]] || continue
    grep -qxF "existing $p" "$dir/host-state" || rm -rf "$p"
  done
  if created /var/log/containers; then rmdir /var/log/containers 2>/dev/null || true; fi
  if created /var/log/pods; then rmdir /var/log/pods 2>/dev/null || true; fi
  # The device-plugin socket path is fixed in 1.20 (/var/lib/kubelet/device-plugins/).
  if created /var/lib/kubelet; then rm -rf /var/lib/kubelet; fi
  # containerd's shims put their sockets under /run/containerd/s whatever the state dir.
  if created /run/containerd && [[ -d /run/containerd ]]; then
    rmdir /run/containerd/s 2>/dev/null || true
    rmdir /run/containerd 2>/dev/null || log "warning: /run/containerd not empty"
  fi
  clean_iptables
  return 0
}

# The bridge plugin adds NAT chains only with ipMasq, which the conflist turns off; remove any
# that name our network anyway (a changed conflist, an older plugin).
clean_iptables() {
  command -v iptables-save >/dev/null || return 0
  local rule chain
  { iptables-save -t nat 2>/dev/null || true; } | { grep -F 'name: \"mendel\"' || true; } \
    | { grep '^-A POSTROUTING' || true; } | while read -r rule; do
        eval "iptables -t nat -D ${rule#-A }" 2>/dev/null || true
      done
  for chain in $(iptables-save -t nat 2>/dev/null | awk '/^:CNI-/ { print substr($1, 2) }'); do
    iptables-save -t nat | grep -q -- "-j $chain\b" && continue
    iptables -t nat -F "$chain" 2>/dev/null && iptables -t nat -X "$chain" 2>/dev/null || true
  done
}

# Remove the Node object too, if the plane still runs, so that it does not stay Ready for ever.
delete_node() {
  local plane; plane=$(sed -n 's/^PLANE_DIR=//p' "$dir/node.env" 2>/dev/null)
  [[ -n $plane && -f $plane/plane.env ]] || return 0
  API_SERVER=$(sed -n 's/^MENDEL_K8S_SERVER=//p' "$plane/plane.env")
  API_TOKEN=$(sed -n 's/^MENDEL_K8S_TOKEN=//p' "$plane/plane.env")
  api DELETE "/api/v1/nodes/$NODE_NAME" --max-time 3 -o /dev/null 2>/dev/null || true
}

cmd_stop() {
  [[ $# -eq 1 ]] || die "usage: $0 stop NODE_DIR"
  local dir; dir=$(cd "$1" 2>/dev/null && pwd) || { log "nothing to stop: no $1"; return 0; }
  local t0; t0=$(now)
  if [[ ! -s $dir/pids && ! -f $dir/host-state ]]; then
    log "nothing to stop in $dir"; return 0
  fi
  need_root stop
  local kubelet_pid containerd_pid
  kubelet_pid=$(awk '$1 == "kubelet" { print $2 }' "$dir/pids" 2>/dev/null)
  containerd_pid=$(awk '$1 == "containerd" { print $2 }' "$dir/pids" 2>/dev/null)
  # kubelet first, or it restarts the containers we are about to kill.
  [[ -n $kubelet_pid ]] && our_pid "$kubelet_pid" && term_and_wait kubelet "$kubelet_pid"
  kill_containers
  [[ -n $containerd_pid ]] && our_pid "$containerd_pid" && term_and_wait containerd "$containerd_pid"
  # Shims that outlived containerd (they are started with -address naming our socket).
  local pid
  for pid in $(pgrep -f containerd-shim 2>/dev/null); do
    our_pid "$pid" && kill -KILL "$pid" 2>/dev/null || true
  done
  clean_cgroups
  unmount_under "$dir"
  delete_node
  clean_host
  rm -f "$dir/pids" "$dir/host-state" "$dir/node.env"
  log "stopped node in $dir ($(since "$t0") s)"
}

# ------------------------------------------------------------------------------- leftovers

cmd_leftovers() {
  [[ $# -eq 1 ]] || die "usage: $0 leftovers NODE_DIR"
  local dir; dir=$(cd "$1" 2>/dev/null && pwd) || die "no node directory $1"
  local found=0 pid
  ip link show "$BRIDGE" >/dev/null 2>&1 && { echo "link $BRIDGE"; found=1; }
  while read -r mp; do echo "mount $mp"; found=1; done < <(
    awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo)
  for pid in $(pgrep -f "$dir/" 2>/dev/null); do
    [[ $pid == "$$" ]] && continue
    our_pid "$pid" && { echo "process $pid $(tr '\0' ' ' <"/proc/$pid/cmdline")"; found=1; }
  done
  [[ -s $dir/pids ]] && { echo "file $dir/pids"; found=1; }
  [[ -d /sys/fs/cgroup/memory/kubepods ]] && { echo "cgroup /sys/fs/cgroup/memory/kubepods"; found=1; }
  local chain
  if command -v iptables-save >/dev/null; then
    for chain in $(iptables-save 2>/dev/null | awk '/^:(KUBE-|CNI-)/ { print substr($1, 2) }'); do
      echo "iptables chain $chain"; found=1
    done
  fi
  ((found == 0)) || return 1
}

# ---------------------------------------------------------------------------------- status

# report LABEL GOOD BAD COMMAND... : print "LABEL: GOOD" if COMMAND succeeds, else "LABEL: BAD".
report() {
  local label=$1 good=$2 bad=$3; shift 3
  if "$@" >/dev/null 2>&1; then echo "$label: $good"; else echo "$label: $bad"; return 1; fi
}

cmd_status() {
  local ok=0 hint="(run: $0 install)" c
  report kubelet "$BIN/kubelet" "not built $hint" bash "$PLANE_SCRIPT" status-kubelet || ok=1
  report "control plane" built "not built $hint" bash "$PLANE_SCRIPT" status || ok=1
  for c in containerd ctr runc ip python3 curl; do
    report "$c" "$(command -v "$c")" "missing $hint" command -v "$c" || ok=1
  done
  report "cni plugins" "$CNI_BIN_DIR" "missing $hint" test -x "$CNI_BIN_DIR/bridge" || ok=1
  report "pause image" "$(cached_pause_tag) in $PAUSE_ARCHIVE" "not built $hint" \
    test -s "$PAUSE_ARCHIVE" || ok=1
  if [[ $# -ge 1 ]]; then
    local dir; dir=$(cd "$1" 2>/dev/null && pwd) || die "no node directory $1"
    local name pid
    if [[ -s $dir/pids ]]; then
      while read -r name pid; do
        report "$name" "running (pid $pid)" "not running" our_pid "$pid" || true
      done <"$dir/pids"
    else
      echo "node in $dir: not started"
    fi
  fi
  return $ok
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case $cmd in
    install) cmd_install "$@" ;;
    start) cmd_start "$@" ;;
    import) cmd_import "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    leftovers) cmd_leftovers "$@" ;;
    image-archive) cmd_image_archive "$@" ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
  esac
}

main "$@"
