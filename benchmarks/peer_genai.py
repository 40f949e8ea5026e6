"""autoglm-trt's ONNX decoder against onnxruntime-genai's on the same text dims, interleaved in one run.

The peer (issue 16): onnxruntime-genai's model builder emits decoder graphs tuned for ONNX Runtime
(contrib ops: GroupQueryAttention, SkipSimplifiedLayerNormalization, MatMulNBits). This script puts
both projects' decoders on the same machine, at the same moment, with the same thread count:

1. **genai venv** (``--venv``, default ``/work/.venvs/genai``; never the project's venv): created when
   missing, with ``onnxruntime-genai==0.18.*`` (which pins its own onnxruntime) and what its model
   builder needs (torch CPU ``2.13.0``, transformers, onnx, onnx_ir).
2. **Peer model** (``--peer``): a random-weight checkpoint with the small preset's text dims (hidden,
   layers, heads, KV heads, FFN, vocab, rope theta, norm eps; see :func:`peer_config`), then
   ``python -m onnxruntime_genai.models.builder -i <hf> -o <out> -p fp32|int4 -e cpu``.
   The weights moved per token (every projection, the LM head) are the same shapes as ours.

   * ``qwen2`` (the issue's peer, default): ``Qwen2ForCausalLM``. It has 2 RMSNorms per layer where
     GLM-4 has 4 (GLM-4's "sandwich" norms after attention and after the MLP), full instead of
     partial (half) rotary, 1-D instead of M-RoPE positions.
   * ``gemma2``: ``Gemma2ForCausalLM`` set up as GLM-4's layer: the same 4 norms per layer in the same
     places, SiLU MLP, no soft-capping, every layer full attention, scale 1/sqrt(head_dim). What is
     left differs little at decode: full rotary, 1-D positions, genai's q/k/v packed into one MatMul
     and the embedding scaled by sqrt(hidden) (one Mul). This peer asks what genai's graph does on a
     layer with GLM-4's work, so the gap to ``qwen2`` is the price of the architecture, not the graph.
3. **Ours**: ``autoglm-trt init-checkpoint --preset small`` + ``export`` (re-made when the package
   source changed since the last export), and ``precision int4`` when main has that command.
4. **Interleaved rounds**: two long-lived workers (ours in the project venv,
   ``peer_genai_worker_ours.py``; genai in its venv, ``peer_genai_worker_genai.py``) take JSON
   "measure" commands over stdin/stdout; every round measures every case on both sides, alternating
   which side goes first. Per round the median of the timed calls is kept; the table gives the median
   over rounds and the speed-up ``genai_ms / ours_ms`` (> 1: ours faster) as the median of the
   per-round paired ratios (robust to load drifting during the run).

   Ours is timed through the project's own ``OrtBackend`` (ONNX Runtime session + host-side stepper:
   embedding lookup, M-RoPE tables, mask); genai through its own runtime, ``og.Generator``
   (``append_tokens``; ``rewind_to`` between calls). Both include their host work; neither samples.
5. Also recorded: node counts and op-type histograms of both decoders, ORT's op-type time split of our
   decoder at 512 cached tokens, versions, thread settings and ``uptime`` before and after.
6. Each side's decoder graph alone (``ort_graph_profile.py``, after the rounds): a plain ORT session of
   its own venv, one decode step at 64 and 512 cached tokens, the cache bound as its runtime binds it,
   profiled: kernel time vs the executor's time between kernels (which grows with the node count).
7. Both decoder graphs in ONE process of the genai venv (the control worker), timed in turns: the same
   onnxruntime at the same moments, so the graphs alone are compared (``graphs_same_ort``).

Writes ``benchmarks/results/peer_genai.json`` and ``peer_genai.png``; prints a table.

    python benchmarks/peer_genai.py [--threads 2] [--rounds 5] [--no-int4] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trt_pipeline.models.glm4v.decoder_ops import DECODER_OPS, KV_CACHES, default_kv_cache

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORKER_OURS = ROOT / "benchmarks" / "peer_genai_worker_ours.py"
WORKER_GENAI = ROOT / "benchmarks" / "peer_genai_worker_genai.py"
DEFAULT_VENV = Path("/work/.venvs/genai")
#: what the genai venv gets (torch pinned to the CPU wheel: a bare `torch` pulls a multi-GB CUDA build)
GENAI_PACKAGES = ("torch==2.13.0", "onnxruntime-genai==0.18.*", "transformers", "onnx", "onnx_ir",
                  # the control side (our code on genai's onnxruntime) needs these of ours
                  "polygraphy", "pillow", "filelock", "psutil", "pydantic", "safetensors", "typer", "rich")
#: (phase, n): prefill of n prompt tokens on an empty cache; one decode step at n cached tokens
CASES: tuple[tuple[str, int], ...] = (("prefill", 16), ("prefill", 256), ("decode", 64), ("decode", 512))
#: ``precision int4`` as genai's builder quantizes by default (every MatMul incl. the LM head, 32-weight
#: blocks), in the ONNX Runtime flavour (fp32 activations: fuses into MatMulNBits); no held-out gate
INT4_MATCHING_GENAI = ["--activations", "fp32", "--block-size", "32", "--quantize-lm-head", "--no-evaluate"]
#: fallback when that is refused: our defaults in the ONNX Runtime flavour
INT4_ORT_DEFAULTS = ["--activations", "fp32", "--no-evaluate"]
GENAI_LOGITS_NOTE = ("genai's prefill computes logits for every prompt position (its builder's default, no "
                     "prune_lm_head); ours for the last one: at vocab 2304 the LM head is ~2 % of a prompt token's FLOPs")
#: measuring sides: our export in the project venv, genai's model in its venv, and the control: our
#: export and our code run in the genai venv (genai's onnxruntime version)
CONTROL = "ours_genai_ort"
SIDES = ("ours", "genai", CONTROL)
#: peer name -> the transformers architecture genai's builder gets
PEERS = {"qwen2": "Qwen2ForCausalLM", "gemma2": "Gemma2ForCausalLM"}
#: Qwen2Config / Gemma2Config field <- GLM-4.1V text_config field (same meaning)
QWEN2_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "rms_norm_eps", "max_position_embeddings")


# ------------------------------------------------------------------------------------------------
# pure parts (tested without the genai venv)
# ------------------------------------------------------------------------------------------------


def case_name(phase: str, n: int) -> str:
    return f"prefill {n}" if phase == "prefill" else f"decode @{n}"


def qwen2_config(text: Mapping[str, Any]) -> dict[str, Any]:
    """``Qwen2Config`` kwargs with the dims of a GLM-4.1V ``text_config`` (or a preset's ``text``).

    ``rope_theta`` comes from ``rope_parameters`` (a saved config) or the flat field (a preset).
    Everything that sets the bytes moved per token and the FLOPs per token is copied; the
    GLM-only fields (partial rotary, M-RoPE sections) have no Qwen2 counterpart.
    """
    missing = [name for name in QWEN2_FIELDS if text.get(name) is None]
    if missing:
        raise ValueError(f"text config lacks {', '.join(missing)} (a preset's vocab_size comes from its checkpoint)")
    rope = text.get("rope_parameters") or {}
    theta = rope.get("rope_theta", text.get("rope_theta"))
    config: dict[str, Any] = {name: text[name] for name in QWEN2_FIELDS}
    config.update(rope_theta=float(theta), hidden_act=text.get("hidden_act", "silu"), tie_word_embeddings=False,
                  use_sliding_window=False, torch_dtype="float32")
    eos = text.get("eos_token_id")
    if eos is not None:
        first = eos[0] if isinstance(eos, list) else eos
        config.update(eos_token_id=eos, bos_token_id=text.get("bos_token_id", first),
                      pad_token_id=text.get("pad_token_id", first))
    return config


def gemma2_config(text: Mapping[str, Any]) -> dict[str, Any]:
    """``Gemma2Config`` kwargs: :func:`qwen2_config`'s dims, with the layer shaped as GLM-4's.

    Gemma-2's layer has GLM-4's 4 RMSNorms in the same places (before and after attention, before and
    after the MLP). Gemma-only work is turned off so it costs what GLM-4 costs: SiLU instead of
    GELU, no attention or final-logit soft-capping, every layer full attention (no sliding window),
    and the query scale 1/sqrt(head_dim) as GLM-4's. genai folds Gemma's ``1 + weight`` norm
    weights at build time; its embedding scale by sqrt(hidden) stays one Mul.
    """
    config = qwen2_config(text)
    config.pop("use_sliding_window")
    head_dim = int(text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"])
    layers = int(config["num_hidden_layers"])
    config.update(head_dim=head_dim, query_pre_attn_scalar=head_dim, hidden_activation=config.pop("hidden_act"),
                  attn_logit_softcapping=None, final_logit_softcapping=None,
                  layer_types=["full_attention"] * layers, sliding_window=int(config["max_position_embeddings"]))
    return config


def peer_config(peer: str, text: Mapping[str, Any]) -> dict[str, Any]:
    """The peer checkpoint's config kwargs (``PEERS[peer]``) with the dims of GLM-4.1V's ``text_config``."""
    if peer not in PEERS:
        raise ValueError(f"peer {peer!r}: choose one of {', '.join(PEERS)}")
    return qwen2_config(text) if peer == "qwen2" else gemma2_config(text)


def peer_dirs(work: Path, peer: str, variant: str | None = None) -> Path:
    """Where a peer's checkpoint (``variant`` None) or built genai model lives under ``work``.

    The qwen2 peer keeps the names it has always had (``qwen2/``, ``genai-fp32/``), so earlier work
    folders are reused.
    """
    if variant is None:
        return work / peer
    return work / (f"genai-{variant}" if peer == "qwen2" else f"genai-{peer}-{variant}")


def builder_command(python: Path | str, hf_dir: Path | str, out_dir: Path | str, precision: str,
                    cache_dir: Path | str) -> list[str]:
    """genai's own model builder, CPU execution provider."""
    if precision not in ("fp32", "int4"):
        raise ValueError(f"precision {precision!r}: this benchmark builds fp32 and int4")
    return [str(python), "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-o", str(out_dir),
            "-p", precision, "-e", "cpu", "-c", str(cache_dir)]


def venv_commands(venv: Path) -> list[list[str]]:
    """Create ``venv`` and install the genai side into it (nothing goes into the project's venv)."""
    return [[sys.executable, "-m", "venv", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *GENAI_PACKAGES]]


def side_order(round_index: int, sides: Sequence[str]) -> list[str]:
    """Round-robin: each round (and case) starts with the next side, so no side always runs first."""
    shift = round_index % len(sides)
    return list(sides[shift:]) + list(sides[:shift])


def median_ms(samples_s: Sequence[float]) -> float:
    return statistics.median(samples_s) * 1e3


def _paired(rounds: Sequence[Mapping[str, Any]], key: str, side: str) -> list[float]:
    """Per round: genai's round median / ``side``'s round median (rounds where both ran)."""
    return [median_ms(r[f"genai/{key}"]) / median_ms(r[f"{side}/{key}"]) for r in rounds
            if f"{side}/{key}" in r and f"genai/{key}" in r]


def summarize(rounds: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (variant, case): median over rounds of each side's round median and the paired speed-ups.

    ``rounds[i]`` maps ``"<side>/<variant>/<case>"`` to that round's per-call seconds. ``speedup`` is
    ours against genai; ``speedup_same_ort`` is the control side (our graph and code on genai's
    onnxruntime) against genai, which takes the two onnxruntime versions out of the comparison.
    """
    keys = list(dict.fromkeys(key.split("/", 1)[1] for r in rounds for key in r))  # measurement order
    rows = []
    for key in keys:
        variant, case = key.split("/", 1)
        row: dict[str, Any] = {"variant": variant, "case": case, "rounds": 0}
        for side in SIDES:
            medians = [median_ms(r[f"{side}/{key}"]) for r in rounds if f"{side}/{key}" in r]
            row[f"{side}_ms"] = round(statistics.median(medians), 3) if medians else None
            row["rounds"] = max(row["rounds"], len(medians))
        paired, control = _paired(rounds, key, "ours"), _paired(rounds, key, CONTROL)
        row.update(speedup=round(statistics.median(paired), 3) if paired else None,
                   speedup_min=round(min(paired), 3) if paired else None,
                   speedup_max=round(max(paired), 3) if paired else None,
                   speedup_same_ort=round(statistics.median(control), 3) if control else None)
        rows.append(row)
    return rows


def _fmt(value: Any, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else format(value, spec) + suffix


def table_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown table of :func:`summarize` rows (the README / report form)."""
    lines = ["| variant | case | ours ms | genai ms | ours speed / genai (range) | ours on genai's ORT: ms, "
             "speed / genai | rounds |", "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        speed = "n/a" if row["speedup"] is None else \
            f"{row['speedup']:.2f}x ({row['speedup_min']:.2f}-{row['speedup_max']:.2f})"
        control = f"{_fmt(row.get(f'{CONTROL}_ms'), '.2f')}, {_fmt(row.get('speedup_same_ort'), '.2f', 'x')}"
        lines.append(f"| {row['variant']} | {row['case']} | {_fmt(row['ours_ms'], '.2f')} | "
                     f"{_fmt(row['genai_ms'], '.2f')} | {speed} | {control} | {row['rounds']} |")
    return lines


def op_histogram(op_types: Sequence[str], top: int = 10) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for op in op_types:
        counts[op] = counts.get(op, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {"nodes": len(op_types), "op_types": len(counts), "top": dict(ranked[:top])}


# ------------------------------------------------------------------------------------------------
# setup: venv, models
# ------------------------------------------------------------------------------------------------


def run(command: Sequence[str], log: Path, **kwargs: Any) -> int:
    """Run a setup command with its output in ``log``; a failure stops the benchmark."""
    print("$", " ".join(command), flush=True)
    with log.open("a") as handle:
        code = subprocess.call(list(command), stdout=handle, stderr=subprocess.STDOUT, **kwargs)
    return code


def checked(command: Sequence[str], log: Path, **kwargs: Any) -> None:
    if run(command, log, **kwargs) != 0:
        sys.exit(f"failed: {' '.join(command)} (see {log})")


def ensure_venv(venv: Path, log: Path) -> Path:
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import onnxruntime_genai, transformers, onnx_ir, torch, polygraphy, psutil"]
    if python.is_file() and subprocess.call(probe, stderr=subprocess.DEVNULL) == 0:
        return python
    for command in venv_commands(venv)[0 if not python.is_file() else 1:]:
        checked(command, log)
    return python


def source_stamp() -> str:
    """Git tree id of ``trt_pipeline/`` plus uncommitted changes: the export is re-made when it moves."""
    tree = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD:trt_pipeline"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "trt_pipeline"], capture_output=True,
                           text=True)
    return tree.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "trt_pipeline.cli", *args]


def int4_available() -> bool:
    """Whether this checkout's CLI has ``precision int4``."""
    help_text = subprocess.run(cli("precision", "--help"), capture_output=True, text=True,
                               env={**ours_env(), "COLUMNS": "200"}).stdout
    return any(line.strip("│ ").startswith("int4") for line in help_text.splitlines())


def ensure_ours(work: Path, args: argparse.Namespace, log: Path) -> dict[str, Any]:
    """Checkpoint (trained-like norms) + export (+ int4) of the small preset; reused while the package
    source is unchanged."""
    from trt_pipeline.fixtures.norms import trained_like_norms

    checkpoint, out, stamp_file = work / "checkpoint", work / "export", work / "export.stamp"
    if not (checkpoint / "config.json").is_file():
        checked(cli("init-checkpoint", "--preset", args.preset, "--out", str(checkpoint), "--overwrite", *args.init_arg),
                log, env=ours_env())
    # norms as a trained model's (not all ones), else ORT fuses none of them in our graph (genai's
    # builder emits its fused norm op whatever the weights)
    if trained_like_norms(checkpoint):
        shutil.rmtree(out, ignore_errors=True)
    # the export is re-made when the package source or what it is asked for (flavour, flags) changed
    kv_cache = args.kv_cache or default_kv_cache(args.decoder_ops)
    flavour = ["--decoder-ops", args.decoder_ops, "--kv-cache", kv_cache]
    stamp = " ".join([source_stamp(), *flavour, *args.export_arg])
    previous = stamp_file.read_text().strip() if stamp_file.is_file() else None
    if args.fresh or not (out / "export.json").is_file() or previous != stamp:
        shutil.rmtree(out, ignore_errors=True)
        # --max-seq 512: `precision int4` calibrates on prompts up to 268 tokens, which must fit the export
        checked(cli("export", str(checkpoint), "--out", str(out), "--max-seq", "512", "--max-kv", str(args.max_kv),
                    "--no-validate", *flavour, *args.export_arg), log, env=ours_env())
        stamp_file.write_text(stamp + "\n")
    variants, notes = ["fp32"], []
    if args.no_int4:
        notes.append("ours int4: skipped (--no-int4)")
    elif not int4_available():
        notes.append("ours int4: skipped, this checkout has no `autoglm-trt precision int4` command")
    else:
        notes += ensure_int4(out, args, log)
        if (out / "onnx" / "int4" / "decoder.onnx").is_file():
            variants.append("int4")
    return {"checkpoint": checkpoint, "out": out, "variants": variants, "notes": notes, "source_stamp": stamp,
            "decoder_ops": args.decoder_ops, "kv_cache": kv_cache}


def ensure_int4(out: Path, args: argparse.Namespace, log: Path) -> list[str]:
    """``precision int4`` with genai's quantization scope (``--int4-arg`` replaces it); notes say what ran."""
    made = out / "onnx" / "int4" / "int4_args.json"
    if (out / "onnx" / "int4" / "decoder.onnx").is_file() and made.is_file():
        return [f"ours int4: `autoglm-trt precision int4 {' '.join(json.loads(made.read_text()))}` (reused)"]
    notes = []
    for extra in ([args.int4_arg] if args.int4_arg else [INT4_MATCHING_GENAI, INT4_ORT_DEFAULTS]):
        shutil.rmtree(out / "onnx" / "int4", ignore_errors=True)
        code = run(cli("precision", "int4", str(out), *extra), log, env=ours_env())
        if code == 0:
            made.write_text(json.dumps(extra))
            return [*notes, f"ours int4: `autoglm-trt precision int4 {' '.join(extra)}`"]
        notes.append(f"ours int4: `autoglm-trt precision int4 {' '.join(extra)}` exited {code} (see {log})")
    return notes


def ensure_genai(work: Path, python: Path, checkpoint: Path, variants: Sequence[str], log: Path,
                 peer: str = "qwen2") -> dict[str, Path]:
    """The peer checkpoint with our text dims, then genai's builder per precision."""
    hf = peer_dirs(work, peer)
    text = json.loads((checkpoint / "config.json").read_text())["text_config"]
    spec = {"config": peer_config(peer, text), "seed": 0, "tokenizer_dir": str(checkpoint)}
    if peer != "qwen2":
        spec["architecture"] = PEERS[peer]
    spec_file = work / f"{peer}_spec.json"
    if not (hf / "config.json").is_file() or not spec_file.is_file() or json.loads(spec_file.read_text()) != spec:
        work.mkdir(parents=True, exist_ok=True)
        spec_file.write_text(json.dumps(spec, indent=2))
        shutil.rmtree(hf, ignore_errors=True)
        checked([str(python), str(WORKER_GENAI), "make-peer", str(spec_file), str(hf)], log)
        for variant in variants:
            shutil.rmtree(peer_dirs(work, peer, variant), ignore_errors=True)
    models = {}
    for variant in variants:
        out = peer_dirs(work, peer, variant)
        if not (out / "genai_config.json").is_file():
            checked(builder_command(python, hf, out, variant, work / "builder-cache"), log)
        models[variant] = out
    return models


# ------------------------------------------------------------------------------------------------
# workers and interleaved rounds
# ------------------------------------------------------------------------------------------------


def ours_env() -> dict[str, str]:
    """This checkout first on the path (the editable install may point at another tree)."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


class Worker:
    """A long-lived measuring process: one JSON request per line in, one JSON answer per line out."""

    def __init__(self, name: str, command: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.stderr = log.open("a")
        self.process = subprocess.Popen(list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.stderr, text=True, bufsize=1, env=dict(env or os.environ))

    def ask(self, cmd: str, *, optional: bool = False, **fields: Any) -> Any:
        """The answer's result; a failed command stops the benchmark unless ``optional`` (then: the error)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            sys.exit(f"worker {self.name} died during {cmd!r} (see {self.stderr.name})")
        answer = json.loads(line)
        if not answer["ok"] and optional:
            return {"error": answer["error"]}
        if not answer["ok"]:
            sys.exit(f"worker {self.name}: {cmd} failed: {answer['error']} (see {self.stderr.name})")
        return answer.get("result")

    def close(self) -> None:
        if self.process.poll() is None:
            self.ask("quit")
            self.process.wait(timeout=60)
        self.stderr.close()


def cases_of(args: argparse.Namespace) -> tuple[tuple[str, int], ...]:
    """The cases this run measures (``--decode-only``: a wide model's prefill 256 takes seconds a call)."""
    return tuple(case for case in CASES if not (args.decode_only and case[0] == "prefill"))


def iterations_for(phase: str, n: int, args: argparse.Namespace) -> tuple[int, int]:
    """(timed calls, warm-up calls) per measurement of one case in one round."""
    if phase == "prefill":
        return (args.iterations, 1) if n <= 64 else (max(args.iterations // 2, 2), 1)
    return args.iterations, args.decode_warmup


def run_rounds(workers: Mapping[str, Worker], variants: Mapping[str, Sequence[str]],
               args: argparse.Namespace) -> list[dict[str, list[float]]]:
    """``args.rounds`` rounds; each measures every (variant, case) on every side, sides alternating."""
    rounds = []
    all_variants = sorted({v for vs in variants.values() for v in vs})
    for index in range(args.rounds):
        started = time.perf_counter()
        measured: dict[str, list[float]] = {}
        for variant in all_variants:
            for phase, n in cases_of(args):
                timed, warmup = iterations_for(phase, n, args)
                for side in side_order(index + CASES.index((phase, n)), list(workers)):
                    if variant in variants[side]:
                        measured[f"{side}/{variant}/{case_name(phase, n)}"] = workers[side].ask(
                            "measure", variant=variant, phase=phase, n=n, iterations=timed, warmup=warmup,
                            clock=args.clock)
        rounds.append(measured)
        print(f"round {index + 1}/{args.rounds}: {time.perf_counter() - started:.0f} s, "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
    return rounds


def node_counts(models: Mapping[str, Path]) -> dict[str, Any]:
    """Top-level node count and op-type histogram of each decoder graph (weights not loaded)."""
    import onnx

    result = {}
    for name, path in models.items():
        graph = onnx.load(str(path), load_external_data=False).graph
        result[name] = {"path": str(path), **op_histogram([node.op_type for node in graph.node])}
    return result


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


# ------------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------------


def plot(rows: Sequence[Mapping[str, Any]], path: Path, title: str) -> None:
    """Speed of ours over genai per case (bar: median, whisker: min..max round), and the control side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in rows if row["speedup"] is not None]
    fig, ax = plt.subplots(figsize=(10, 4.8))
    xs = list(range(len(rows)))
    values = [row["speedup"] for row in rows]
    errors = [[v - row["speedup_min"] for v, row in zip(values, rows)],
              [row["speedup_max"] - v for v, row in zip(values, rows)]]
    ax.bar([x - 0.2 for x in xs], values, width=0.4, yerr=errors, capsize=4, label="ours (project venv ORT)",
           color=["tab:green" if v >= 1 else "tab:red" for v in values])
    control = [row.get("speedup_same_ort") or 0.0 for row in rows]
    if any(control):
        ax.bar([x + 0.2 for x in xs], control, width=0.4, color="tab:gray", label="ours on genai's ORT (control)")
    for x, row in zip(xs, rows):
        ax.text(x - 0.2, row["speedup_max"] + 0.02, f"{row['speedup']:.2f}x\n{row['ours_ms']:.1f} vs\n"
                f"{row['genai_ms']:.1f} ms", ha="center", va="bottom", fontsize=7)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.axhline(1.1, color="gray", linestyle="--", linewidth=1, label="issue 16 target at decode @512 (1.1x)")
    ax.set_xticks(xs, [f"{row['variant']}\n{row['case']}" for row in rows], fontsize=8)
    ax.set_ylabel("speed / genai speed (genai ms / ms)")
    ax.set_ylim(0, max([*values, *control, *[r["speedup_max"] for r in rows], 1.1]) * 1.3)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(rows: Sequence[Mapping[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    columns = ("variant", "case", "ours ms", "genai ms", "ours/genai speed", "range", "ours@genai-ORT ms",
               "its speed / genai", "rounds")
    for column in columns:
        table.add_column(column, justify="left" if column in ("variant", "case") else "right")
    for row in rows:
        spread = "" if row["speedup"] is None else f"{row['speedup_min']:.2f}-{row['speedup_max']:.2f}"
        table.add_row(row["variant"], row["case"], _fmt(row["ours_ms"], ".2f"), _fmt(row["genai_ms"], ".2f"),
                      _fmt(row["speedup"], ".2f", "x"), spread, _fmt(row.get(f"{CONTROL}_ms"), ".2f"),
                      _fmt(row.get("speedup_same_ort"), ".2f", "x"), str(row["rounds"]))
    Console(width=max(Console().width, 150)).print(table)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "engines" / "peer-genai", help="models and logs")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the genai venv (created when missing)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads on both sides (inter-op: 1)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=8, help="timed calls per case per round (prefill 256: half)")
    parser.add_argument("--decode-warmup", type=int, default=2,
                        help="untimed decode steps after each side fills its cache (2: the steps right after a "
                             "prefill, which both runtimes run slower for ~30 steps; 30: settled steps)")
    parser.add_argument("--max-kv", type=int, default=1024, help="our export's past_sequence_length max = genai max_length")
    parser.add_argument("--export-arg", action="append", default=[], help="extra `autoglm-trt export` argument")
    parser.add_argument("--decoder-ops", choices=DECODER_OPS, default="fused",
                        help="our decoder flavour (`export --decoder-ops`): fused is the standard-op one for ONNX Runtime, "
                             "onnxruntime the ORT-only one (contrib ops, as genai's)")
    parser.add_argument("--kv-cache", choices=KV_CACHES, default=None,
                        help="our KV-cache contract (`export --kv-cache`) [default: the flavour's: concat, shared for onnxruntime]")
    parser.add_argument("--peer", choices=tuple(PEERS), default="qwen2",
                        help="genai's model: qwen2 (the issue's peer) or gemma2 (GLM-4's 4 norms per layer; see above)")
    parser.add_argument("--no-int4", action="store_true", help="fp32 only")
    parser.add_argument("--preset", default="small",
                        help="`init-checkpoint --preset` of our checkpoint (the peer copies its text dims) [small]")
    parser.add_argument("--init-arg", action="append", default=[],
                        help="extra `init-checkpoint` argument, repeatable (e.g. --preset phone-9b --init-arg=--with-weights "
                             "--init-arg=--layers --init-arg=2: the real width, 2 layers)")
    parser.add_argument("--decode-only", action="store_true", help="skip the prefill cases")
    parser.add_argument("--int4-arg", action="append", default=[],
                        help="`precision int4` argument replacing the defaults (genai's scope), repeatable")
    parser.add_argument("--no-control", action="store_true",
                        help="skip the control side (our export and code on genai's onnxruntime, in its venv)")
    parser.add_argument("--no-profile", action="store_true", help="skip the ORT profiles (our decoder's op-type split; each side's graph "
                        "alone) and the optimized node counts (ORT saves the optimized graph: a model above 2 GB cannot)")
    parser.add_argument("--fresh", action="store_true", help="re-export ours even when the source is unchanged")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu (needs --threads 1): both sides timed in CPU time of the thread that runs the "
                             "session, which a machine loaded by other processes does not inflate")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu times one thread: use it with --threads 1")
    return args


def start_workers(args: argparse.Namespace, python: Path, ours: Mapping[str, Any],
                  genai: Mapping[str, Path]) -> tuple[dict[str, Worker], dict[str, Any]]:
    """Both workers, every variant loaded (load time is not measured)."""
    log = args.work / "workers.log"
    workers = {"ours": Worker("ours", [sys.executable, str(WORKER_OURS)], log, env=ours_env()),
               "genai": Worker("genai", [str(python), str(WORKER_GENAI), "serve"], log)}
    if not args.no_control:
        workers[CONTROL] = Worker(CONTROL, [str(python), str(WORKER_OURS)], log, env=ours_env())
    loaded: dict[str, Any] = {side: {} for side in workers}
    for side in set(workers) - {"genai"}:
        for variant in ours["variants"]:
            loaded[side][variant] = workers[side].ask("load", variant=variant, out_dir=str(ours["out"]),
                                                      threads=args.threads)
    for variant, model_dir in genai.items():
        loaded["genai"][variant] = workers["genai"].ask("load", variant=variant, model_dir=str(model_dir),
                                                        max_length=args.max_kv, threads=args.threads)
    return workers, loaded


def record(args: argparse.Namespace, ours: Mapping[str, Any], genai: Mapping[str, Path], loaded: Mapping[str, Any],
           measured: Mapping[str, Any]) -> dict[str, Any]:
    """Everything peer_genai.json holds."""
    rows = summarize(measured["rounds"])
    graphs = {f"ours {v}": Path(ours["out"]) / "onnx" / v / "decoder.onnx" for v in ours["variants"]}
    graphs.update({f"genai {v}": path / "model.onnx" for v, path in genai.items()})
    return {
        "command": "python benchmarks/peer_genai.py " + " ".join(sys.argv[1:]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "speedup_definition": "genai_ms / ours_ms (> 1: ours faster); median over rounds of the per-round "
                              "ratio of the two sides' round medians",
        "threads": {"intra_op": args.threads, "inter_op": 1, "both_sides": True},
        "clock": "CPU time of the thread running the session" if args.clock == "cpu" else "wall",
        "rounds": args.rounds, "iterations_per_case_per_round": args.iterations, "max_kv": args.max_kv,
        "decode_warmup_steps": args.decode_warmup,
        "cases": [case_name(*case) for case in cases_of(args)],
        "checkpoint": {"preset": args.preset, "init_args": args.init_arg},
        "load": {"before": measured["load_before"], "after": measured["load_after"],
                 "note": "2 cores shared with other sessions: absolute ms are noisy, ratios come from "
                         "interleaved rounds"},
        "versions": measured["versions"],
        "ours": {"export": str(ours["out"]), "variants": list(ours["variants"]), "source_stamp": ours["source_stamp"],
                 "decoder_ops": ours["decoder_ops"], "kv_cache": ours["kv_cache"],
                 "timed_through": "trt_pipeline.bench.backends.OrtBackend (ORT session + DecoderStepper host work)",
                 "loaded": loaded["ours"]},
        "control": {"side": CONTROL, "what": "our export through the same OrtBackend code, run in the genai venv "
                    "(its onnxruntime version); speedup_same_ort = genai_ms / its ms", "measured": CONTROL in loaded},
        "genai": {"models": {v: str(p) for v, p in genai.items()}, "peer": args.peer,
                  "checkpoint": f"{PEERS[args.peer]}, random weights, the {args.preset} preset's text dims (see "
                                f"{args.peer}_spec.json beside the models)",
                  "timed_through": "onnxruntime_genai.Generator.append_tokens (rewind_to between calls)",
                  "loaded": loaded["genai"]},
        "notes": [*ours["notes"], GENAI_LOGITS_NOTE],
        "table": rows,
        "table_markdown": table_lines(rows),
        "nodes": node_counts(graphs),
        "nodes_onnxruntime_optimized": measured.get("graph_stats"),
        "ours_decode_profile": measured.get("profile"),
        "graph_profiles": measured.get("graph_profiles"),
        "graphs_same_ort": measured.get("graphs_same_ort"),
        "all_rounds": measured["rounds"],
    }


def optimized_graph_stats(workers: Mapping[str, Worker], ours: Mapping[str, Any],
                          genai: Mapping[str, Path]) -> dict[str, Any]:
    """Decoder node counts as exported and as each side's onnxruntime runs them (after its optimizer).

    genai's graph (contrib ops) is read by the control worker, which has genai's onnxruntime.
    """
    stats: dict[str, Any] = {}
    for variant in ours["variants"]:
        path = Path(ours["out"]) / "onnx" / variant / "decoder.onnx"
        stats[f"ours {variant}"] = workers["ours"].ask("graph_stats", optional=True, path=str(path))
    for variant, model_dir in genai.items():
        if CONTROL not in workers:
            stats[f"genai {variant}"] = {"error": "needs the control worker (--no-control was given)"}
            continue
        stats[f"genai {variant}"] = workers[CONTROL].ask("graph_stats", optional=True, path=str(model_dir / "model.onnx"))
    return stats


#: cached tokens at which each side's decoder graph is profiled alone (``ort_graph_profile.py``)
PROFILE_CONTEXTS = (64, 512)


def graph_profiles(workers: Mapping[str, Worker], ours: Mapping[str, Any], genai: Mapping[str, Path],
                   threads: int, reps: int = 3) -> list[dict[str, Any]]:
    """Each side's decoder graph alone in a plain ORT session (its own venv's onnxruntime), one decode step
    profiled: kernel time, run time and the executor's time between kernels, per variant and context.
    ``reps`` times per side, alternating sides (load drifts over minutes here): the unprofiled time is
    the median over them (every value kept), the profile split the last one's."""
    rows = []
    for variant in ours["variants"]:
        path = Path(ours["out"]) / "onnx" / variant / "decoder.onnx"
        for context in PROFILE_CONTEXTS:
            asks = {"ours": lambda: workers["ours"].ask("graph_profile", optional=True, path=str(path), context=context,
                                                       threads=threads)}
            if variant in genai:
                asks["genai"] = lambda: workers["genai"].ask("graph_profile", optional=True, variant=variant,
                                                            context=context)
            runs: dict[str, list[dict[str, Any]]] = {side: [] for side in asks}
            for rep in range(reps):
                for side in (list(asks) if rep % 2 == 0 else list(reversed(asks))):
                    runs[side].append(asks[side]())
            for side, answers in runs.items():
                last = answers[-1]
                if "error" not in last:
                    samples = [answer["unprofiled_us"] for answer in answers if "error" not in answer]
                    last = {**last, "unprofiled_us": round(statistics.median(samples), 1),
                            "unprofiled_us_reps": samples}
                rows.append({"side": side, "variant": variant, **last})
    return rows


def graphs_same_ort(workers: Mapping[str, Worker], ours: Mapping[str, Any], genai: Mapping[str, Path],
                    threads: int) -> list[dict[str, Any]]:
    """Our decoder graph and genai's, timed in turns in ONE process of the genai venv (the control worker):
    the same onnxruntime, the same moments, each bound as its own runtime binds it; per variant and context.
    ``speed`` = genai us / ours us (> 1: our graph faster). Compared with the table (the runtimes around the
    graphs included) it tells the graph's share of the gap from the host loop's."""
    if CONTROL not in workers:
        return []
    rows = []
    for variant in [v for v in ours["variants"] if v in genai]:
        graphs = {"ours": {"path": str(Path(ours["out"]) / "onnx" / variant / "decoder.onnx")},
                  "genai": workers["genai"].ask("graph_spec", variant=variant)}
        for context in PROFILE_CONTEXTS:
            answer = workers[CONTROL].ask("graphs_same_ort", optional=True, graphs=graphs, context=context,
                                          threads=threads)
            if "error" not in answer:
                answer = {**answer, "speed": answer["speed_vs"]["ours"]["genai"]}
            rows.append({"variant": variant, "context": context, **answer})
    return rows


def print_graphs_same_ort(rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        return
    print("decoder graphs in one process of genai's onnxruntime, timed in turns (speed = genai us / ours us):")
    for row in rows:
        if "error" in row:
            print(f"  {row['variant']:4s} @{row['context']}: {row['error']}")
            continue
        print(f"  {row['variant']:4s} @{row['context']:<4d} ORT {row['onnxruntime']:7s} ours "
              f"{row['median_us']['ours'] / 1e3:6.3f} ms  genai {row['median_us']['genai'] / 1e3:6.3f} ms  "
              f"speed {row['speed']:.3f}x")


def print_graph_profiles(rows: Sequence[Mapping[str, Any]]) -> None:
    """One line per profiled graph: nodes, unprofiled time, and (profiled) run = kernels + outside."""
    threads = next((row["threads"] for row in rows if "threads" in row), 1)
    print(f"decoder graphs alone (plain ORT session, {threads} intra-op thread(s), median "
          f"{'thread CPU' if threads == 1 else 'wall'} time; run/kernels/outside from ORT's profiler):")
    for row in rows:
        if "error" in row:
            print(f"  {row['side']:5s} {row['variant']:4s}: {row['error']}")
            continue
        print(f"  {row['side']:5s} {row['variant']:4s} @{row['context']:<4d} ORT {row['onnxruntime']:7s} "
              f"nodes {row['nodes_per_run']:5.0f}  time {row['unprofiled_us'] / 1e3:6.3f} ms  "
              f"run {row['run_us'] / 1e3:6.3f} = kernels {row['kernels_us'] / 1e3:6.3f} + outside "
              f"{row['outside_kernels_us'] / 1e3:5.3f} ms ({row['outside_per_node_us']:.2f} us/node)")


def measure_all(args: argparse.Namespace, python: Path, ours: Mapping[str, Any],
                genai: Mapping[str, Path]) -> tuple[dict[str, Any], dict[str, Any]]:
    workers, loaded = start_workers(args, python, ours, genai)
    try:
        measured: dict[str, Any] = {"load_before": uptime()}
        print(measured["load_before"], flush=True)
        measured["versions"] = {**workers["ours"].ask("versions"), **workers["genai"].ask("versions")}
        if CONTROL in workers:
            measured["versions"]["onnxruntime (control side)"] = workers[CONTROL].ask("versions")["onnxruntime (ours)"]
        variants = {side: list(genai) if side == "genai" else list(ours["variants"]) for side in workers}
        measured["rounds"] = run_rounds(workers, variants, args)
        measured["load_after"] = uptime()
        if not args.no_profile:
            measured["profile"] = workers["ours"].ask("profile", variant="fp32", context=512, steps=20)
        if not args.no_profile:  # node counts after ORT's optimizer: it saves the optimized graph (< 2 GB only)
            measured["graph_stats"] = optimized_graph_stats(workers, ours, genai)
            measured["graph_profiles"] = graph_profiles(workers, ours, genai, args.threads)
            measured["graphs_same_ort"] = graphs_same_ort(workers, ours, genai, args.threads)
    finally:
        for worker in workers.values():
            worker.close()
    return measured, loaded


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "setup.log"
    python = ensure_venv(args.venv, log)
    ours = ensure_ours(args.work, args, log)
    checkpoint = Path(ours["checkpoint"])
    genai = ensure_genai(args.work, python, checkpoint, ["fp32"] + ([] if args.no_int4 else ["int4"]), log,
                         peer=args.peer)
    measured, loaded = measure_all(args, python, ours, genai)
    result = record(args, ours, genai, loaded, measured)
    args.results.mkdir(parents=True, exist_ok=True)
    json_path, png_path = args.results / "peer_genai.json", args.results / "peer_genai.png"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    title = (f"autoglm-trt vs onnxruntime-genai {measured['versions'].get('onnxruntime-genai')} ({args.peer}), "
             f"{args.preset}-preset text "
             f"dims, {args.threads} threads each, {args.clock} clock, median of {args.rounds} interleaved rounds")
    plot(result["table"], png_path, title)
    print_table(result["table"], title)
    for note in result["notes"]:
        print("note:", note)
    print("nodes:", {name: entry["nodes"] for name, entry in result["nodes"].items()})
    optimized = result["nodes_onnxruntime_optimized"] or {}
    print("nodes after ORT's optimizer:", {name: entry.get("onnxruntime_optimized", entry).get("nodes", "n/a")
                                           for name, entry in optimized.items()})
    if result["graph_profiles"]:
        print_graph_profiles(result["graph_profiles"])
    print_graphs_same_ort(result["graphs_same_ort"] or [])
    print(f"load before: {measured['load_before']}\nload after:  {measured['load_after']}")
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
