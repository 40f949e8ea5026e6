"""Reference calls of an ONNX Runtime bundle: recorded on the workstation, replayed on the phone.

A phone runs the bundle's graphs on its own ONNX Runtime build (arm64 kernels, maybe a reduced
operator set), which nothing on the workstation exercises. So the bundle carries a short, real
generation recorded call by call: one synthetic screenshot and an instruction go through the same
host loop as ``autoglm-trt generate`` (processor, vision encoder, prefill, decode steps), and every
call's complete feed and outputs are saved as ``.npy`` files with an index (``reference.json``).
Each call is self-contained (its KV cache is part of its feed), so the app replays them with plain
``session.run`` calls and compares outputs, without any of the host loop; the greedy tokens of the
whole request are recorded too, for an end-to-end check through the app's own loop.

Outputs are compared by cosine similarity (per output; the precision's floor in
:data:`REPLAY_COSINE`) and, for logits, by the arg-max token; the maximum absolute error is reported.
Different CPUs sum in different orders and ARM has fp16 kernels x86 lacks, so the floors are those of
the same graph on another machine, not of another precision.

``autoglm-trt bundle verify BUNDLE --run`` replays them on this host's ONNX Runtime.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trt_pipeline.errors import AccuracyError, ConfigError

#: The reference folder inside a bundle and its index.
REFERENCE_DIR = "reference"
INDEX_FILE = "reference.json"
#: Cosine floor per precision for a replayed output (the same graph on another CPU).
REPLAY_COSINE: dict[str, float] = {"fp32": 0.99999, "fp16": 0.999, "int4": 0.999, "int8": 0.999}
#: The recorded request: an instruction as the phone agent sends it, one synthetic screenshot.
INSTRUCTION = "Open the Settings app and turn on Wi-Fi."
#: Image tokens of the recorded screenshot (112 x 224 pixels at the 9B's 28-pixel merged patches), moved into
#: the export's ``num_image_tokens`` range when that excludes it.
SCREENSHOT_TOKENS = 32
#: Greedy tokens generated: the prefill's and two decode steps' (a decode onto a cache a decode wrote).
NEW_TOKENS = 3


class ReferenceMismatchError(AccuracyError):
    """A replayed call's output is not the recorded one (an accuracy failure: exit 5)."""


@dataclass
class RecordedCall:
    """One graph call: which graph, its complete feed and the outputs it returned."""

    component: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputCheck:
    call: int
    component: str
    output: str
    cosine: float
    max_abs_error: float
    argmax_equal: bool | None  # logits only
    passed: bool


def screenshot_size(low: int, high: int, unit: int, want: int = SCREENSHOT_TOKENS) -> tuple[int, int]:
    """(width, height) in pixels of a portrait screenshot of ``want`` image tokens, clamped to ``[low, high]``,
    in whole merged patches of ``unit`` pixels (so the image processor keeps its size)."""
    tokens = min(max(want, low), high)
    across = max(d for d in range(1, math.isqrt(tokens) + 1) if tokens % d == 0)
    return across * unit, tokens // across * unit


