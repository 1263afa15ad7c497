"""The serving core on the tiny model through the real transformers code: requests join a busy
batch and leave it without changing anyone's output, the KV budget queues what does not fit,
interactive requests overtake bulk ones, runs share rows fairly, cancels touch one row only, and
prefix-cache hits give what a cold prefill gives."""

from __future__ import annotations

import math
import queue
import time

import pytest

from agents.llm.transformers_backend import TransformersEngine
from agents.llm.types import BULK, INTERACTIVE, AdapterSpec, GenerationRequest

BRIEF = ("You are a section writer for an article about coastal birds for walkers. "
         "Outline: 1 Gulls, 2 Terns, 3 Puffins, 4 Gannets. Keep to the plan. ") * 3
TOPICS = ["gulls", "terns", "puffins", "gannets", "skuas", "eiders", "petrels", "fulmars"]


def _request(rid: str, topic: str, tokens: int = 12, **extra) -> GenerationRequest:
    return GenerationRequest(id=rid, max_new_tokens=tokens, messages=[
        {"role": "system", "content": BRIEF}, {"role": "user", "content": f"Write about {topic}."}], **extra)


def _drain(out: queue.Queue, timeout: float = 120) -> tuple[str, object]:
    text, deadline = "", time.monotonic() + timeout
    while True:
        delta = out.get(timeout=max(0.1, deadline - time.monotonic()))
        text += delta.text
        if delta.finished:
            return text, delta


def _wait_for_tokens(out: queue.Queue, count: int) -> str:
    """Read deltas until a request has written `count` tokens (it is decoding in the batch)."""
    text = ""
    while True:
        delta = out.get(timeout=60)
        assert not delta.finished, delta
        text += delta.text
        if delta.completion_tokens >= count:
            return text


def _until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.001)


def _alone(request: GenerationRequest, model_dir) -> str:
    engine = TransformersEngine(model_dir, dtype="float32", prefix_cache_tokens=0)
    try:
        return _drain(engine.core.submit(request))[0]
    finally:
        engine.close()


@pytest.fixture
def engine(tiny_model_dir):
    engine = TransformersEngine(tiny_model_dir, dtype="float32", prefix_cache_tokens=0)
    yield engine
    engine.close()


def test_a_request_joining_a_busy_batch_writes_what_it_writes_alone(tiny_model_dir, tiny_adapters, engine):
    writer = AdapterSpec("writer@1", str(tiny_adapters["writer"]))
    busy = [engine.core.submit(_request(f"busy{i}", TOPICS[i], tokens=400, group="run-a")) for i in range(3)]
    for out in busy:
        _wait_for_tokens(out, 5)
    late = [_request("late-base", "puffins", tokens=20), _request("late-writer", "gannets", tokens=20, adapter=writer)]
    outs = {r.id: engine.core.submit(r) for r in late}
    _until(lambda: engine.core.metrics()["rows_running"] == 5)  # they joined the three running rows
    for request in late:
        text, end = _drain(outs[request.id])
        assert end.finish_reason == "length" and end.completion_tokens == 20
        assert text == _alone(request, tiny_model_dir), request.id
    for request_id in ("busy0", "busy1", "busy2"):
        engine.core.cancel(request_id)
    assert [_drain(out)[1].finish_reason for out in busy] == ["cancelled"] * 3


def test_a_full_kv_budget_queues_requests_and_admits_them_as_room_frees(tiny_model_dir):
    requests = [_request(f"r{i}", TOPICS[i], tokens=30) for i in range(4)]
    engine = TransformersEngine(tiny_model_dir, dtype="float32", prefix_cache_tokens=0)
    need = len(engine.prompt_ids(requests[0])) + 30
    engine.close()
    # Room for two rows of this size: the other two wait until a row frees.
    small = TransformersEngine(tiny_model_dir, dtype="float32", kv_budget_tokens=2 * need + 8, prefix_cache_tokens=0)
    try:
        outs = [small.core.submit(r) for r in requests]
        peak_rows, peak_waiting = 0, 0
        while any(out.empty() for out in outs[2:]):
            metrics = small.core.metrics()
            peak_rows = max(peak_rows, metrics["rows_running"])
            peak_waiting = max(peak_waiting, metrics["queue_length"])
            assert metrics["kv_tokens_reserved"] <= metrics["kv_tokens_budget"]
            assert metrics["kv_bytes_allocated"] <= metrics["kv_tokens_budget"] * small.core.kv.bytes_per_token()
            time.sleep(0.001)
        texts = [_drain(out)[0] for out in outs]
        assert peak_rows <= 2 and peak_waiting >= 1
        assert texts == [_alone(r, tiny_model_dir) for r in requests]
        # One request larger than the whole budget fails alone, with a reason.
        text, end = _drain(small.core.submit(_request("huge", "gulls", tokens=10 * need)))
        assert end.finish_reason == "error" and "KV budget" in end.error
    finally:
        small.close()


