"""The server on an export whose cache is written in place: the same tokens as on the fused concat export.

Every test runs twice: on ``export --kv-cache inplace`` and on ``export --decoder-ops onnxruntime``
(GroupQueryAttention writing a shared ``[B, kv, T, D]`` cache, fed whole): the ``written`` engine.

``tiny_inplace_export`` and ``tiny_fused_export`` are one checkpoint with the same decoder ops; only
the cache contract differs (``[B, past + S, kv * D]`` written in place vs ``[B, kv, T, D]``
concatenated). The server addresses cache positions through the engine's ``KvLayout``, so every
path must give the concat export's greedy tokens (identical ids) and logits (max abs <= 1e-5):
one sequence, the padded decode batch with rows joining and leaving, the scheduler's prefix
cache (a follow-up continuing a whole cached conversation, one branching from a shorter prefix,
both concurrent), and the OpenAI endpoint. With an inplace cache a batch of one decodes in the
stepper's :class:`~trt_pipeline.models.glm4v.kv_arena.KvArena` (the cache is written in place),
and prefix-cache entries can share its buffer: they are checked byte for byte after later
requests continued or branched from them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from serve_helpers import API_KEY, MODEL, agent_messages, png_data_url

from trt_pipeline.models.glm4v.kv_arena import KV_BLOCK

KINDS = ("fused", "inplace")
LOGITS_ATOL = 1e-5
#: the exports whose cache the graph writes in place: fixture name -> export.json's kv_cache
WRITTEN = {"tiny_inplace_export": "inplace", "tiny_ort_export": "shared"}


@pytest.fixture(scope="module", params=list(WRITTEN))
def written_export(request: pytest.FixtureRequest) -> Path:
    """The export under test (``engines["inplace"]``): ``--kv-cache inplace`` or ``--decoder-ops onnxruntime``."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def engines(tiny_fused_export: Path, written_export: Path) -> Iterator[dict[str, Any]]:
    from trt_pipeline.serve.engine import ServeEngine

    loaded = {"fused": ServeEngine.load(tiny_fused_export, "ort", "fp32"),
              "inplace": ServeEngine.load(written_export, "ort", "fp32")}
    kind = loaded["inplace"].kv_layout.kind
    assert loaded["fused"].kv_layout.kind == "concat" and kind in WRITTEN.values()
    # the export is served as `serve` runs it: its cache fed in blocks (a shared one: whole), a lone reply
    # decoded through one kept binding per block (KeptDecode); batches of several rows take the general path
    stepper = loaded["inplace"]._stepper()
    assert stepper.arena.block == KV_BLOCK and stepper.kept is not None
    assert loaded["fused"]._stepper().kept is None
    yield loaded
    for engine in loaded.values():
        engine.close()


@pytest.fixture(scope="module")
def processing(tiny_fused_export: Path) -> Any:
    from trt_pipeline.models.glm4v.processing import Glm4vProcessing

    return Glm4vProcessing(tiny_fused_export / "hf")


@pytest.fixture(scope="module")
def prompts(processing: Any) -> list[Any]:
    from trt_pipeline.serve.chat import MediaPolicy, build_prompt
    from trt_pipeline.serve.protocol import ChatCompletionRequest

    bodies = [agent_messages(1), [{"role": "user", "content": "hi"}], agent_messages(2),
              [{"role": "user", "content": "open the settings app and turn on wifi please"}]]
    return [build_prompt(processing, ChatCompletionRequest(model=MODEL, messages=m), MediaPolicy()) for m in bodies]


def run_prefill(engine: Any, prompt: Any) -> tuple[torch.Tensor, Any]:
    from trt_pipeline.serve.prefill import PrefillJob

    job = PrefillJob(engine, prompt, None, 0)
    while not job.advance():
        pass
    return job.logits, job.cache()


def max_abs(a: Any, b: Any) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


