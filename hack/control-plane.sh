#!/usr/bin/env bash
# A real, local Kubernetes control plane for Mendel's integration tests.
#
# etcd (Debian's etcd-server) plus kube-apiserver, kube-controller-manager and kube-scheduler
# v1.20.2, built from Debian's `kubernetes` source package. No Docker, no prebuilt binaries:
# everything comes from Debian and is compiled here, once, into a cache outside the
# repository. No kubelet either, unless `install-kubelet` builds one from the same tree for
# hack/node.sh. See docs/control-plane.md.
#
#   hack/control-plane.sh install      install packages, fetch the source, build (cached)
#   hack/control-plane.sh start DIR    start a plane with all its state in DIR, print DIR/kubeconfig
#   hack/control-plane.sh stop DIR     stop the processes recorded in DIR
#   hack/control-plane.sh status       where the binaries are and whether they are built
#   hack/control-plane.sh path         print the binary directory (exit 1 if not built)
#   hack/control-plane.sh install-kubelet   also build kubelet from the same tree (for hack/node.sh)
#   hack/control-plane.sh status-kubelet    exit 0 when kubelet is built for this source
#
# Environment:
#   MENDEL_K8S_CACHE        cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/mendel/k8s-1.20.2);
#                           the binaries go to $MENDEL_K8S_CACHE/bin
#   MENDEL_START_TIMEOUT    seconds to wait for each component to become ready (default 90)
#   MENDEL_STOP_TIMEOUT     seconds between SIGTERM and SIGKILL on stop (default 10)
set -euo pipefail

readonly K8S_VERSION=1.20.2
# The only full Kubernetes source Debian ships (bookworm); later suites carry kubectl only.
readonly DEB_SUITE=bookworm
readonly ORIG_TARBALL=kubernetes_1.20.5+really1.20.2.orig.tar.gz
# The cache key: the upstream tarball, which every Debian revision of 1.20.2 shares. The
# binaries are valid for exactly this source. apt verifies the download
# against the signed Sources index; we verify it again against this pin.
readonly ORIG_SHA256=b83c0780efb182d928dc63d46488a847f161f04e40a94b96bf5247dd671ecdfc
# Bump when the build itself changes (flags, patches): the cache key is the tarball plus this.
readonly BUILD_REV=2
readonly CACHE_KEY="$ORIG_SHA256 rev$BUILD_REV"
readonly APT_PACKAGES=(golang-go etcd-server rsync golang-github-modern-go-reflect2-dev openssl curl ca-certificates)
readonly COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler)
# deployment/replicaset: Helm-installed Deployments get Pods; persistentvolume-binder: hostPath
# PersistentVolumes bind to claims (both used with the real node, hack/node.sh). The binder
# resyncs every 2 s, not 15: a claim made right after its volume binds on a resync.
readonly CONTROLLERS=job,garbagecollector,namespace,serviceaccount-token,serviceaccount,deployment,replicaset,persistentvolume-binder
# kubelet is built on demand only (hack/node.sh), with its own stamp, so that the three
# components' cache key is untouched. Bump when its build changes.
readonly KUBELET_REV=1
readonly KUBELET_KEY="$CACHE_KEY kubelet-rev$KUBELET_REV"
readonly ADMIN_TOKEN=mendel-admin-token

CACHE=${MENDEL_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mendel/k8s-${K8S_VERSION}}
BIN=$CACHE/bin
STAMP=$BIN/.cache-key
KUBELET_STAMP=$BIN/.kubelet-cache-key

