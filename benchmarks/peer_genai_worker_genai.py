"""The onnxruntime-genai side of ``benchmarks/peer_genai.py``; runs in the SEPARATE genai venv.

This file imports nothing from ``trt_pipeline`` (the genai venv does not have it, and onnxruntime-genai
pins its own onnxruntime, which must not meet the main venv's). Two modes:

``make-peer SPEC.json OUT``
    Write a random-weight checkpoint (``save_pretrained``) of SPEC.json's ``architecture``
    (``Qwen2ForCausalLM`` when absent, or ``Gemma2ForCausalLM``) from its config fields
    (``{"config": {...}, "seed": 0, "tokenizer_dir": "..."}``); the tokenizer files of
    ``tokenizer_dir`` (our small preset's checkpoint) are copied beside it so genai's builder finds one.
``serve``
    A long-lived worker: one JSON request per stdin line, one JSON answer per stdout line. Requests:
    ``{"cmd": "load", "variant": "fp32", "model_dir": ..., "max_length": 1024, "threads": 2}``,
    ``{"cmd": "measure", "variant": ..., "phase": "prefill"|"decode", "n": 16, "iterations": 5,
    "warmup": 2}`` (answers per-call seconds), ``{"cmd": "graph_profile", "variant", "context"}`` (the
    decoder graph alone in a plain ORT session: ``ort_graph_profile.py``), ``{"cmd": "graph_spec",
    "variant"}`` (the graph's path and how genai binds its cache), ``{"cmd": "versions"}``,
    ``{"cmd": "quit"}``.

Timing uses genai's own runtime, ``og.Generator``, the way its users run it:

* prefill L: ``rewind_to(0)`` (untimed), then ``append_tokens(L ids)`` timed: one forward over the
  prompt writing the KV cache and the logits;
* decode @C: ``append_tokens(C ids)`` once to fill the cache, then ``append_tokens([id])`` timed (one
  forward of one token attending to C cached ones) and ``rewind_to(C)`` untimed after every call, so
  every timed step sees exactly C cached tokens. No sampling is timed (our side returns logits too).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


#: the architectures a peer checkpoint may have -> (config class, model class) in transformers
ARCHITECTURES = {"Qwen2ForCausalLM": ("Qwen2Config", "Qwen2ForCausalLM"),
                 "Gemma2ForCausalLM": ("Gemma2Config", "Gemma2ForCausalLM")}


def make_peer(spec_path: Path, out: Path) -> None:
    """Random-weight peer checkpoint with the given dims (seeded), plus the tokenizer files."""
    import torch
    import transformers

    spec = json.loads(spec_path.read_text())
    architecture = spec.get("architecture", "Qwen2ForCausalLM")
    if architecture not in ARCHITECTURES:
        raise SystemExit(f"{spec_path}: architecture {architecture!r} is not one of {', '.join(ARCHITECTURES)}")
    config_class, model_class = (getattr(transformers, name) for name in ARCHITECTURES[architecture])
    torch.manual_seed(int(spec.get("seed", 0)))
    model = model_class(config_class(**spec["config"])).to(torch.float32).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    source = Path(spec["tokenizer_dir"]) if spec.get("tokenizer_dir") else None
    for name in TOKENIZER_FILES if source else ():
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)


def set_threads(model_dir: Path, threads: int) -> None:
    """Pin genai's decoder session to ``threads`` intra-op threads and 1 inter-op thread."""
    path = model_dir / "genai_config.json"
    config = json.loads(path.read_text())
    options = config["model"]["decoder"].setdefault("session_options", {})
    options.update(intra_op_num_threads=threads, inter_op_num_threads=1)
    path.write_text(json.dumps(config, indent=4))


