"""The layer-truncated twin of a checkpoint, and when validation has to use one.

A 10 B model cannot be run here against transformers: in bf16 that is 20.6 GB for transformers,
41 GB for transformers in fp32 (the drift reference) and 20.6 GB again for the export. What makes
the export's numbers trustworthy is split in two:

* the *twin* (real embeddings, real LM head, the first ``K`` decoder layers and vision blocks of the
  real weights, every width unchanged) is small enough to run, so it is exported by the same code
  and compared with transformers on real-workload shapes (:mod:`trt_pipeline.export.twin_numerics`);
* the full export is then shown to be the twin with its layers repeated
  (:mod:`trt_pipeline.export.structure`) and to carry the checkpoint's own bytes
  (:func:`trt_pipeline.export.streaming.verify_initializer_hashes`).

The twin checkpoint is a plain HF folder (transformers loads it): ``config.json`` with the layer
counts cut to ``K``, the tokenizer and processor files, and one ``model.safetensors`` whose tensors
are byte ranges copied from the memory-mapped shards (64 MB at a time; the other layers are never
read). So its tensors hash equal to the originals.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trt_pipeline.errors import ConfigError

#: decoder layers and vision blocks the twin keeps (2: layer 0 is special, layer 1 is every later one)
TWIN_LAYERS = 2
_LAYER = re.compile(r"^(?:language_model\.layers|visual\.blocks)\.(\d+)\.")


@dataclass(frozen=True)
class ValidationPlan:
    """Whether ``validate`` runs the whole export or its twin, and the numbers that decided it."""

    mode: str  # "full" | "twin"
    needed_bytes: int
    available_bytes: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validation_bytes(weight_bytes: int, parameters: int, dtype: str) -> int:
    """Memory a full validation holds at once: transformers in the export dtype, transformers in fp32
    when that differs (the drift reference), and the export (ORT, or the bf16 torch modules), each
    a full copy of the weights, plus ~0.5 GB of interpreter and libraries (torch, transformers, ORT:
    0.45 GB RSS after import here); activations are small next to the weights at the validation shapes."""
    itemsize = {"float32": 4, "float16": 2, "bfloat16": 2}[dtype]
    copies = parameters * itemsize * 2 + (parameters * 4 if dtype != "float32" else 0)
    return max(copies, weight_bytes) + 512 * 1024**2


def available_memory() -> int:
    """What this process may still use: ``MemAvailable``, capped by its memory cgroup's limit."""
    available = _meminfo_available()
    for limit in _cgroup_limits():
        available = min(available, limit)
    return available


def _meminfo_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 1 << 62


def _cgroup_limits() -> list[int]:
    """Memory limits of this process's cgroup and its parents (v1 ``memory`` or v2)."""
    limits = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return limits
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "memory":
            root, name = Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"
        elif controllers == "":
            root, name = Path("/sys/fs/cgroup"), "memory.max"
        else:
            continue
        folder = root / path.lstrip("/")
        while True:
            try:
                text = (folder / name).read_text().strip()
                if text != "max" and int(text) < 1 << 60:
                    limits.append(int(text))
            except (OSError, ValueError):
                pass
            if folder == root:
                break
            folder = folder.parent
    return limits


def plan_validation(checkpoint: Path, dtype: str, requested: str | None = None, streamed: bool = True) -> ValidationPlan:
    """``requested`` (``twin``/``full``) wins; else twin when a full validation would not fit.

    Only a streamed export can be validated on a twin: its initializers are the checkpoint's bytes
    (hash-checked); an in-memory export's weights were folded by onnxsim. An in-memory export was
    made by a machine that held its weights, so it is validated in full."""
    from trt_pipeline.models.glm4v.weights import scan_checkpoint

    entries = scan_checkpoint(checkpoint).values()
    needed = validation_bytes(sum(e.nbytes for e in entries), sum(e.numel for e in entries), dtype)
    available = available_memory()
    if requested not in (None, "twin", "full"):
        raise ConfigError(f"validation mode must be twin or full, got {requested!r}.")
    if requested == "twin" and not streamed:
        raise ConfigError("twin validation needs a streamed export (its initializers are hash-checked against the "
                          "checkpoint); this one was exported in memory.",
                          hint="re-export with --streaming, or validate with --full.")
    if requested is not None:
        return ValidationPlan(requested, needed, available, f"--{requested} asked for")
    if not streamed:
        return ValidationPlan("full", needed, available, "an in-memory export is validated in full")
    fits = needed <= available
    reason = (f"a full validation needs ~{needed / 1e9:.1f} GB, {available / 1e9:.1f} GB available: "
              + ("it fits" if fits else f"the model is validated on its {TWIN_LAYERS}-layer twin"))
    return ValidationPlan("full" if fits else "twin", needed, available, reason)


def twin_entries(checkpoint: Path, layers: int) -> dict[str, Any]:
    """The checkpoint's tensors (headers) the twin keeps: all but decoder layers / vision blocks >= K."""
    from trt_pipeline.models.glm4v.weights import scan_checkpoint

    kept = {}
    for name, entry in scan_checkpoint(checkpoint).items():
        match = _LAYER.match(name)
        if match is None or int(match.group(1)) < layers:
            kept[name] = entry
    return kept


def twin_config(checkpoint: Path, layers: int) -> dict[str, Any]:
    """``config.json`` with ``text_config.num_hidden_layers`` and ``vision_config.depth`` cut to K."""
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    text, vision = config["text_config"], config["vision_config"]
    if layers < 1 or layers > min(text["num_hidden_layers"], vision["depth"]):
        raise ConfigError(f"twin layers must be between 1 and the model's {text['num_hidden_layers']} "
                          f"decoder layers / {vision['depth']} vision blocks, got {layers}.")
    text["num_hidden_layers"], vision["depth"] = layers, layers
    return config


def write_twin_checkpoint(checkpoint: Path, folder: Path, layers: int = TWIN_LAYERS) -> Path:
    """Write the twin of ``checkpoint`` into ``folder`` (see the module docstring); returns it."""
    from trt_pipeline.export.writer import copy_hf_files
    from trt_pipeline.export.streaming import checkpoint_range

    config = twin_config(checkpoint, layers)
    entries = sorted(twin_entries(checkpoint, layers).values(), key=lambda e: e.checkpoint_name)
    folder.mkdir(parents=True, exist_ok=True)
    copy_hf_files(checkpoint, folder)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    header: dict[str, Any] = {"__metadata__": {"format": "pt", "twin_of": str(checkpoint), "layers": str(layers)}}
    offset = 0
    for entry in entries:
        header[entry.checkpoint_name] = {"dtype": entry.dtype, "shape": list(entry.shape),
                                         "data_offsets": [offset, offset + entry.nbytes]}
        offset += entry.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # safetensors aligns the data to 8 bytes
    with open(folder / "model.safetensors", "wb") as out:
        out.write(struct.pack("<Q", len(encoded)) + encoded)
        for entry in entries:
            start, length = checkpoint_range(entry)
            with open(entry.file, "rb") as source:
                source.seek(start)
                _copy(source, out, length)
    return folder


def _copy(source: Any, out: Any, length: int, block: int = 64 * 1024**2) -> None:
    while length > 0:
        data = source.read(min(block, length))
        if not data:
            raise OSError(f"{source.name}: unexpected end of file")
        out.write(data)
        length -= len(data)


def remove_twin(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


__all__ = ["TWIN_LAYERS", "ValidationPlan", "available_memory", "plan_validation", "twin_config", "twin_entries",
           "validation_bytes", "write_twin_checkpoint"]
