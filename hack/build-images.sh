#!/usr/bin/env bash
# Build, archive and smoke-test Mendel's container images without a Docker daemon.
#
# Why: CI machines and this project's VMs have no Docker daemon, and Docker Hub may be out of
# reach. buildah/podman/skopeo from Debian build the images with runc (crun cannot handle the
# hybrid cgroup layout here); the Python base is a Debian bookworm rootfs made once with
# mmdebstrap and cached; the CPU worker installs torch from a host-side wheelhouse because PyPI's
# torch is the multi-GB CUDA build. Each image carries a label with a hash of its inputs, so an
# unchanged image is never rebuilt, and a docker-archive tar is kept for `ctr images import`.
#
#   hack/build-images.sh install                     apt-get the tools (root)
#   hack/build-images.sh build [TARGET...]           default: operator worker-cpu
#   hack/build-images.sh archive TARGET              print the tar's path (builds if needed)
#   hack/build-images.sh smoke [TARGET...]           run each image read-only, as UID 10001
#   hack/build-images.sh sizes                       image and archive sizes
#   hack/build-images.sh refs [TARGET...]            print the image references (tags)
# TARGET: operator | worker-cpu | worker (the CUDA worker: only when named).
#
# Environment:
#   PYTHON_IMAGE   base of operator and worker-cpu (default: a local bookworm base, see above)
#   CUDA_IMAGE     base of the CUDA worker (default: the Dockerfile's ARG)
#   MENDEL_IMAGE_CACHE   where the docker-archive tars go
#                        (default ${XDG_CACHE_HOME:-$HOME/.cache}/mendel/images)
#   MENDEL_IMAGE_BUILD_CACHE   rootfs tar, wheelhouse, build contexts
#                        (default ${XDG_CACHE_HOME:-$HOME/.cache}/mendel/image-build)
#   MENDEL_PIP_INDEX_URL       a PyPI mirror for pip inside the operator and CUDA worker builds
#   MENDEL_TORCH_VERSION (2.13.0), MENDEL_DEBIAN_MIRROR, MENDEL_CA_BUNDLE, MENDEL_FORCE_BUILD=1
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/mendel
BUILD_CACHE=${MENDEL_IMAGE_BUILD_CACHE:-$CACHE/image-build}
ARCHIVE_DIR=${MENDEL_IMAGE_CACHE:-$CACHE/images}
DEBIAN_MIRROR=${MENDEL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
TORCH_VERSION=${MENDEL_TORCH_VERSION:-2.13.0}
CA_BUNDLE=${MENDEL_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
LOCAL_PYTHON_IMAGE=localhost/mendel-python:3.11-bookworm
ROOTFS_PACKAGES=python3,python3-venv,ca-certificates
INPUTS_LABEL=dev.mendel.image.inputs
APT_PACKAGES=(buildah podman runc mmdebstrap umoci skopeo uidmap fuse-overlayfs slirp4netns
              containernetworking-plugins conmon catatonit)
# podman asks for rlimits above the hard limits a container may raise without
# CAP_SYS_RESOURCE; these fit under the defaults of conmon here (ulimit -H).
ULIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=32768:32768)

# Microseconds since the epoch, from bash 5's EPOCHREALTIME (no subprocess, no bc).
now_us() { echo "${EPOCHREALTIME/./}"; }
fmt_s() { printf '%d.%d' $(($1 / 1000000)) $(($1 % 1000000 / 100000)); }
START=$(now_us)
log() { printf '[build-images %6ss] %s\n' "$(fmt_s $(($(now_us) - START)))" "$*" >&2; }
die() { printf 'build-images: error: %s\n' "$*" >&2; exit 1; }
# Run a command and log how long it took; a failure is passed on (also under `||`).
timed() {
  local what=$1 t0; shift
  t0=$(now_us)
  "$@" || return $?
  log "$what: $(fmt_s $(($(now_us) - t0))) s"
}

version() {
  local v
  v=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' pyproject.toml | head -n1)
  [[ -n $v ]] || die "no version = \"...\" in pyproject.toml"
  echo "$v"
}
VERSION=$(version)

image_ref() {
  case $1 in
    operator) echo "localhost/mendel-operator:$VERSION" ;;
    worker-cpu) echo "localhost/mendel-worker:$VERSION-cpu" ;;
    worker) echo "localhost/mendel-worker:$VERSION" ;;
    *) die "unknown target '$1' (use: operator, worker-cpu, worker)" ;;
  esac
}
dockerfile() {
  case $1 in
    operator) echo images/operator.Dockerfile ;;
    worker-cpu) echo images/worker-cpu.Dockerfile ;;
    worker) echo images/worker.Dockerfile ;;
  esac
}
# localhost/mendel-worker:0.1.0-cpu -> $ARCHIVE_DIR/mendel-worker-0.1.0-cpu.tar
archive_path() {
  local ref; ref=$(image_ref "$1"); ref=${ref#localhost/}
  echo "$ARCHIVE_DIR/${ref%%:*}-${ref#*:}.tar"
}

runc_path() { command -v runc || { [[ -x /usr/sbin/runc ]] && echo /usr/sbin/runc; } || true; }

need_tools() {
  local missing=() t
  for t in buildah podman skopeo mmdebstrap; do
    command -v "$t" >/dev/null || missing+=("$t")
  done
  [[ -n $(runc_path) ]] || missing+=(runc)
  ((${#missing[@]} == 0)) || die "missing ${missing[*]}: run  $0 install  (as root)"
  RUNC=$(runc_path)
  export BUILDAH_RUNTIME=$RUNC
}

cmd_install() {
  local pkgs=("${APT_PACKAGES[@]}") missing=() p
  # the CPU worker's wheelhouse is downloaded with the host's pip
  python3 -m pip --version >/dev/null 2>&1 || pkgs+=(python3-pip)
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    log "already installed: ${pkgs[*]}"
    return
  fi
  [[ $(id -u) == 0 ]] || die "install needs root for apt-get: sudo $0 install"
  timed "apt-get update" apt-get update -q >/dev/null
  timed "apt-get install ${missing[*]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# The Debian bookworm rootfs with Python 3.11, made once (about a minute) and cached as a tar,
# then imported into podman storage as $LOCAL_PYTHON_IMAGE (a stand-in for python:3.11-slim).
ensure_python_base() {
  local key tar sha have
  key=$(printf '%s\n' bookworm minbase merged-usr-hook "$ROOTFS_PACKAGES" "$DEBIAN_MIRROR" \
    | sha256sum | cut -c1-12)
  tar=$BUILD_CACHE/rootfs/bookworm-python3-$key.tar
  if [[ ! -s $tar ]]; then
    mkdir -p "$(dirname "$tar")"
    # merged-/usr by the hook (as debootstrap does): the usrmerge package would pull in all of
    # perl (55 MB). Docs, man pages and locales are left out; copyright files stay.
    mkdir -p "$BUILD_CACHE/logs"
    timed "mmdebstrap bookworm rootfs -> $tar" logged "$BUILD_CACHE/logs/rootfs.log" \
      mmdebstrap --quiet --variant=minbase --format=tar \
      --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
      --include="$ROOTFS_PACKAGES" \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      bookworm "$tar.part" "$DEBIAN_MIRROR" \
      || { tail -n 30 "$BUILD_CACHE/logs/rootfs.log" >&2; die "mmdebstrap failed (log above)"; }
    mv "$tar.part" "$tar"
    # an older rootfs (other packages or mirror) is no longer used
    find "$(dirname "$tar")" -name 'bookworm-python3-*.tar' ! -name "${tar##*/}" -delete
  fi
  sha=$(sha256sum "$tar" | cut -c1-64)
  have=$(podman image inspect --format "{{index .Labels \"dev.mendel.rootfs.sha256\"}}" \
    "$LOCAL_PYTHON_IMAGE" 2>/dev/null || true)
  if [[ $have != "$sha" ]]; then
    timed "podman import $LOCAL_PYTHON_IMAGE" podman import --quiet \
      --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
      --change "LABEL dev.mendel.rootfs.sha256=$sha" "$tar" "$LOCAL_PYTHON_IMAGE" >/dev/null
  fi
}

# A clean copy of what the target's Dockerfile COPYs (no .venv, caches or egg-info), so that the
# input hash covers exactly what goes into the image.
stage_context() {
  local ctx=$BUILD_CACHE/context/$1
  rm -rf "$ctx" && mkdir -p "$ctx"
  tar -c --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' pyproject.toml README.md \
    operator crds images/requirements.py images/slim-venv.sh "$(dockerfile "$1")" | tar -x -C "$ctx"
  echo "$ctx"
}

# Host python major.minor must match the image's, since pip download resolves for the host.
wheelhouse() {
  local reqs=() key dir host_py
  host_py=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [[ $host_py == 3.11 ]] || die "the wheelhouse is downloaded with the host's python3 ($host_py)" \
    "but the image has Python 3.11: put a python3.11 first in PATH"
  mapfile -t reqs < <(python3 images/requirements.py worker operator)
  ((${#reqs[@]} > 0)) || die "no requirements from images/requirements.py"
  key=$(printf '%s\n' "torch==$TORCH_VERSION" "${reqs[@]}" \
    "$(python3 -m pip config list 2>/dev/null)" | sha256sum | cut -c1-12)
  dir=$BUILD_CACHE/wheelhouse/$key
  if [[ ! -f $dir/.complete ]]; then
    rm -rf "$dir" && mkdir -p "$dir"
    mkdir -p "$BUILD_CACHE/logs"
    timed "pip download wheelhouse -> $dir" logged "$BUILD_CACHE/logs/wheelhouse.log" \
      python3 -m pip download --progress-bar off --dest "$dir" --only-binary=:all: \
      "torch==$TORCH_VERSION" "${reqs[@]}" 'setuptools>=69' wheel \
      || { tail -n 20 "$BUILD_CACHE/logs/wheelhouse.log" >&2
           die "pip download failed (log above); every requirement needs a Python 3.11 wheel"; }
    touch "$dir/.complete"
    # a wheelhouse for other requirements is no longer used (each is about 430 MB)
    find "$BUILD_CACHE/wheelhouse" -mindepth 1 -maxdepth 1 -type d ! -name "$key" \
      -exec rm -rf {} +
  fi
  ls "$dir"/torch-*+cpu-*.whl >/dev/null 2>&1 \
    || die "the host's pip resolved torch==$TORCH_VERSION" \
    "to $(basename "$(ls "$dir"/torch-*.whl)"), not a CPU build: add the CPU wheel with" \
    "PIP_FIND_LINKS=DIR or PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu and rerun"
  echo "$dir"
}

# Hash of every input of an image: the staged context (Dockerfile, pyproject.toml, README.md,
# operator/, crds/, images/), the base image's ID or reference and the wheelhouse's file list.
inputs_hash() {
  local ctx=$1; shift
  { (cd "$ctx" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    printf '%s\n' "$@"; } | sha256sum | cut -c1-64
}

current_inputs() {
  podman image inspect --format "{{index .Labels \"$INPUTS_LABEL\"}}" "$1" 2>/dev/null || true
}

image_id() { podman image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

# buildah's --layers cache keeps every step as an untagged image. Tag the build stage's last
# step (its ID is in the build log) so that its chain, the dependency layer included, survives;
# then remove the chains of the images this build replaced, parent by parent, up to the first
# one that is tagged or still has children (the shared base and dependency layers).
tag_build_cache() {
  local logf=$1 cache_ref=$2 id
  id=$(awk '/^\[2\/2\] STEP 1\//{print last; exit} /^--> [0-9a-f]+$/{last=$2}' "$logf")
  if [[ -n $id ]]; then podman tag "$id" "$cache_ref"; fi
}
prune_replaced() {
  local id=$1 keep=$2 parent
  [[ -n $id && $id != "$keep" ]] || return 0
  while [[ -n $id ]]; do
    [[ $(podman image inspect --format '{{len .RepoTags}}' "$id" 2>/dev/null) == 0 ]] || break
    parent=$(podman image inspect --format '{{.Parent}}' "$id")
    podman rmi "$id" >/dev/null 2>&1 || break
    id=$parent
  done
}

build_one() {
  local target=$1 ref file ctx base pull=() args=() mounts=() extra=() hash logf
  local cache_ref old_id old_cache_id
  local network=host
  ref=$(image_ref "$target"); file=$(dockerfile "$target")
  case $target in
    operator|worker-cpu)
      if [[ -n ${PYTHON_IMAGE:-} ]]; then base=$PYTHON_IMAGE
      else
        ensure_python_base; base=$LOCAL_PYTHON_IMAGE; pull=(--pull=never)
        extra+=("$(podman image inspect --format '{{.Id}}' "$base")")
      fi
      args+=(--build-arg "PYTHON_IMAGE=$base") ;;
    worker)
      if [[ -n ${CUDA_IMAGE:-} ]]; then args+=(--build-arg "CUDA_IMAGE=$CUDA_IMAGE"); fi
      extra+=("base=${CUDA_IMAGE:-default}") ;;
  esac
  if [[ $target == worker-cpu ]]; then
    local wh; wh=$(wheelhouse)
    mounts+=(-v "$wh:/wheelhouse:ro")
    extra+=("$(cd "$wh" && ls)")
    network=none  # everything comes from the wheelhouse: prove it
  fi
  if [[ $target != worker-cpu ]]; then
    [[ -f $CA_BUNDLE ]] || die "no CA bundle at $CA_BUNDLE for pip in the build (MENDEL_CA_BUNDLE)"
    mounts+=(-v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
    args+=(--build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
    [[ -z ${MENDEL_PIP_INDEX_URL:-} ]] || args+=(--build-arg "PIP_INDEX_URL=$MENDEL_PIP_INDEX_URL")
  fi
  args+=(--build-arg "TORCH_VERSION=$TORCH_VERSION")
  ctx=$(stage_context "$target")
  hash=$(inputs_hash "$ctx" "$target" "${args[@]}" "${extra[@]}")
  if [[ ${MENDEL_FORCE_BUILD:-0} != 1 && $(current_inputs "$ref") == "$hash" ]]; then
    log "$ref: up to date (inputs ${hash:0:12})"
  else
    logf=$BUILD_CACHE/logs/$target.log
    cache_ref=localhost/mendel-build-cache:$target
    old_id=$(image_id "$ref"); old_cache_id=$(image_id "$cache_ref")
    mkdir -p "$(dirname "$logf")"
    log "$ref: building (inputs ${hash:0:12}; log: $logf)"
    timed "buildah bud $ref" logged "$logf" buildah bud --layers --force-rm \
      --network "$network" "${pull[@]}" "${mounts[@]}" "${args[@]}" --label "$INPUTS_LABEL=$hash" \
      --label "org.opencontainers.image.version=$VERSION" \
      --label "org.opencontainers.image.title=${ref%%:*}" \
      -t "$ref" -f "$ctx/$file" "$ctx" \
      || { tail -n 30 "$logf" >&2; die "buildah bud failed for $ref; full log: $logf"; }
    tag_build_cache "$logf" "$cache_ref"
    prune_replaced "$old_id" "$(image_id "$ref")"
    prune_replaced "$old_cache_id" "$(image_id "$cache_ref")"
  fi
  write_archive "$target"
}

# Run a command with its output going to a log file.
logged() { local logf=$1; shift; "$@" >"$logf" 2>&1; }

# docker-archive tar for `ctr -n k8s.io images import`; reused while the image ID is the same.
write_archive() {
  local ref tar id
  ref=$(image_ref "$1"); tar=$(archive_path "$1")
  id=$(podman image inspect --format '{{.Id}}' "$ref")
  if [[ -s $tar && $(cat "$tar.id" 2>/dev/null) == "$id" ]]; then
    log "$tar: up to date"
    return
  fi
  mkdir -p "$ARCHIVE_DIR"
  rm -f "$tar.part"
  timed "skopeo copy -> $tar" skopeo copy --quiet "containers-storage:$ref" \
    "docker-archive:$tar.part:$ref"
  mv "$tar.part" "$tar"
  echo "$id" >"$tar.id"
}

targets_or_default() {
  if (($# == 0)); then echo operator worker-cpu; else echo "$@"; fi
}

# One build at a time per cache: concurrent runs would share the staged contexts.
lock_cache() {
  mkdir -p "$BUILD_CACHE"
  exec 9>"$BUILD_CACHE/.lock"
  flock 9
}

cmd_build() {
  need_tools
  lock_cache
  local t
  for t in $(targets_or_default "$@"); do image_ref "$t" >/dev/null; done
  for t in $(targets_or_default "$@"); do build_one "$t"; done
}

cmd_archive() {
  (($# == 1)) || die "usage: $0 archive TARGET"
  need_tools
  lock_cache
  build_one "$1"
  archive_path "$1"
}

# Run a command in an image the way a Pod runs it: read-only root, a tmpfs at /tmp only (the
# emptyDir), no network, the image's own user.
run_in() {
  podman run --rm --runtime "$RUNC" --network none --read-only --read-only-tmpfs=false \
    --tmpfs /tmp:rw,size=256m,mode=1777 "${ULIMITS[@]}" "$@"
}

smoke_one() {
  local target=$1 ref
  ref=$(image_ref "$target")
  podman image exists "$ref" || die "$ref not built: run  $0 build $target"
  # shellcheck disable=SC2016 # expanded in the container
  local common='import os, sys
assert os.getuid() == 10001 and os.getgid() == 10001, (os.getuid(), os.getgid())
assert os.environ["HOME"] == "/tmp", os.environ["HOME"]
leaked = sorted(k for k in os.environ if k.startswith("MLFLOW_"))
assert not leaked, f"the image sets {leaked}"
assert os.statvfs("/").f_flag & os.ST_RDONLY, "the root filesystem is writable"
import shutil
found = [t for t in ("pip", "pip3", "gcc", "cc", "g++") if shutil.which(t)]
assert not found, f"build tools in the final image: {found}"
'
  case $target in
    operator)
      timed "$ref: mendel operator --help" run_in "$ref" --help >/dev/null
      timed "$ref: imports" run_in --entrypoint python3 "$ref" -c "$common
import kopf, kubernetes.client, kubernetes.config, mlflow, prometheus_client
import mendel.controller.runtime.operator as op, mendel.api
kubernetes.client.CoreV1Api(kubernetes.client.ApiClient())
kubernetes.client.V1Pod(metadata=kubernetes.client.V1ObjectMeta(name='x'))
assert os.path.isdir('/opt/mendel/crds') and os.listdir('/opt/mendel/crds')
print('operator imports ok')" ;;
    worker-cpu|worker)
      timed "$ref: mendel worker --help" run_in "$ref" --help >/dev/null
      local tools=$common
      # the CUDA worker keeps gcc for Triton; only the CPU variant must be compiler-free
      [[ $target == worker ]] && tools=${common%%import shutil*}
      timed "$ref: imports" run_in --entrypoint python3 "$ref" -c "$tools
import torch, transformers, peft, mlflow, mendel.workloads
from huggingface_hub import constants
assert constants.HF_HOME.startswith('/tmp/'), constants.HF_HOME
x = torch.ones(4, 4)
assert float((x @ x).sum()) == 64.0
print('worker imports ok: torch', torch.__version__)" ;;
  esac
  log "$ref: smoke ok"
}

cmd_smoke() {
  need_tools
  local t
  for t in $(targets_or_default "$@"); do smoke_one "$t"; done
}

cmd_sizes() {
  command -v podman >/dev/null || die "podman missing: run  $0 install"
  local t ref bytes tar
  printf '%-40s %12s %12s\n' IMAGE "SIZE (MB)" "ARCHIVE (MB)"
  for t in operator worker-cpu worker; do
    ref=$(image_ref "$t"); tar=$(archive_path "$t")
    bytes=$(podman image inspect --format '{{.Size}}' "$ref" 2>/dev/null) || continue
    printf '%-40s %12s %12s\n' "$ref" "$((bytes / 1000000))" \
      "$( [[ -s $tar ]] && echo $(($(stat -c %s "$tar") / 1000000)) || echo -)"
  done
}

main() {
  local cmd=${1:-}
  (($#)) && shift
  case $cmd in
    install) cmd_install ;;
    build) cmd_build "$@" ;;
    archive) cmd_archive "$@" ;;
    smoke) cmd_smoke "$@" ;;
    sizes) cmd_sizes ;;
    refs) for t in $(targets_or_default "$@"); do image_ref "$t"; done ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
}
main "$@"