class GenaiSide:
    """One loaded ``og.Model`` + ``og.Generator`` per variant (fp32, int4)."""

    def __init__(self) -> None:
        import numpy as np
        import onnxruntime_genai as og

        self.og, self.np = og, np
        self.generators: dict[str, Any] = {}
        self.vocab: dict[str, int] = {}
        self.graphs: dict[str, tuple[Path, int, int, bool, int]] = {}  # path, max_length, head size, shared buffer, threads

    def load(self, variant: str, model_dir: str, max_length: int, threads: int) -> dict[str, Any]:
        set_threads(Path(model_dir), threads)
        model = self.og.Model(model_dir)
        params = self.og.GeneratorParams(model)
        params.set_search_options(max_length=max_length, do_sample=False)
        self.generators[variant] = (model, self.og.Generator(model, params))
        config = json.loads((Path(model_dir) / "genai_config.json").read_text())
        self.vocab[variant] = int(config["model"]["vocab_size"])
        self.graphs[variant] = (Path(model_dir) / config["model"]["decoder"]["filename"], max_length,
                                int(config["model"]["decoder"]["head_size"]),
                                bool(config["search"].get("past_present_share_buffer", False)), threads)
        return {"variant": variant, "vocab_size": self.vocab[variant], "max_length": max_length}

    def _ids(self, variant: str, length: int, salt: int) -> Any:
        rng = self.np.random.default_rng(7919 * salt + length)
        return rng.integers(0, self.vocab[variant] - 64, size=length, dtype=self.np.int32)

    def measure(self, variant: str, phase: str, n: int, iterations: int, warmup: int, clock: str = "wall") -> list[float]:
        """Per-call seconds of ``iterations`` timed calls after ``warmup`` untimed ones (``clock`` "cpu": CPU
        time of the calling thread, which runs the session when it has one intra-op thread)."""
        now = time.thread_time_ns if clock == "cpu" else time.perf_counter_ns
        generator = self.generators[variant][1]
        if phase == "prefill":
            ids, base = self._ids(variant, n, 0), 0
            step_ids = ids
        else:
            generator.rewind_to(0)
            generator.append_tokens(self._ids(variant, n, 1))
            base, step_ids = n, self._ids(variant, 1, 2)
        samples = []
        for index in range(warmup + iterations):
            generator.rewind_to(base)
            start = now()
            generator.append_tokens(step_ids)
            elapsed = (now() - start) / 1e9
            if index >= warmup:
                samples.append(elapsed)
        return samples


    def graph_spec(self, variant: str) -> dict[str, Any]:
        """How a plain session binds genai's decoder graph as genai's runtime does (for
        ``ort_graph_profile.interleaved_graph_times`` in another worker)."""
        path, max_length, head_size, shared, _ = self.graphs[variant]
        overrides = {"kv_cache_dim": head_size, **({"past_sequence_length": max_length} if shared else {})}
        return {"path": str(path), "overrides": overrides, "share_buffer": shared}

    def graph_profile(self, variant: str, context: int, runs: int = 50) -> dict[str, Any]:
        """genai's decoder graph in a plain ORT session, its cache bound as genai's runtime binds it (one
        ``max_length`` buffer per tensor shared by past and present when the config says so):
        ``ort_graph_profile.profile_decode_graph``."""
        from ort_graph_profile import profile_decode_graph  # beside this file; needs numpy + onnxruntime only

        spec, threads = self.graph_spec(variant), self.graphs[variant][4]
        return profile_decode_graph(spec["path"], context, overrides=spec["overrides"],
                                    share_buffer=spec["share_buffer"], runs=runs, threads=threads)


def versions() -> dict[str, str]:
    import onnxruntime
    import onnxruntime_genai

    return {"onnxruntime-genai": onnxruntime_genai.__version__, "onnxruntime (genai venv)": onnxruntime.__version__,
            "python (genai venv)": sys.version.split()[0]}


def serve() -> None:
    """Answer JSON requests from stdin; stdout carries only answers (library prints go to stderr)."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    side = GenaiSide()
    for line in sys.stdin:
        request = json.loads(line)
        command = request.pop("cmd")
        try:
            if command == "quit":
                answers.write(json.dumps({"ok": True}) + "\n")
                break
            if command == "load":
                result: Any = side.load(**request)
            elif command == "measure":
                result = side.measure(**request)
            elif command == "graph_profile":
                result = side.graph_profile(**request)
            elif command == "graph_spec":
                result = side.graph_spec(**request)
            elif command == "versions":
                result = versions()
            else:
                raise ValueError(f"unknown command {command!r}")
            answers.write(json.dumps({"ok": True, "result": result}) + "\n")
        except Exception as error:  # the orchestrator reports it and stops
            answers.write(json.dumps({"ok": False, "error": f"{type(error).__name__}: {error}"}) + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["make-peer"]:
        make_peer(Path(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1:2] == ["serve"]:
        serve()
    else:
        sys.exit(f"usage: {sys.argv[0]} make-peer SPEC.json OUT | serve")
