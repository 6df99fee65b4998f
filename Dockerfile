# saescope image: the package (installed with constraints.txt, CPU torch) and the dashboard.
#   docker compose up                       -> build an atlas into PostgreSQL, then serve it (docker-compose.yml)
#   docker run -p 8000:8000 -v saescope-atlas:/data/atlas saescope
#                                           -> build (or reuse) the built-in atlas in /data/atlas and serve it
# Layout: /app (pyproject.toml, backend/, frontend/; installed editable so the server finds frontend/),
# /config/atlas.toml (the example build config, docker/atlas.toml), /data/atlas (the atlas, a volume).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY backend ./backend
COPY frontend ./frontend
# constraints.txt pins torch==2.13.0; the CPU index serves that version without the CUDA libraries.
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu -c constraints.txt -e .
COPY docker/atlas.toml /config/atlas.toml
# An unprivileged user owning /data/atlas: a new named volume mounted there inherits that ownership.
RUN useradd --create-home --uid 1000 saescope && mkdir -p /data/atlas && chown -R saescope:saescope /data
USER saescope
EXPOSE 8000
CMD ["saescope", "demo", "--atlas", "/data/atlas", "--host", "0.0.0.0", "--port", "8000"]
