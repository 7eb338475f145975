# The operator image: Kopf, the Kubernetes client, MLflow's client and Mendel's API.
# No torch, no transformers: the controller never imports the GPU stack.
#   docker build -f images/operator.Dockerfile -t mendel-operator .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[operator]'

FROM python:3.11-slim
RUN useradd --uid 10001 --create-home mendel
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY crds /opt/mendel/crds
USER 10001
ENV MLFLOW_HTTP_REQUEST_TIMEOUT=10 MLFLOW_HTTP_REQUEST_MAX_RETRIES=2
ENTRYPOINT ["mendel", "operator"]
