# One image for the forewarn agent and the simulator (docker-compose.yml):
#   docker run forewarn agent          docker run forewarn simulate --machines 50 --overheat 3
# CPU torch by default. docker-compose.gpu.yml builds it with PyPI's CUDA torch instead
# (TORCH_INDEX_URL=https://pypi.org/simple).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/forewarn
ENV PATH=/opt/forewarn/bin:$PATH
# torch first, from its own index, so that installing forewarn keeps this build.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY forewarn/ forewarn/
COPY agent/ agent/
COPY wire/ wire/
COPY simulator/ simulator/
COPY models/ models/
COPY config/ config/
# The train extra (torch, already installed above, plus onnx, scikit-learn, matplotlib) keeps
# `forewarn train`, `export`, `evaluate` and `detect` in the image; its ranges are pyproject's.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[train]" \
    && python -c "import forewarn.cli, agent.app, simulator.publish, models.checkpoint, wire.mqtt"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="forewarn" \
      org.opencontainers.image.description="Streaming predictive maintenance: MQTT readings in, LSTM forecasts, overheat alerts and Prometheus metrics out."
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/forewarn \
        --shell /usr/sbin/nologin forewarn
COPY --from=build /opt/forewarn /opt/forewarn
ENV PATH=/opt/forewarn/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# An empty working directory: settings come from the environment, not from a stray .env.
WORKDIR /home/forewarn
USER 10001:10001
# /metrics and /healthz of `forewarn agent`
EXPOSE 9108
ENTRYPOINT ["forewarn"]
CMD ["agent"]