def screenshot(path: Path, size: tuple[int, int]) -> Path:
    """A deterministic synthetic screenshot (status bar, list rows, a button) written as PNG."""
    from PIL import Image, ImageDraw

    width, height = size
    image = Image.new("RGB", size, (245, 245, 245))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width, height // 14), fill=(30, 30, 30))
    for row in range(1, 6):
        top = row * height // 7
        draw.rectangle((6, top, width - 6, top + height // 10), outline=(180, 180, 180), fill=(255, 255, 255))
        draw.rectangle((12, top + 6, 30, top + 22), fill=(40 * row, 120, 255 - 40 * row))
    draw.ellipse((width // 2 - 14, height - 34, width // 2 + 14, height - 6), fill=(0, 122, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def recording(runner: Any, component: str, calls: list[RecordedCall]) -> Any:
    """``runner`` with its ``infer`` wrapped so each call's feed (copied before the run) and outputs land in ``calls``."""
    infer = runner.infer

    def recorded_infer(feed: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        call = RecordedCall(component, {name: np.array(value, copy=True) for name, value in feed.items()})
        out = infer(feed, *args, **kwargs)
        call.outputs = {name: np.array(value, copy=True) for name, value in out.items()}
        calls.append(call)
        return out

    runner.infer = recorded_infer
    return runner


def record_reference(export_dir: Path, precision: str, dest: Path, settings: Any, *,
                     verify_graphs: bool = True) -> dict[str, Any]:
    """Run the reference request on ``export_dir``'s ``precision`` graphs and write ``dest`` (the reference folder).

    ``settings``: the ONNX Runtime session settings (``OrtSettings``) without IO binding: each recorded feed
    must be a complete, self-contained array set. ``verify_graphs``: check the graphs against their manifest
    first (off when the caller just did; the host tables are checked here either way). Returns the index
    written to ``dest/reference.json``.
    """
    from trt_pipeline.generate import export_contract
    from trt_pipeline.models.glm4v.generation import HostAssets, greedy_generate
    from trt_pipeline.models.glm4v.processing import Glm4vProcessing
    from trt_pipeline.runtime.onnxruntime_runner import ort_component_runners

    assets, contract = HostAssets.from_export_dir(export_dir), export_contract(export_dir)
    vision = assets.dims.vision
    image = screenshot(dest / "screenshot.png", screenshot_size(contract.min_image_tokens, contract.max_image_tokens,
                                                                vision.patch_size * vision.spatial_merge_size))
    processing = Glm4vProcessing(export_dir / "hf")
    inputs = processing([INSTRUCTION], [[image]])
    if settings.io_binding:
        raise ValueError("reference calls are recorded without IO binding (a bound cache is written in place)")
    vision_runner, decoder = ort_component_runners(export_dir, precision, verify=verify_graphs, settings=settings)
    calls: list[RecordedCall] = []
    result = greedy_generate(
        assets, recording(vision_runner, "vision_encoder", calls),
        recording(decoder, "decoder", calls), inputs, NEW_TOKENS, eos_token_ids=processing.eos_token_ids,
        pad_token_id=processing.pad_token_id, chunk_size=contract.max_chunk, contract=contract)
    tokens = result.token_lists()[0]
    index = {
        "format_version": 1,
        "precision": precision,
        "instruction": INSTRUCTION,
        "image": image.name,
        "image_tokens": inputs.num_image_tokens,
        "prompt_tokens": int(inputs.input_ids.shape[1]),
        "greedy_tokens": tokens,
        "cosine_floor": REPLAY_COSINE[precision],
        "calls": [_write_call(dest, number, call) for number, call in enumerate(calls)],
    }
    (dest / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return index


def _write_call(dest: Path, number: int, call: RecordedCall) -> dict[str, Any]:
    """``calls/NN_component/{inputs,outputs}/NAME.npy``; -> the call's index entry."""
    folder = Path("calls") / f"{number:02d}_{call.component}"
    entry: dict[str, Any] = {"component": call.component}
    for side, arrays in (("inputs", call.inputs), ("outputs", call.outputs)):
        entry[side] = {}
        for name, value in arrays.items():
            relative = folder / side / f"{name}.npy"
            (dest / relative).parent.mkdir(parents=True, exist_ok=True)
            np.save(dest / relative, value, allow_pickle=False)
            entry[side][name] = {"file": relative.as_posix(), "shape": list(value.shape), "dtype": str(value.dtype)}
    return entry


def read_index(reference: Path) -> dict[str, Any]:
    path = reference / INDEX_FILE
    if not path.is_file():
        raise ConfigError(f"{reference} has no {INDEX_FILE}: not the reference folder of an ONNX Runtime bundle",
                          path=path, hint="make the bundle with `autoglm-trt bundle OUT --target android-arm64 ...`")
    return json.loads(path.read_text(encoding="utf-8"))


def compare_output(call: int, component: str, name: str, got: np.ndarray, want: np.ndarray, floor: float) -> OutputCheck:
    """Cosine and max abs error of ``got`` against ``want`` (+ arg-max agreement for logits)."""
    from trt_pipeline.accuracy.metrics import cosine as cosine_of
    from trt_pipeline.accuracy.metrics import max_abs

    if got.shape != want.shape:
        return OutputCheck(call, component, name, float("nan"), float("inf"), None, False)
    cosine, error = cosine_of(want, got), max_abs(want, got)
    argmax = bool(np.array_equal(got.argmax(axis=-1), want.argmax(axis=-1))) if name == "logits" else None
    passed = math.isfinite(cosine) and cosine >= floor and argmax is not False
    return OutputCheck(call, component, name, cosine, error, argmax, passed)


def replay_reference(reference: Path, graphs: Mapping[str, Path],
                     open_session: Callable[[Path], Any]) -> list[OutputCheck]:
    """Run every recorded call on ``open_session(graphs[component])`` and compare each output with the recording."""
    index = read_index(reference)
    floor = float(index["cosine_floor"])
    sessions: dict[str, Any] = {}
    checks: list[OutputCheck] = []
    for number, call in enumerate(index["calls"]):
        component = call["component"]
        if component not in sessions:
            sessions[component] = open_session(graphs[component])
        session = sessions[component]
        feed = {name: np.load(reference / spec["file"], allow_pickle=False) for name, spec in call["inputs"].items()}
        names = list(call["outputs"])
        got = dict(zip(names, session.run(names, feed)))
        for name in names:
            want = np.load(reference / call["outputs"][name]["file"], allow_pickle=False)
            checks.append(compare_output(number, component, name, np.asarray(got[name]), want, floor))
    return checks


@dataclass(frozen=True)
class ReplayReport:
    """Every replayed output's check, with what they were run on."""

    reference: Path
    checks: tuple[OutputCheck, ...]
    calls: int
    floor: float
    onnxruntime: str

    def raise_for_failures(self) -> None:
        check_replay(self.checks, self.reference)


def check_replay(checks: Sequence[OutputCheck], reference: Path) -> None:
    """Raise :class:`ReferenceMismatchError` naming the first output below its floor."""
    failed = [c for c in checks if not c.passed]
    if not checks:
        raise ReferenceMismatchError("the reference holds no calls to replay", path=reference / INDEX_FILE,
                                     hint="make the bundle again")
    if failed:
        first = failed[0]
        argmax = "" if first.argmax_equal is None else f", arg-max tokens {'equal' if first.argmax_equal else 'differ'}"
        raise ReferenceMismatchError(
            f"{len(failed)} of {len(checks)} replayed outputs differ from the recording; first: call {first.call} "
            f"({first.component}) output {first.output}: cosine {first.cosine:.6f}, max abs error "
            f"{first.max_abs_error:.3g}{argmax}", path=reference / INDEX_FILE,
            hint="this ONNX Runtime computes these graphs differently from the one the bundle was made with: "
                 "check the ONNX Runtime version and build, and that the bundle verifies (`bundle verify`)")


__all__ = ["INDEX_FILE", "REFERENCE_DIR", "REPLAY_COSINE", "OutputCheck", "ReferenceMismatchError", "ReplayReport", "check_replay",
           "compare_output", "record_reference", "replay_reference", "screenshot"]
