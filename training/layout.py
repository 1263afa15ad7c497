"""What a recipe leaves behind, as the job system (webapp/jobs/training.py) and the registry
(webapp/registry/services.py) read it: file names in the output folder and the exit code of a
cancelled run. Defined once here, with no torch, so the web side imports them too."""

from __future__ import annotations

RESULT = "result.json"  # {status, metrics, output, ...}: written last, atomically, by rank 0
METRICS = "metrics.jsonl"  # one JSON object per logged step, appended as training goes
CHECKPOINT = "checkpoint"  # the folder --resume continues from
ADAPTER_META = "scriptorium.json"  # beside a LoRA adapter: its role, base model and the base's checksum
EXIT_CANCELLED = 3  # the recipe stopped on SIGTERM/SIGINT and saved a checkpoint
