"""Scriptorium's Django project: settings, ASGI and Celery apps, and the Django apps."""

from __future__ import annotations

from webapp.celery import app as celery_app

__all__ = ["celery_app"]
