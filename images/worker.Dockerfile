# The GPU worker image, the cluster default: the engines, evaluators and their model stack.
# Driver Pods run `mendel worker`, which reads the spec snapshot the operator mounts.
#   hack/build-images.sh build worker          (buildah; docs/images.md)
#   docker build -f images/worker.Dockerfile --build-arg CUDA_IMAGE=... -t mendel-worker .
# A CPU-only variant for tests and CI is images/worker-cpu.Dockerfile.
#
# Runs as UID 10001 on a read-only root: the operator mounts an emptyDir at /tmp and sets
# HOME=/tmp for worker Pods, so every cache (Hugging Face, torch, Triton, matplotlib) follows
# HOME into /tmp. Nothing here sets a cache path inside the image, nor MLflow's client timeouts.

# Any CUDA image with apt; e.g. a mirror of this one in your own registry. PyPI's torch brings
# its own CUDA runtime libraries, the host brings the driver.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
# A CA bundle for pip when registry traffic is TLS-inspected (the build bind-mounts the host's),
# and the package index (PyPI unless a mirror is passed).
ARG PIP_CERT=
ARG PIP_INDEX_URL=https://pypi.org/simple
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY images/requirements.py images/
# torch from PyPI carries its own CUDA runtime; pinned so the image is reproducible.
RUN python3 images/requirements.py worker operator > requirements.txt \
 && /opt/venv/bin/pip install ${PIP_CERT:+--cert "$PIP_CERT"} --no-compile \
      "torch==${TORCH_VERSION}" -r requirements.txt
COPY operator operator
COPY images/slim-venv.sh images/
# Bytecode only for the worker's start-up path (see images/slim-venv.sh).
RUN /opt/venv/bin/pip install ${PIP_CERT:+--cert "$PIP_CERT"} --no-compile --no-deps . \
 && sh images/slim-venv.sh /opt/venv --bytecode-for "mendel.cli \
      mendel.workloads.qdevolution mendel.engines.cycleqd mendel.llm.local mendel.evaluators \
      torch transformers.models.auto.modeling_auto transformers.models.auto.tokenization_auto \
      peft mlflow.tracking safetensors.torch"

FROM ${CUDA_IMAGE}
# Triton (torch.compile on GPU) builds a small C launcher at run time with the system C compiler
# and Python's headers, so this image keeps gcc and python3-dev (not the rest of build-essential).
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 gcc libc6-dev python3-dev && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin mendel
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["mendel", "worker"]