# -- one sequence --------------------------------------------------------------------------------
def solo_greedy(engine: Any, prompt: Any, steps: int) -> tuple[list[int], torch.Tensor, dict[str, Any]]:
    """Greedy tokens and logits of ``prompt`` alone; -> also the memory owner (``.base``) of each
    cache array after the prefill, the first and the last decode step."""
    from trt_pipeline.serve.batch import DecodeBatch

    logits, cache = run_prefill(engine, prompt)
    tokens, every = [int(logits.argmax())], [logits]
    owners = {"prefill": {name: array.base for name, array in zip(engine.past_names, cache.kv)}}
    batch = DecodeBatch(engine)
    batch.join("solo", cache)
    for step in range(steps):
        logits = batch.step([tokens[-1]])[0]
        every.append(logits)
        tokens.append(int(logits.argmax()))
        if step in (0, steps - 1):
            owners["first" if step == 0 else "last"] = {name: array.base for name, array in batch.state.past.items()}
    return tokens, torch.stack(every), owners


@pytest.mark.parametrize("index", [0, 3])
def test_one_sequence_equals_the_fused_export_and_decodes_in_place(engines: dict[str, Any], prompts: list[Any],
                                                                    index: int) -> None:
    runs = {kind: solo_greedy(engines[kind], prompts[index], 12) for kind in KINDS}
    (want, want_logits, _), (got, got_logits, owners) = runs["fused"], runs["inplace"]
    assert got == want and len(set(want)) > 1
    assert max_abs(got_logits, want_logits) <= LOGITS_ATOL
    # a batch of one decodes in the stepper's arena: from the prefill through the last decode step
    # the sequence's cache is a prefix view of the same buffers (written in place, never copied)
    arena = engines["inplace"]._stepper().arena
    assert all(owners["prefill"][name] is owners["first"][name] is owners["last"][name] is arena.buffers[name]
               for name in arena.buffers)
    assert arena.high == len(prompts[index].token_ids) + 12
    assert engines["fused"]._stepper().arena is None


def test_without_io_binding_the_inplace_export_gives_the_same_tokens(written_export: Path, engines: dict[str, Any],
                                                                      prompts: list[Any]) -> None:
    """``serve --no-io-binding``: ONNX Runtime returns new cache arrays (nothing written in place), same numbers."""
    from trt_pipeline.runtime.onnxruntime_runner import OrtSettings
    from trt_pipeline.serve.engine import ServeEngine

    engine = ServeEngine.load(written_export, "ort", "fp32", ort=OrtSettings(io_binding=False))
    try:
        got, got_logits, _ = solo_greedy(engine, prompts[0], 8)
    finally:
        engine.close()
    want, want_logits, _ = solo_greedy(engines["fused"], prompts[0], 8)
    assert got == want
    assert max_abs(got_logits, want_logits) <= LOGITS_ATOL


# -- the padded decode batch ---------------------------------------------------------------------
def batched_greedy(engine: Any, prompts: list[Any], plan: dict[int, tuple[int, int]]) -> tuple[dict, dict, dict]:
    """Rows join at their step and leave after their decode steps; -> tokens, logits, left caches per prompt."""
    from trt_pipeline.serve.batch import DecodeBatch

    batch, tokens, logits_seen, left, widths = DecodeBatch(engine), {}, {}, {}, set()
    for step in range(16):
        for i, (join, _steps) in plan.items():
            if join == step:
                first, cache = run_prefill(engine, prompts[i])
                tokens[i], logits_seen[i] = [int(first.argmax())], [first]
                batch.join(i, cache)
        if not len(batch):
            break
        members = batch.members
        out = batch.step([tokens[i][-1] for i in members])
        widths.add(len(members))
        for row, i in enumerate(members):
            logits_seen[i].append(out[row])
            tokens[i].append(int(out[row].argmax()))
            if len(tokens[i]) == plan[i][1] + 1:
                left[i] = batch.leave(i)
    assert not len(batch) and widths >= {1, 2, 3}
    return tokens, {i: torch.stack(v) for i, v in logits_seen.items()}, left


