#!/usr/bin/env python
"""Django's command-line entry point."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if sys.argv[1:2] and sys.argv[1] in {"serve_llm", "write", "evaluate"}:  # they run a serving core in-process
        from agents.llm import threads

        threads.for_a_serving_process()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
