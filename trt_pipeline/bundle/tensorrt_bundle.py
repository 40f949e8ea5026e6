"""A TensorRT bundle: the export copy, ``build.sh`` (``autoglm-trt build`` or trtexec) and its README."""

from __future__ import annotations

import shlex
from pathlib import Path

from trt_pipeline.artifacts.layout import OutputLayout
from trt_pipeline.bundle.contents import EXPORT_SUBDIR, copy_export
from trt_pipeline.bundle.targets import BundleTarget
from trt_pipeline.bundle.trtexec import format_commands, trtexec_commands
from trt_pipeline.bundle.verify import SUMS_FILE
from trt_pipeline.config.build import parse_workspace
from trt_pipeline.engine.builder import plan_build
from trt_pipeline.engine.options import BuildConfig
from trt_pipeline.errors import ConfigError


def build_script(target: BundleTarget, precision: str, commands: str) -> str:
    """``build.sh``: ``autoglm-trt build`` when installed, else the equivalent trtexec commands."""
    workspace = shlex.quote(target.workspace)
    return f"""#!/usr/bin/env bash
# Build the TensorRT engines of this bundle on the device ({target.description}).
# With autoglm-trt installed ({target.install}) this runs `autoglm-trt build`,
# which also writes the engine manifests the runner checks. Without the Python stack it runs the
# equivalent trtexec commands (same profiles; set TRTEXEC=/path/to/trtexec if it is not on PATH).
set -euo pipefail
HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
cd "$HERE"
if command -v autoglm-trt >/dev/null 2>&1; then
  exec autoglm-trt build "$HERE/{EXPORT_SUBDIR}" --{precision} --workspace {workspace} "$@"
fi
TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}}"
if [ ! -x "$TRTEXEC" ]; then
  echo "build.sh: neither autoglm-trt nor trtexec found; install autoglm-trt ({target.install}) or set TRTEXEC" >&2
  exit 6
fi
echo "build.sh: autoglm-trt not found, building with $TRTEXEC (engines without manifests: run them with trtexec)" >&2
mkdir -p "$(dirname "{EXPORT_SUBDIR}/engines/x")"
{commands.replace("trtexec ", '"$TRTEXEC" ')}
"""


def readme(target: BundleTarget, precision: str, commands: str) -> str:
    return f"""# autoglm-trt bundle: {target.name} ({precision})

{target.description}. Expected TensorRT {target.tensorrt}.x, CUDA {target.cuda_major}.

1. Check the copy: `autoglm-trt bundle verify .` (or `sha256sum -c {SUMS_FILE}`).
2. Install: `{target.install}`; then `autoglm-trt doctor` must show the GPU and "build: pass".
3. Build the engines on this device: `./build.sh` (engines land in `{EXPORT_SUBDIR}/engines/`).
   Engines are only valid for this TensorRT release and GPU; rebuild after a JetPack upgrade.
4. Run: `autoglm-trt generate {EXPORT_SUBDIR} --backend trt --precision {precision} -p "..."`.

{"Jetson memory is shared by CPU and GPU: close other processes during the build; the workspace is " + target.workspace + "." if target.jetson else ""}

Without the Python stack, `build.sh` runs these trtexec commands (one `--profile=N` followed by its
--min/--opt/--maxShapes triple per optimization profile: prefill, decode, append for the decoder). They
only use flags that trtexec of TensorRT {target.tensorrt} documents (NVIDIA/TensorRT
samples/common/sampleOptions.cpp; the releases are named in `trt_pipeline/bundle/trtexec.py`).

```
{commands}
```
"""


def refuse_unparseable(out_dir: Path, target: BundleTarget, precision: str) -> None:
    """Refuse (before writing anything) a variant whose graphs the target's ONNX parser cannot take.

    E.g. INT4's block-quantized ``DequantizeLinear`` needs opset 21, while TensorRT 10.3 (JetPack 6)
    documents opset <= 20 (engine/onnx_ops.py): the board's build would fail after the copy.
    """
    from trt_pipeline.engine.onnx_ops import TARGETS as PARSE_TABLES
    from trt_pipeline.engine.onnx_ops import check_model
    from trt_pipeline.models.glm4v.decoder_ops import tensorrt_hint

    table = PARSE_TABLES[target.parse_table]
    for graph in sorted(OutputLayout(out_dir).onnx_dir(precision).glob("*.onnx")):
        check = check_model(graph, targets=(target.parse_table,))[0]
        if not check:
            contrib = [key.rpartition(":")[2] for key in check.unsupported if key.startswith("com.microsoft:")]
            hint = tensorrt_hint(contrib) if contrib else None
            raise ConfigError(
                f"{check.describe()} ({table.description}, the oldest TensorRT of {target.name})", path=graph,
                hint=hint or f"bundle another precision for {target.name}, or pick a target with a newer TensorRT")


def write_tensorrt_bundle(out_dir: Path, target: BundleTarget, dest: Path, precision: str) -> dict[str, object]:
    """The export copy, constraints.txt, build.sh and README.md in the (empty) folder ``dest``; -> bundle.json's
    target fields."""
    if precision not in target.precisions:
        raise ConfigError(f"--precision {precision!r}: a bundle for {target.name} carries one of "
                          f"{', '.join(target.precisions)} (the ONNX variant made by `autoglm-trt precision`)")
    refuse_unparseable(out_dir, target, precision)
    export = dest / EXPORT_SUBDIR
    copy_export(out_dir, export, precision)
    cfg = BuildConfig(export, precision=precision, workspace=parse_workspace(target.workspace))
    commands = format_commands(trtexec_commands(plan_build(cfg), cfg, root=dest, tensorrt=target.tensorrt))
    (dest / "constraints.txt").write_text("\n".join(target.constraints) + "\n", encoding="utf-8")
    (dest / "build.sh").write_text(build_script(target, precision, commands), encoding="utf-8")
    (dest / "build.sh").chmod(0o755)
    (dest / "README.md").write_text(readme(target, precision, commands), encoding="utf-8")
    return {"tensorrt": target.tensorrt, "cuda_major": target.cuda_major}


__all__ = ["build_script", "readme", "refuse_unparseable", "write_tensorrt_bundle"]
