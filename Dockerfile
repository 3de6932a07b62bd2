# syntax=docker/dockerfile:1
# gru-serve images. Two final targets, one per onnxruntime build:
#   docker build --target cpu -t gru-serve:cpu .   # plain onnxruntime, python:3.11-slim
#   docker build --target gpu -t gru-serve:gpu .   # onnxruntime-gpu + CUDA 13 / cuDNN 9 wheels
# Neither installs torch: the serving path never imports it. Settings come from GRU_SERVE_*
# environment variables, the same names as `gru-serve serve --<flag>`.
# The dependency layers depend on pyproject.toml only, so a code change rebuilds the small
# code layers and nothing else. The code is copied once, into the `code` stage; both targets
# take it from there.

# ---------------------------------------------------------------- builder: serving deps
FROM python:3.11-slim-bookworm AS builder
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /build
COPY pyproject.toml ./
COPY deploy/requirements.py deploy/requirements.py
RUN python deploy/requirements.py cpu > requirements-cpu.txt \
    && python deploy/requirements.py gpu > requirements-gpu.txt

FROM builder AS deps-cpu
RUN pip install --no-cache-dir -r requirements-cpu.txt

FROM builder AS deps-gpu
RUN pip install --no-cache-dir -r requirements-gpu.txt

# ---------------------------------------------------------------- code: what both targets run
# Serving needs service/, export/ (the artifact contract), cli_common/ (the CLI's shared
# error type and parser) and the ONNX artifact only. model/ comes too, as code: `gru-serve`
# builds its parser from every area's commands module (service/cli.py imports
# model/commands.py, which imports model/settings.py; both torch-free).
# No checkpoint, no report: artifacts/gru.onnx is the one artifact copied.
FROM scratch AS code
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cli_common/ cli_common/
COPY model/ model/
COPY export/ export/
COPY service/ service/
COPY artifacts/gru.onnx artifacts/gru.onnx

# ---------------------------------------------------------------- runtime: shared settings
FROM python:3.11-slim-bookworm AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    GRU_SERVE_HOST=0.0.0.0 \
    GRU_SERVE_PORT=8000
# A fixed numeric uid so that Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 gru \
    && useradd --system --uid 10001 --gid gru --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin gru
WORKDIR /app
EXPOSE 8000
STOPSIGNAL SIGTERM
# Liveness only (the process answers); readiness (/readyz) is the orchestrator's probe.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GRU_SERVE_PORT', '8000'), timeout=2)"]
CMD ["gru-serve", "serve"]

# The project is installed in editable mode so that the default model path (artifacts/gru.onnx
# next to the code) is /app/artifacts/gru.onnx; GRU_SERVE_MODEL_PATH=/models/<file>.onnx serves
# a mounted model instead. The install (--no-deps: a console script and a path entry) runs per
# target because each target has its own venv. The checks fail the build if the artifact is
# missing or if the CLI cannot build its parser without torch.
# ---------------------------------------------------------------- final target: cpu
FROM runtime AS cpu
COPY --from=deps-cpu /opt/venv /opt/venv
COPY --from=code /app /app
RUN pip install --no-cache-dir --no-deps -e . \
    && gru-serve --help > /dev/null \
    && python -c "import onnxruntime, service.settings as s; assert s.DEFAULT_MODEL.is_file(), s.DEFAULT_MODEL"
USER 10001:10001

# ---------------------------------------------------------------- final target: gpu
FROM runtime AS gpu
# onnxruntime finds the CUDA/cuDNN wheels through onnxruntime.preload_dlls() or this path.
ENV LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cu13/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    GRU_SERVE_DEVICE=cuda
COPY --from=deps-gpu /opt/venv /opt/venv
COPY --from=code /app /app
RUN pip install --no-cache-dir --no-deps -e . \
    && gru-serve --help > /dev/null \
    && python -c "import onnxruntime, service.settings as s; assert s.DEFAULT_MODEL.is_file(), s.DEFAULT_MODEL"
USER 10001:10001
