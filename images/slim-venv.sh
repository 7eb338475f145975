#!/bin/sh
# Trim a finished virtualenv in an image's build stage, before the final stage copies it.
# Why: the runtime images never install packages (no pip, setuptools, wheel) and never run a
# package's own test suite. Each removal below is listed explicitly with why nothing imports it,
# so that a new dependency is never trimmed by accident; hack/build-images.sh smoke then imports
# what Mendel uses. POSIX sh: it runs inside the build stage.
#   sh images/slim-venv.sh VENV [--bytecode-for "MOD MOD..."] [--no-torch-headers]
#     --bytecode-for   precompile only the modules that importing MODs loads (the start-up path);
#                      everything else stays source-only. The root filesystem is read-only at run
#                      time, so bytecode that is not in the image is compiled again at every start.
#     --no-torch-headers  drop torch/include (C++ headers for building extensions and inductor's
#                      C++ code); only for images without a compiler, where they are useless.
set -eu
venv=$1
shift
bytecode_for=
torch_headers=keep
while [ $# -gt 0 ]; do
  case $1 in
    --bytecode-for) bytecode_for=$2; shift 2 ;;
    --no-torch-headers) torch_headers=drop; shift ;;
    *) echo "slim-venv: unknown option $1" >&2; exit 2 ;;
  esac
done
sp=$(echo "$venv"/lib/python3*/site-packages)
[ -d "$sp" ] || { echo "slim-venv: no site-packages under $venv" >&2; exit 1; }
before=$(du -sk "$venv" | cut -f1)

# Installers: the image is immutable; nothing pip-installs at run time.
"$venv/bin/python" -m pip uninstall --yes --quiet pip setuptools wheel 2>/dev/null || true
rm -f "$venv"/bin/pip "$venv"/bin/pip3 "$venv"/bin/pip3.*

# kubernetes >= 35 ships an asyncio twin of the whole generated client (kubernetes/aio, 35 MB of
# source). kubernetes/__init__.py does not import it; Mendel uses the sync client and Kopf talks
# to the API with aiohttp.
rm -rf "$sp/kubernetes/aio"

# Test suites shipped inside packages (numpy.testing, torch.testing and sympy.testing are
# modules of their own and stay).
rm -rf "$sp"/numpy/_core/tests "$sp"/numpy/*/tests "$sp"/pandas/tests "$sp"/pyarrow/tests \
       "$sp"/sklearn/*/tests "$sp"/sklearn/*/*/tests "$sp"/scipy/*/tests "$sp"/scipy/*/*/tests \
       "$sp"/networkx/*/tests "$sp"/networkx/*/*/tests "$sp"/sympy/*/tests "$sp"/sympy/*/*/tests
# torch's C++ unit-test executables (83 MB) and test binaries and protoc in torch/bin;
# torch_shm_manager (DataLoader's shared memory) stays.
if [ -d "$sp/torch" ]; then
  rm -rf "$sp/torch/test"
  rm -f "$sp"/torch/bin/*Test "$sp"/torch/bin/test_* "$sp"/torch/bin/protoc*
  [ "$torch_headers" = drop ] && rm -rf "$sp/torch/include"
fi

find "$venv" -depth -type d -name __pycache__ -exec rm -rf {} +
if [ -n "$bytecode_for" ]; then
  # Unchecked hashes: the sources never change inside the image, so Python need not stat them.
  "$venv/bin/python" - "$bytecode_for" "$sp" <<'EOF'
import importlib, py_compile, re, sys
mods, root = re.split(r"[,\s]+", sys.argv[1].strip()), sys.argv[2]
for mod in mods:
    importlib.import_module(mod)  # an import error here fails the build, as it should
files = {getattr(m, "__file__", None) for m in list(sys.modules.values())}
files = sorted(f for f in files if f and f.startswith(root) and f.endswith(".py"))
for f in files:
    py_compile.compile(f, doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
print(f"slim-venv: precompiled {len(files)} modules loaded by {','.join(mods)}", file=sys.stderr)
EOF
fi
after=$(du -sk "$venv" | cut -f1)
echo "slim-venv: $venv $((before / 1024)) MB -> $((after / 1024)) MB" >&2
