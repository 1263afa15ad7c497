"""Reading an engine's stream in tests: every request's whole text and its last delta."""

from __future__ import annotations


def collect(engine, requests, cancel=None):
    texts, ends = {}, {}
    for delta in engine.stream(requests, cancel=cancel):
        texts[delta.request_id] = texts.get(delta.request_id, "") + delta.text
        if delta.finished:
            ends[delta.request_id] = delta
    return texts, ends
