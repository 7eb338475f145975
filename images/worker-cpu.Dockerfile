# The CPU worker image, for tests and CI: the same engines, evaluators and model stack as the GPU
# worker (images/worker.Dockerfile, the cluster default), on CPU-only torch.
#   hack/build-images.sh build worker-cpu
#
# PyPI's torch is the multi-GB CUDA build, so this build never reaches an index: the script
# downloads a wheelhouse on the host (`pip download` with the host's pip configuration, which
# must resolve torch==TORCH_VERSION to a CPU build such as 2.13.0+cpu) and bind-mounts it at
# /wheelhouse; pip here installs with --no-index. By hand:
#   buildah bud -v "$WHEELHOUSE:/wheelhouse:ro" -f images/worker-cpu.Dockerfile -t mendel-worker:cpu .
#
# Runs as UID 10001 on a read-only root: the operator mounts an emptyDir at /tmp and sets
# HOME=/tmp for worker Pods, so every cache (Hugging Face, torch, matplotlib) follows HOME into
# /tmp. Nothing here sets a cache path inside the image, nor MLflow's client timeouts.
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheelhouse
WORKDIR /src
RUN python3 -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY images/requirements.py images/
RUN ls /wheelhouse/torch-*.whl >/dev/null 2>&1 || { echo "no wheelhouse at /wheelhouse:" \
      "build with hack/build-images.sh build worker-cpu, or bind-mount one (-v DIR:/wheelhouse:ro)" >&2; \
      exit 1; } \
 && python3 images/requirements.py worker operator > requirements.txt \
 && /opt/venv/bin/pip install --no-compile --only-binary=:all: "torch==${TORCH_VERSION}" -r requirements.txt
COPY operator operator
COPY images/slim-venv.sh images/
# Mendel itself is the only source build; setuptools and wheel come from the wheelhouse too.
# Bytecode only for the worker's start-up path (see images/slim-venv.sh).
RUN /opt/venv/bin/pip install --no-compile --no-deps . \
 && sh images/slim-venv.sh /opt/venv --no-torch-headers --bytecode-for "mendel.cli \
      mendel.workloads.qdevolution mendel.engines.cycleqd mendel.llm.local mendel.evaluators \
      torch transformers.models.auto.modeling_auto transformers.models.auto.tokenization_auto \
      peft mlflow.tracking safetensors.torch"

FROM ${PYTHON_IMAGE}
RUN useradd --uid 10001 --user-group --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin mendel
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["mendel", "worker"]
