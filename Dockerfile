# The mlstream worker image: `mlstream worker` (default), `mlstream simulate`, any CLI command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md LICENSE requirements.lock ./
COPY stream ./stream
# exact versions from the lock; [train,report] so the image runs every CLI command (trainer, report)
RUN pip install -c requirements.lock '.[train,report]'
# the shipped model store (settings.model_store defaults to ./models) and the message schemas
COPY models ./models
COPY schemas ./schemas
RUN useradd --system --home /app mlstream && chown -R mlstream /app/models
USER mlstream
# /metrics; Prometheus scrapes it (ops/prometheus/prometheus.yml)
EXPOSE 9108
CMD ["mlstream", "worker"]