def test_continuous_batching_equals_the_fused_export(engines: dict[str, Any], prompts: list[Any]) -> None:
    """Rows join at steps 0/0/3/5 and leave at different steps (batches of 1 to 3 rows, padding
    dropped as rows leave): tokens, logits and each row's left cache as on the concat export."""
    plan = {0: (0, 9), 1: (0, 4), 2: (3, 11), 3: (5, 6)}  # prompt -> (join step, decode steps)
    runs = {kind: batched_greedy(engines[kind], prompts, plan) for kind in KINDS}
    (want, want_logits, want_left), (got, got_logits, got_left) = runs["fused"], runs["inplace"]
    layout = engines["inplace"].kv_layout
    assert got == want
    for i, (_join, steps) in plan.items():
        assert max_abs(got_logits[i], want_logits[i]) <= LOGITS_ATOL
        assert got_left[i].length == want_left[i].length == len(prompts[i].token_ids) + steps
        assert got_left[i].next_position == want_left[i].next_position
        assert max(max_abs(layout.to_heads(a), b) for a, b in zip(got_left[i].kv, want_left[i].kv)) <= LOGITS_ATOL


# -- the scheduler and its prefix cache ----------------------------------------------------------
def continued(prompt: Any, ids: list[int]) -> Any:
    """``prompt`` followed by the text tokens ``ids`` (identity key and M-RoPE positions extended)."""
    count = len(ids)
    new = torch.arange(prompt.next_position, prompt.next_position + count).expand(3, count)
    return replace(prompt, token_ids=prompt.token_ids + ids, key=prompt.key + ids,
                   positions=torch.cat([prompt.positions, new], dim=1), next_position=prompt.next_position + count)


def branched(prompt: Any, length: int, ids: list[int]) -> Any:
    """The first ``length`` tokens of ``prompt`` (after its images) followed by ``ids``."""
    assert all(end <= length for _start, end in prompt.image_runs)
    positions = prompt.positions[:, :length]
    cut = replace(prompt, token_ids=prompt.token_ids[:length], key=prompt.key[:length], positions=positions,
                  next_position=int(positions.max()) + 1)
    return continued(cut, ids)


class Script:
    """Runs phases of concurrent greedy requests through a real :class:`Scheduler` (its thread)."""

    def __init__(self, engine: Any, processing: Any, prefix_cache: Any) -> None:
        from trt_pipeline.serve.metrics import ServeMetrics
        from trt_pipeline.serve.scheduler import Scheduler

        self.processing, self.prefix_cache = processing, prefix_cache
        # no EOS: every reply runs to max_tokens, so the cached lengths below are exact
        self.scheduler = Scheduler(engine, [], ServeMetrics(), prefix_cache)
        self.scheduler.start()

    def phase(self, prompts: list[Any], max_tokens: int) -> list[tuple[list[int], int]]:
        """Submit all ``prompts`` at once; -> (output token ids, cached tokens) per prompt."""
        from trt_pipeline.serve.output import TextAssembler
        from trt_pipeline.serve.sampling import Sampler, SamplingParams
        from trt_pipeline.serve.scheduler import DoneEvent, ErrorEvent, GenerationRequest

        done = [threading.Event() for _ in prompts]
        events: list[list[Any]] = [[] for _ in prompts]
        requests = []
        for i, prompt in enumerate(prompts):
            def emit(event: Any, i: int = i) -> None:
                events[i].append(event)
                if isinstance(event, (DoneEvent, ErrorEvent)):
                    done[i].set()
            requests.append(GenerationRequest(prompt=prompt, sampler=Sampler(SamplingParams(temperature=0.0), prompt.token_ids),
                                              max_tokens=max_tokens, assembler=TextAssembler(self.processing.tokenizer),
                                              emit=emit))
        for request in requests:
            self.scheduler.submit(request)
        for i, event in enumerate(done):
            assert event.wait(120), f"request {i} did not finish"
            assert not isinstance(events[i][-1], ErrorEvent), events[i][-1]
        return [(list(r.output_ids), events[i][-1].cached_tokens) for i, r in enumerate(requests)]

    def entries(self) -> dict[tuple[int, ...], list[np.ndarray]]:
        """Copies of every prefix-cache entry's arrays, by key."""
        return {key: [array.copy() for array in entry.kv] for key, entry in self.prefix_cache._entries.items()}

    def assert_intact(self, snapshot: dict[tuple[int, ...], list[np.ndarray]]) -> None:
        for key, arrays in snapshot.items():
            entry = self.prefix_cache._entries[key]
            assert all(np.array_equal(a, b) for a, b in zip(entry.kv, arrays)), f"entry of {len(key)} tokens changed"

    def assert_intact_after(self, run: Callable[[], Any]) -> Any:
        """``run()``'s result, after checking every entry stored before it is byte for byte unchanged."""
        before = self.entries()
        result = run()
        self.assert_intact(before)
        return result

    def shared_buffer(self, first: tuple[int, ...], second: tuple[int, ...]) -> bool:
        """Whether two entries' arrays are views of the same buffers (the inplace arena's)."""
        a, b = self.prefix_cache._entries[first].kv, self.prefix_cache._entries[second].kv
        return all(x.base is not None and x.base is y.base for x, y in zip(a, b))

    def close(self) -> None:
        self.scheduler.stop()


