# The operator image: Kopf, the Kubernetes client, MLflow's client (mlflow-skinny), the Prometheus
# client and Mendel's API and controller: the `operator` extra of pyproject.toml. No torch: the
# controller never imports the GPU stack.
#   hack/build-images.sh build operator        (buildah, no Docker daemon; docs/images.md)
#   docker build -f images/operator.Dockerfile -t mendel-operator .
#
# Runs as UID 10001 on a read-only root filesystem: Python writes no bytecode and HOME is /tmp,
# where the Helm chart mounts an emptyDir. MLflow's client timeouts are deliberately NOT set here:
# the operator applies its own outage settings (MLFLOW_CLIENT_ENV in
# mendel/controller/runtime/operator.py) with os.environ.setdefault, which an ENV line in this
# file would silently override (10 s / 2 retries made 20 Jobs with MLflow hung take 71 s, not 13.6 s).
# tests/unit/test_images.py fails if any image sets them.

# Any Python 3.11+ image with `python3 -m venv`, e.g. a mirror of python:3.11-slim in your own
# registry; hack/build-images.sh passes a local Debian bookworm base made with mmdebstrap.
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# A CA bundle for pip when registry traffic is TLS-inspected (the build bind-mounts the host's),
# and the package index (PyPI unless a mirror is passed).
ARG PIP_CERT=
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY images/requirements.py images/
# Dependencies first, in a layer of their own: a change to Mendel's code reuses it.
RUN python3 images/requirements.py operator > requirements.txt \
 && /opt/venv/bin/pip install ${PIP_CERT:+--cert "$PIP_CERT"} --no-compile -r requirements.txt
COPY operator operator
COPY images/slim-venv.sh images/
# Bytecode only for the modules the operator loads at start-up and on its first MLflow call:
# the root is read-only, so anything not compiled here is compiled again at every start, while
# compiling the whole venv would add 88 MB (benchmarks/images/README.md).
RUN /opt/venv/bin/pip install ${PIP_CERT:+--cert "$PIP_CERT"} --no-compile --no-deps . \
 && sh images/slim-venv.sh /opt/venv \
      --bytecode-for "mendel.cli mendel.controller.runtime.operator mlflow.tracking"

FROM ${PYTHON_IMAGE}
# HOME is /tmp (the writable emptyDir); the passwd entry lets getpass/`id` name the user.
RUN useradd --uid 10001 --user-group --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin mendel
COPY --from=build /opt/venv /opt/venv
COPY crds /opt/mendel/crds
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["mendel", "operator"]
