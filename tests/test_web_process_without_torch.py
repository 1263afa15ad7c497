"""The web tier starts without the model stack: importing the ASGI application, every view the URL
configuration names, the admin and the Celery app pulls in none of torch, transformers, peft or
sentence-transformers. Those cost the web process seconds and hundreds of megabytes at start and
are used only by agents and training workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.processes import ROOT

DENIED = ("torch", "transformers", "peft", "sentence_transformers")

PROBE = """
import json, os, resource, sys, time
started = time.perf_counter()
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
from webapp.asgi import application
from django.urls import get_resolver
from webapp.celery import app
get_resolver().url_patterns  # imports every view module
app.loader.import_default_modules()  # what a web process that queues tasks loads
print(json.dumps({"modules": sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[1:]),
                  "seconds": time.perf_counter() - started,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def test_the_web_process_imports_no_model_library():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "webapp.settings"}
    done = subprocess.run([sys.executable, "-c", PROBE, *DENIED], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["modules"] == [], f"the web process imported {found['modules'][:8]}"