def run_script(engine: Any, processing: Any, base: Any, other: Any) -> dict[str, Any]:
    """Four phases over one PrefixCache; every entry stored so far is checked byte for byte after each.

    1. ``base`` alone: a batch of one (with an inplace cache its entry is a view of the arena).
    2. ``peek`` continues the whole first conversation (reply included) and stops after one token:
       with an inplace cache it extends the very buffer the first entry lives in, in place, and
       its own entry is a longer view of that buffer.
    3. Together: ``follow`` continues the first conversation differently (a prefix of ``peek``'s
       entry, shorter than what the arena holds while that entry still reads the rows after it: the
       arena must copy, or ``follow``'s prefill would overwrite them),
       ``branch`` leaves it after a shorter prefix, ``other`` runs alongside.
    4. Together: ``again`` continues the whole first entry once more, ``deeper`` continues ``follow``'s.
    """
    from trt_pipeline.serve.prefix_cache import PrefixCache

    script, out = Script(engine, processing, PrefixCache(max_entries=16)), {}
    try:
        (reply, out["base_cached"]), = script.phase([base], 6)
        extra = base.token_ids[1:4]
        peek = continued(base, reply + extra)
        (out["peek"], out["peek_cached"]), = script.assert_intact_after(lambda: script.phase([peek], 1))
        out["shared"] = script.shared_buffer(tuple(base.key + reply[:-1]), tuple(peek.key))
        cut = max(end for _start, end in base.image_runs) + 3
        branch = branched(base, cut, [t for t in base.token_ids[:8] if t != base.token_ids[cut]][:3])
        follow = continued(base, reply + [t for t in base.token_ids if t != extra[0]][:3])
        prompts = {"follow": follow, "branch": branch, "other": other}
        for name, (ids, cached) in zip(prompts, script.assert_intact_after(lambda: script.phase(list(prompts.values()), 8))):
            out[name], out[name + "_cached"] = ids, cached
        again = continued(base, reply[:-1] + [t for t in extra if t != reply[-1]][:1])
        deeper = continued(follow, out["follow"] + extra)
        for name, (ids, cached) in zip(("again", "deeper"), script.assert_intact_after(lambda: script.phase([again, deeper], 7))):
            out[name], out[name + "_cached"] = ids, cached
        out["base"], out["entries"] = reply, len(script.prefix_cache)
        out["lengths"] = {"base": len(base.token_ids) + 5, "cut": cut, "follow": len(base.token_ids) + 6,
                          "deeper": len(follow.token_ids) + 7}
        return out
    finally:
        script.close()


def test_prefix_cache_hits_and_branches_equal_the_fused_export(engines: dict[str, Any], prompts: list[Any],
                                                                processing: Any) -> None:
    want = run_script(engines["fused"], processing, prompts[0], prompts[3])
    got = run_script(engines["inplace"], processing, prompts[0], prompts[3])
    # with the inplace cache the first entry and peek's (which continued it in place) share one arena buffer
    want.pop("shared")
    assert got.pop("shared") is True
    assert got == want
    lengths = got["lengths"]
    assert got["base_cached"] == 0 and got["other_cached"] < lengths["cut"]  # at most the chat template's start
    assert got["peek_cached"] == got["again_cached"] == lengths["base"]  # the whole first conversation
    assert got["follow_cached"] == lengths["follow"]  # a prefix of peek's entry
    assert got["branch_cached"] == lengths["cut"]  # a shorter prefix
    assert got["deeper_cached"] == lengths["deeper"]
    assert got["entries"] == 7 and len({tuple(got[name]) for name in ("follow", "branch", "again")}) > 1