def test_an_interactive_request_overtakes_queued_bulk_work(tiny_model_dir):
    engine = TransformersEngine(tiny_model_dir, dtype="float32", max_rows=2, prefix_cache_tokens=0)
    try:
        bulk = [_request(f"bulk{i}", TOPICS[i], tokens=120, priority=BULK, group="run-a") for i in range(5)]
        outs = {r.id: engine.core.submit(r) for r in bulk}
        head = _wait_for_tokens(outs["bulk0"], 3)
        title = _request("title", "the article's title", tokens=15, priority=INTERACTIVE, group="run-b")
        title_out = engine.core.submit(title)
        text, end = _drain(title_out)
        # It finished before any queued bulk request wrote a word, and a bulk row made room for it.
        assert all(outs[f"bulk{i}"].empty() for i in (2, 3, 4))
        assert engine.core.metrics()["preemptions_total"] >= 1
        assert text == _alone(title, tiny_model_dir)
        # The preempted bulk request came back and wrote exactly what it writes alone.
        texts = [_drain(outs[r.id])[0] for r in bulk]
        texts[0] = head + texts[0]
        assert texts == [_alone(r, tiny_model_dir) for r in bulk]
    finally:
        engine.close()


def test_two_runs_share_the_rows_fairly(tiny_model_dir):
    engine = TransformersEngine(tiny_model_dir, dtype="float32", max_rows=4, prefix_cache_tokens=0)
    try:
        first = [_request(f"a{i}", TOPICS[i], tokens=150, group="run-a") for i in range(8)]
        outs = {r.id: engine.core.submit(r) for r in first}
        head = _wait_for_tokens(outs["a0"], 3)
        _until(lambda: engine.core.metrics()["queue_length"] == 4)  # run A holds every row, 4 more wait
        assert engine.core.metrics()["rows_running"] == 4
        second = [_request(f"b{i}", TOPICS[i], tokens=20, group="run-b") for i in range(2)]
        outs.update({r.id: engine.core.submit(r) for r in second})
        # Run B gets its share at once (two of four rows), while run A still has work waiting.
        text, end = _drain(outs["b0"], timeout=60)
        _drain(outs["b1"], timeout=60)
        assert outs["a7"].empty()  # A's last request has not started yet: B did not wait for A
        assert engine.core.metrics()["preemptions_total"] >= 1
        assert text == _alone(second[0], tiny_model_dir)
        texts = [_drain(outs[r.id])[0] for r in first[:3]]
        texts[0] = head + texts[0]
        assert texts == [_alone(r, tiny_model_dir) for r in first[:3]]
    finally:
        engine.close()


def test_cancelling_one_row_leaves_the_others_output_unchanged(engine, tiny_model_dir):
    requests = [_request(f"r{i}", TOPICS[i], tokens=60) for i in range(3)]
    outs = [engine.core.submit(r) for r in requests]
    head = _wait_for_tokens(outs[1], 5)
    engine.core.cancel("r1")
    texts = [_drain(out) for out in outs]
    texts[1] = (head + texts[1][0], texts[1][1])
    assert texts[1][1].finish_reason == "cancelled" and texts[1][1].completion_tokens < 60
    assert [texts[0][0], texts[2][0]] == [_alone(requests[0], tiny_model_dir), _alone(requests[2], tiny_model_dir)]
    # The cancelled row's text so far is what it would have written (a prefix of it).
    assert _alone(requests[1], tiny_model_dir).startswith(texts[1][0])