log() { printf '[control-plane] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

sudo_() {
  if [[ $EUID -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root or sudo to run: $*"
  fi
}

etcd_bin() { command -v etcd 2>/dev/null || true; }

is_built() {
  [[ -f $STAMP && $(cat "$STAMP") == "$CACHE_KEY" ]] || return 1
  local c
  for c in "${COMPONENTS[@]}"; do [[ -x $BIN/$c ]] || return 1; done
}

kubelet_built() { [[ -x $BIN/kubelet && -f $KUBELET_STAMP && $(cat "$KUBELET_STAMP") == "$KUBELET_KEY" ]]; }

runtime_ready() {
  is_built && [[ -n $(etcd_bin) ]] && command -v openssl >/dev/null && command -v curl >/dev/null
}

# --------------------------------------------------------------------------------- install

install_packages() {
  local t0; t0=$(now)
  # apt-get source needs a deb-src line. The image's own sources use Signed-By, and apt
  # refuses a second entry for the same archive with a different (or no) signed-by.
  local list=/etc/apt/sources.list.d/mendel-k8s-src.list
  if [[ ! -f $list ]]; then
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $DEB_SUITE main" \
      | sudo_ tee "$list" >/dev/null
  fi
  sudo_ apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
  log "apt packages ready ($(since "$t0") s)"
}

fetch_source() {
  local t0; t0=$(now)
  mkdir -p "$CACHE/src"
  local tarball=$CACHE/src/$ORIG_TARBALL
  if [[ ! -f $tarball ]] || ! echo "$ORIG_SHA256  $tarball" | sha256sum -c --status; then
    rm -f "$tarball"
    (cd "$CACHE/src" && apt-get source --download-only -qq "kubernetes/$DEB_SUITE" >/dev/null 2>&1) \
      || die "apt-get source kubernetes/$DEB_SUITE failed (is the deb-src entry for $DEB_SUITE reachable?)"
    echo "$ORIG_SHA256  $tarball" | sha256sum -c --status \
      || die "$tarball does not match the pinned sha256 $ORIG_SHA256"
  fi
  local tree=$CACHE/src/kubernetes-$K8S_VERSION
  if [[ ! -f $tree/.mendel-unpacked ]]; then
    rm -rf "$tree"
    tar -xzf "$tarball" -C "$CACHE/src"
    [[ -d $tree/cmd/kube-apiserver ]] || die "unexpected tarball layout: no $tree/cmd/kube-apiserver"
    # vendor/ pins reflect2 v1.0.1, which faults under Go >= 1.18 (`fatal error: fault` in
    # mapiterinit on the first custom-resource create). Debian's v1.0.2 fixes it.
    local reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
    [[ -d $reflect2 ]] || die "$reflect2 missing (package golang-github-modern-go-reflect2-dev)"
    rm -rf "$tree/vendor/github.com/modern-go/reflect2"
    cp -r "$reflect2" "$tree/vendor/github.com/modern-go/reflect2"
    touch "$tree/.mendel-unpacked"
  fi
  log "source ready ($(since "$t0") s)"
}

# The 1.20 tree builds only in GOPATH mode (module mode wants go.mod updates).
go_env() {
  export GOPATH=$CACHE/gopath GOCACHE=$CACHE/go-build GO111MODULE=off GOPROXY=off GOFLAGS=
  # Prefer Debian's Go: the tree is known to build with it; a newer Go on PATH may not.
  if [[ -x /usr/lib/go/bin/go ]]; then export PATH=/usr/lib/go/bin:$PATH; fi
}

# prepare_tree: the tree at its GOPATH location, with generated files; cd's into it.
prepare_tree() {
  go_env
  local pkgdir=$GOPATH/src/k8s.io
  mkdir -p "$pkgdir"
  ln -sfn "$CACHE/src/kubernetes-$K8S_VERSION" "$pkgdir/kubernetes"
  cd "$pkgdir/kubernetes"

  local t0; t0=$(now)
  if [[ ! -f .mendel-generated ]]; then
    # A failed `make generated_files` leaves empty tool binaries under _output/ that make
    # then trusts; start from a clean _output/ and retry once.
    local try
    for try in 1 2; do
      rm -rf _output
      if make generated_files >"$CACHE/make-generated.log" 2>&1; then
        touch .mendel-generated; break
      fi
      [[ $try == 2 ]] && { tail -n 30 "$CACHE/make-generated.log" >&2; die "make generated_files failed (log: $CACHE/make-generated.log)"; }
      log "make generated_files failed; cleaning _output/ and retrying"
    done
    log "generated files ready ($(since "$t0") s)"
  fi
}

# Version stamps, as upstream's hack/lib/version.sh sets them. Both packages matter:
# component-base feeds `--version` and the apiserver's log, client-go's feeds the
# aggregator, which is what answers GET /version.
version_ldflags() {
  local ldflags="-s -w" pkg
  for pkg in client-go/pkg/version component-base/version; do
    pkg=k8s.io/kubernetes/vendor/k8s.io/$pkg
    ldflags+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=20"
    ldflags+=" -X $pkg.gitTreeState=clean"
  done
  echo "$ldflags"
}

build() {
  prepare_tree
  local t0; t0=$(now)
  local ldflags; ldflags=$(version_ldflags)
  mkdir -p "$BIN"
  rm -f "$STAMP"
  local c
  for c in "${COMPONENTS[@]}"; do
    # Build to a temporary name so that an interrupted build never leaves a broken binary.
    go build -ldflags "$ldflags" -o "$BIN/.$c.tmp" "./cmd/$c"
    mv "$BIN/.$c.tmp" "$BIN/$c"
    log "built $c (at $(since "$t0") s)"
  done
  echo "$CACHE_KEY" >"$STAMP"
}

build_kubelet() {
  prepare_tree
  local t0; t0=$(now)
  mkdir -p "$BIN"
  rm -f "$KUBELET_STAMP"
  # -p 1: kubelet's link step is memory-hungry and the machines this runs on are small.
  go build -p 1 -ldflags "$(version_ldflags)" -o "$BIN/.kubelet.tmp" ./cmd/kubelet
  mv "$BIN/.kubelet.tmp" "$BIN/kubelet"
  echo "$KUBELET_KEY" >"$KUBELET_STAMP"
  log "built kubelet ($(since "$t0") s)"
}

cmd_install() {
  local t0; t0=$(now)
  mkdir -p "$CACHE"
  # Serialise concurrent installs (two test sessions, or CI jobs sharing a cache).
  exec 9>"$CACHE/.lock"
  flock 9
  if runtime_ready; then
    log "already installed: $BIN ($(since "$t0") s)"
    return 0
  fi
  install_packages
  if ! is_built; then
    fetch_source
    (build)
  fi
  runtime_ready || die "install finished but the runtime is incomplete"
  log "installed: $BIN (total $(since "$t0") s)"
}

cmd_install_kubelet() {
  local t0; t0=$(now)
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock 9
  if kubelet_built; then
    log "kubelet already built: $BIN/kubelet ($(since "$t0") s)"
    return 0
  fi
  # The tree and Go come with the plane's install; a cache holding only bin/ needs them again.
  if [[ ! -f $CACHE/src/kubernetes-$K8S_VERSION/.mendel-unpacked ]] \
    || { [[ ! -x /usr/lib/go/bin/go ]] && ! command -v go >/dev/null; }; then
    install_packages
  fi
  fetch_source
  (build_kubelet)
  log "kubelet installed: $BIN/kubelet (total $(since "$t0") s)"
}

# ----------------------------------------------------------------------------------- start

free_ports() { # N -> N distinct free loopback ports, one per line
  if command -v python3 >/dev/null; then
    # Bind all N at once so that they are distinct, then release them for the components.
    python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))
EOF
  else
    local -a got=(); local p
    while ((${#got[@]} < $1)); do
      p=$((20000 + RANDOM % 40000))
      [[ " ${got[*]} " == *" $p "* ]] && continue
      # A refused connection means nothing listens there.
      (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
      got+=("$p")
    done
    printf '%s\n' "${got[@]}"
  fi
}

# launch NAME ARGV... : start a component in the background, record its pid in DIR/pids.
launch() {
  local name=$1; shift
  "$@" >"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo "$name $!" >>"$DIR/pids"
}

# wait_http NAME URL [CURL-ARGS...] : wait until URL answers 200, or fail with NAME's log.
wait_http() {
  local name=$1 url=$2; shift 2
  local deadline=$((SECONDS + ${MENDEL_START_TIMEOUT:-90}))
  until curl -fsk -o /dev/null --max-time 2 "$@" "$url"; do
    if ! alive "$name"; then
      tail -n 40 "$DIR/logs/$name.log" >&2 || true
      fail_start "$name exited during start-up (log: $DIR/logs/$name.log)"
    fi
    if ((SECONDS > deadline)); then
      tail -n 40 "$DIR/logs/$name.log" >&2 || true
      fail_start "$name not ready at $url after ${MENDEL_START_TIMEOUT:-90} s"
    fi
    sleep 0.2
  done
}

alive() {
  local pid; pid=$(awk -v n="$1" '$1 == n { print $2 }' "$DIR/pids")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

fail_start() { log "error: $*"; cmd_stop "$DIR" || true; exit 1; }

cmd_start() {
  [[ $# -eq 1 ]] || die "usage: $0 start DIR"
  is_built || die "binaries not built in $BIN: run '$0 install' first"
  local etcd; etcd=$(etcd_bin)
  [[ -n $etcd ]] || die "etcd not found: run '$0 install' first"
  mkdir -p "$1"
  DIR=$(cd "$1" && pwd)
  if [[ -s $DIR/pids ]]; then
    die "$DIR/pids exists: a plane may be running there; run '$0 stop $DIR' first"
  fi
  rm -rf "$DIR/etcd" "$DIR/logs"
  mkdir -p "$DIR/logs" "$DIR/certs"
  : >"$DIR/pids"
  local t0; t0=$(now)

  local -a ports
  mapfile -t ports < <(free_ports 5)
  local etcd_port=${ports[0]} peer_port=${ports[1]} api_port=${ports[2]} kcm_port=${ports[3]} sched_port=${ports[4]}
  local server=https://127.0.0.1:$api_port

  # Service-account signing key pair and a static admin token (system:masters = cluster-admin).
  openssl genrsa -out "$DIR/sa.key" 2048 2>/dev/null
  openssl rsa -in "$DIR/sa.key" -pubout -out "$DIR/sa.pub" 2>/dev/null
  echo "$ADMIN_TOKEN,admin,admin,\"system:masters\"" >"$DIR/tokens.csv"
  chmod 600 "$DIR/sa.key" "$DIR/tokens.csv"

  cat >"$DIR/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: mendel-local
  cluster:
    server: $server
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: $ADMIN_TOKEN
contexts:
- name: mendel-local
  context:
    cluster: mendel-local
    user: admin
    namespace: default
current-context: mendel-local
EOF
  chmod 600 "$DIR/kubeconfig"

  local etcd_url=http://127.0.0.1:$etcd_port peer_url=http://127.0.0.1:$peer_port
  launch etcd "$etcd" --name mendel --data-dir "$DIR/etcd" \
    --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls "$peer_url" --initial-advertise-peer-urls "$peer_url" \
    --initial-cluster "mendel=$peer_url"
  wait_http etcd "$etcd_url/health"

  # Advertise loopback explicitly: left to itself the apiserver takes the default route's
  # address, and refuses to start on a machine without one. Endpoints may not hold loopback
  # addresses, so the `kubernetes` Service's endpoint reconciler is off (nothing here needs it).
  launch kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "$etcd_url" --bind-address 127.0.0.1 --secure-port "$api_port" \
    --cert-dir "$DIR/certs" --token-auth-file "$DIR/tokens.csv" --authorization-mode RBAC \
    --service-account-key-file "$DIR/sa.pub" --service-account-signing-key-file "$DIR/sa.key" \
    --service-account-issuer https://kubernetes.default.svc --service-cluster-ip-range 10.0.0.0/24 \
    --allow-privileged=true \
    --advertise-address 127.0.0.1 --endpoint-reconciler-type none
  wait_http kube-apiserver "$server/readyz" -H "Authorization: Bearer $ADMIN_TOKEN"
  log "kube-apiserver ready at $server ($(since "$t0") s)"

  # --port=0 turns off the 1.20 components' insecure ports (fixed 10252 / 10251), which
  # would otherwise collide between two planes on one machine.
  launch kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$DIR/kubeconfig" --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port "$kcm_port" --port=0 \
    --controllers="$CONTROLLERS" --pvclaimbinder-sync-period=2s \
    --service-account-private-key-file "$DIR/sa.key" --root-ca-file "$DIR/certs/apiserver.crt"
  launch kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$DIR/kubeconfig" --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port "$sched_port" --port=0
  wait_http kube-controller-manager "https://127.0.0.1:$kcm_port/healthz"
  wait_http kube-scheduler "https://127.0.0.1:$sched_port/healthz"
  # The namespace is usable for Pods once the service-account controllers have made its
  # `default` ServiceAccount (the ServiceAccount admission rejects Pods before that).
  wait_http kube-controller-manager "$server/api/v1/namespaces/default/serviceaccounts/default" \
    -H "Authorization: Bearer $ADMIN_TOKEN"

  cat >"$DIR/plane.env" <<EOF
MENDEL_K8S_SERVER=$server
MENDEL_K8S_TOKEN=$ADMIN_TOKEN
MENDEL_KUBECONFIG=$DIR/kubeconfig
MENDEL_ETCD_URL=$etcd_url
EOF
  log "control plane ready in $(since "$t0") s (logs: $DIR/logs)"
  echo "$DIR/kubeconfig"
}

# ------------------------------------------------------------------------------------ stop

cmd_stop() {
  [[ $# -eq 1 ]] || die "usage: $0 stop DIR"
  local dir; dir=$(cd "$1" 2>/dev/null && pwd) || { log "nothing to stop: no $1"; return 0; }
  local pidfile=$dir/pids
  [[ -s $pidfile ]] || { log "nothing to stop in $dir"; rm -f "$pidfile"; return 0; }

  # Only pids whose command line names this DIR are ours: a recycled pid is left alone.
  local -a pids=() names=()
  local name pid
  while read -r name pid; do
    [[ -r /proc/$pid/cmdline ]] || continue
    if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir/"; then
      pids=("$pid" "${pids[@]}"); names=("$name" "${names[@]}") # reverse start order
    fi
  done <"$pidfile"

  local i
  for i in "${!pids[@]}"; do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  local deadline=$((SECONDS + ${MENDEL_STOP_TIMEOUT:-10}))
  for i in "${!pids[@]}"; do
    while kill -0 "${pids[$i]}" 2>/dev/null; do
      if ((SECONDS >= deadline)); then
        log "${names[$i]} (pid ${pids[$i]}) ignored SIGTERM; sending SIGKILL"
        kill -KILL "${pids[$i]}" 2>/dev/null || true
        break
      fi
      sleep 0.1
    done
  done
  rm -f "$pidfile"
  log "stopped ${#pids[@]} process(es) from $dir"
}

# ---------------------------------------------------------------------------------- status

cmd_status() {
  if is_built; then echo "built: $BIN (kubernetes v$K8S_VERSION, source sha256 ${ORIG_SHA256:0:12}, build rev$BUILD_REV)"
  else echo "not built: $BIN (run: $0 install)"
  fi
  local etcd; etcd=$(etcd_bin)
  if [[ -n $etcd ]]; then echo "etcd: $etcd"; else echo "etcd: not installed (run: $0 install)"; fi
  runtime_ready
}

cmd_path() { is_built || die "not built: run '$0 install'"; echo "$BIN"; }

cmd_status_kubelet() {
  if kubelet_built; then echo "kubelet built: $BIN/kubelet (build rev$BUILD_REV, kubelet rev$KUBELET_REV)"
  else echo "kubelet not built: $BIN/kubelet (run: $0 install-kubelet)"; return 1
  fi
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case $cmd in
    install) cmd_install "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    path) cmd_path "$@" ;;
    install-kubelet) cmd_install_kubelet "$@" ;;
    status-kubelet) cmd_status_kubelet "$@" ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
  esac
}

main "$@"