# -- the OpenAI endpoint -------------------------------------------------------------------------
def chat(server: Any, messages: list[dict[str, Any]], stream: bool = False) -> tuple[str, int]:
    """Greedy reply text and cached prompt tokens (0 when streaming)."""
    params = {"model": MODEL, "messages": messages, "temperature": 0.0, "max_tokens": 10}
    client = server.client(api_key=API_KEY)
    if not stream:
        response = client.chat.completions.create(**params)
        return response.choices[0].message.content or "", response.usage.prompt_tokens_details.cached_tokens
    chunks = client.chat.completions.create(stream=True, **params)
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices), 0


def test_openai_endpoint_on_the_inplace_export_equals_the_fused_export(
        tiny_fused_export: Path, written_export: Path, start_server: Any) -> None:
    import concurrent.futures

    from trt_pipeline.serve.chat import MediaPolicy
    from trt_pipeline.serve.model import ServeConfig

    def session(out: Path) -> list[tuple[str, int]]:
        server = start_server(ServeConfig(out=out, backend="ort", api_key=API_KEY, media=MediaPolicy(max_pixels=200_000)))
        first = agent_messages(1)
        results = [chat(server, first)]
        followup = first + [{"role": "assistant", "content": results[0][0]},
                            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_data_url(color=(9, 9, 9))}},
                                                         {"type": "text", "text": "Step 2."}]}]
        others = [agent_messages(1 + i % 2) for i in range(3)]
        for i, messages in enumerate(others):
            messages[-1]["content"][1]["text"] += f" Client {i}."
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results += list(pool.map(lambda m: chat(server, m, stream=True), others))
        results.append(chat(server, followup))
        server.stop()
        return results

    want, got = session(tiny_fused_export), session(written_export)
    assert got == want
    assert got[-1][1] > 0 and len({text for text, _ in got}) > 1


# -- loading ---------------------------------------------------------------------------------------
def test_torch_backend_serves_the_flavour_the_export_traced(written_export: Path, engines: dict[str, Any],
                                                            prompts: list[Any]) -> None:
    """``serve --backend torch`` runs the export's decoder flavour (its ops and cache) and its tokens."""
    from trt_pipeline.artifacts import read_export_manifest
    from trt_pipeline.serve.engine import ServeEngine

    manifest = read_export_manifest(written_export)
    engine = ServeEngine.load(written_export, "torch", "fp32")
    try:
        assert engine.kv_layout.kind == manifest.kv_cache and engine.decoder.module.ops == manifest.decoder_ops
        want, want_logits, _ = solo_greedy(engines["fused"], prompts[3], 8)
        got, got_logits, _ = solo_greedy(engine, prompts[3], 8)
    finally:
        engine.close()
    assert got == want
    assert max_abs(got_logits, want_logits) <= 1e-4


def test_a_decoder_of_another_cache_layout_is_refused(written_export: Path, tiny_fused_export: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Runners whose cache is not the export's (e.g. an engine built from another export) fail at load,
    naming export.json, instead of having their caches cut on the wrong axis."""
    from trt_pipeline.errors import OnnxModelError
    from trt_pipeline.serve import engine as serve_engine

    other = serve_engine.RUNNER_FACTORIES["ort"]
    monkeypatch.setitem(serve_engine.RUNNER_FACTORIES, "ort", lambda _out, precision, ort: other(tiny_fused_export, precision, ort))
    from trt_pipeline.artifacts import read_export_manifest

    kind = read_export_manifest(written_export).kv_cache
    with pytest.raises(OnnxModelError, match=rf"concat KV cache, but .*export\.json records --kv-cache {kind}"):
        serve_engine.ServeEngine.load(written_export, "ort", "fp32")


def test_describe_names_the_cache_layout(engines: dict[str, Any], written_export: Path) -> None:
    from trt_pipeline.serve.model import ServeConfig, describe

    kind = engines["inplace"].kv_layout.kind
    assert f"{kind} KV cache" in describe(ServeConfig(out=written_export), engines["inplace"])
    assert "concat KV cache" in describe(ServeConfig(out=written_export), engines["fused"])
