# The GPU worker image: the engines, evaluators and their model stack. Driver Pods run
# `mendel worker`, which reads the spec snapshot the operator mounts.
#   docker build -f images/worker.Dockerfile -t mendel-worker .
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
      python3-dev build-essential && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv && useradd --uid 10001 --create-home mendel
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HF_HOME=/home/mendel/.cache/huggingface
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# torch from PyPI carries its own CUDA runtime; pin it so the image is reproducible.
RUN pip install --no-cache-dir 'torch==2.13.0' && pip install --no-cache-dir '.[worker,operator]'
USER 10001
WORKDIR /home/mendel
ENTRYPOINT ["mendel", "worker"]
