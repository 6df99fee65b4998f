# saescope image: the package, the dashboard, and the built-in atlas built on first start.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY backend ./backend
COPY frontend ./frontend
# constraints.txt pins torch==2.13.0; on a machine without a local CPU wheel, use the CPU index:
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu -c constraints.txt -e .
EXPOSE 8000
# Build (or reuse) the built-in atlas in the volume, then serve it.
CMD ["saescope", "demo", "--atlas", "/data/atlas", "--host", "0.0.0.0", "--port", "8000"]