def test_the_engine_interface_cancels_through_the_callers_check(tiny_model_dir):
    engine = TransformersEngine(tiny_model_dir, dtype="float32", cancel_poll_s=0.0)
    try:
        calls = []

        def cancel(active):
            calls.append(list(active))
            return {"doomed"} if len(calls) > 3 else set()

        ends = {d.request_id: d for d in engine.stream([_request("doomed", "gulls", tokens=300),
                                                        _request("kept", "gulls", tokens=8)], cancel=cancel)
                if d.finished}
        assert ends["doomed"].finish_reason == "cancelled" and ends["doomed"].completion_tokens < 300
        assert ends["kept"].finish_reason == "length" and ends["kept"].completion_tokens == 8
    finally:
        engine.close()


def test_prefix_cache_hits_give_the_output_of_a_cold_prefill(tiny_model_dir, tiny_adapters):
    writer = AdapterSpec("writer@1", str(tiny_adapters["writer"]))
    requests = [_request(f"r{i}", topic, tokens=15, adapter=writer if i % 2 else None)
                for i, topic in enumerate(TOPICS[:4])]
    engine = TransformersEngine(tiny_model_dir, dtype="float32", prefix_cache_tokens=4096)
    try:
        # Submitted together: prefilled one after another, so each reuses the brief the first
        # request of its adapter computed.
        together = [_drain(out)[0] for out in [engine.core.submit(r) for r in requests]]
        metrics = engine.core.metrics()
        assert metrics["prefix_cache_hits_total"] == 2 and metrics["prefix_cache_hit_tokens_total"] > 100
        again = [_drain(engine.core.submit(r))[0] for r in requests]  # whole prompts cached now
        assert engine.core.metrics()["prefix_cache_hits_total"] == 6
    finally:
        engine.close()
    cold = [_alone(r, tiny_model_dir) for r in requests]
    assert together == cold and again == cold


def test_bad_requests_fail_alone_and_the_batch_runs_on(engine):
    good = engine.core.submit(_request("good", "gulls", tokens=10))
    bad = {
        "nan": _request("nan", "gulls", temperature=math.nan),
        "negative": _request("negative", "gulls", top_p=-1.0),
        "zero-tokens": _request("zero-tokens", "gulls", tokens=0),
        "too-long": GenerationRequest(id="too-long", prompt="gull " * 5000, max_new_tokens=5),
    }
    for request_id, request in bad.items():
        text, end = _drain(engine.core.submit(request))
        assert end.finish_reason == "error" and end.error, request_id
    assert "context" in _drain(engine.core.submit(bad["too-long"]))[1].error
    text, end = _drain(good)
    assert end.finish_reason == "length" and end.completion_tokens == 10 and text


def test_a_request_longer_than_the_context_stops_at_its_end(tiny_model_dir):
    engine = TransformersEngine(tiny_model_dir, dtype="float32")
    try:
        prompt_tokens = len(engine.prompt_ids(GenerationRequest(id="x", prompt="gull " * 2000)))
        text, end = _drain(engine.core.submit(GenerationRequest(id="x", prompt="gull " * 2000, max_new_tokens=500)))
        assert end.finish_reason == "length"
        assert end.completion_tokens == engine.core.max_positions - prompt_tokens
    finally:
        engine.close()


def test_prepacked_weights_write_what_plain_weights_write(tiny_model_dir, tiny_adapters):
    writer = AdapterSpec("writer@1", str(tiny_adapters["writer"]))
    requests = [_request("base", "gulls", tokens=20), _request("lora", "terns", tokens=20, adapter=writer)]
    texts = {}
    for packed in (True, False):
        engine = TransformersEngine(tiny_model_dir, dtype="float32", pack_weights=packed)
        try:
            assert engine.packed == packed
            texts[packed] = [_drain(out)[0] for out in [engine.core.submit(r) for r in requests]]
        finally:
            engine.close()
    assert texts[True] == texts[False]


def test_no_part_of_the_engine_holds_its_owner(tiny_model_dir):
    """The engine owns the loaded model, the adapter manager and the core; the core owns its
    runner. None of them keeps a reference to what owns it (one owner per object)."""
    engine = TransformersEngine(tiny_model_dir, dtype="float32")
    try:
        owned = {"core": (engine.core, engine), "runner": (engine.core.runner, engine.core),
                 "adapters": (engine.adapters, engine), "loaded": (engine.loaded, engine)}
        for name, (part, owner) in owned.items():
            held = [key for key, value in vars(part).items() if value is owner or value is engine]
            assert not held, f"the {name} holds its owner in {held}"
        assert engine.core.adapters is engine.adapters and engine.core.runner.adapters is engine.adapters
    finally:
        engine.close()
