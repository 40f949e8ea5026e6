"""Peak host memory of loading a large engine plan through ``load_engine``, up to the TensorRT call.

Review failure 5: ``read_bytes()`` + sha256 + TensorRT's own copy needed about 2x the plan in host
memory. This writes a dummy plan of ``--size`` bytes with a matching manifest and loads it through
the real code path (manifest checks, sha256, :mod:`trt_pipeline.runtime.plan_stream`) with a stand-in
TensorRT module whose ``Runtime.deserialize_cuda_engine`` consumes what it is given (the stream
reader to its end, or every page of the buffer) and keeps nothing, as the boundary of what this
package controls.

Run under the memory cap (page cache counts toward the cgroup but is reclaimed under pressure, so
passing at a cap of 1.1x the plan means the load never *holds* more than that):

    ../shared/tools/memcap 1126M -- python benchmarks/engine_load_memory.py --size 1GiB --mode stream
    ../shared/tools/memcap 1126M -- python benchmarks/engine_load_memory.py --size 1GiB --mode mmap

Prints one JSON line: plan size, mode, peak RSS (ru_maxrss), seconds.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

CHUNK = 64 << 20


def fake_tensorrt(stream: bool) -> types.ModuleType:
    """The TensorRT surface ``load_engine`` touches; the plan is read and dropped."""
    import tensorrt_lean as lean

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "11.4.0.106" if stream else "10.3.0.30"
    trt.BuilderFlag = lean.BuilderFlag
    trt.HardwareCompatibilityLevel = lean.HardwareCompatibilityLevel
    trt.ILogger = lean.ILogger
    consumed = {"bytes": 0}
    trt.consumed = consumed

    class Engine:
        num_optimization_profiles = 1

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, source: Any) -> Engine:
            if hasattr(source, "read"):
                while block := source.read(1 << 40, 0):
                    consumed["bytes"] += len(block)
            else:
                view = memoryview(source)
                for start in range(0, len(view), CHUNK):
                    consumed["bytes"] += len(bytes(view[start:start + CHUNK]))  # touch every page
                view.release()
            return Engine()

    trt.Runtime = Runtime
    if stream:

        class IStreamReaderV2:
            def __init__(self) -> None:
                pass

        trt.IStreamReaderV2, trt.SeekPosition = IStreamReaderV2, lean.SeekPosition
    return trt


def write_plan(folder: Path, size: int) -> Path:
    from trt_pipeline.engine.manifest import EngineManifest, write_manifest
    from trt_pipeline.engine.profiles import Profile, ShapeRange

    from trt_pipeline.artifacts import sha256_file

    path = folder / "decoder.fp16.engine"
    block = bytes(range(256)) * (CHUNK // 256)
    with open(path, "wb") as handle:
        for start in range(0, size, CHUNK):
            handle.write(block[: min(CHUNK, size - start)])
    profile = Profile("default", {"x": ShapeRange((1,), (1,), (1,))})
    manifest = EngineManifest(
        component="decoder", precision="fp16", engine_file=path.name, engine_sha256=sha256_file(path),
        engine_size=size, onnx_file="onnx/fp16/decoder.onnx", onnx_sha256="0" * 64, tensorrt_version="",
        gpu_name="NVIDIA GeForce RTX 4090", compute_capability="8.9", cuda_version="12.8", profiles=(profile,),
    )
    write_manifest(manifest, path)
    return path


def main(argv: list[str] | None = None) -> int:
    from trt_pipeline.config.build import parse_workspace

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--mode", choices=("stream", "mmap"), default="stream")
    parser.add_argument("--dir", default=None, help="where to write the dummy plan (default: a temp folder)")
    args = parser.parse_args(argv)
    size = int(parse_workspace(args.size))
    from dataclasses import replace

    from trt_pipeline.engine.manifest import read_manifest, write_manifest
    from trt_pipeline.engine.tensorrt_import import GpuInfo, TensorRTContext, detect_shim
    from trt_pipeline.runtime.tensorrt_runner import load_engine

    trt = fake_tensorrt(args.mode == "stream")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = write_plan(Path(tmp), size)
        write_manifest(replace(read_manifest(path), tensorrt_version=trt.__version__), path)
        ctx = TensorRTContext(trt, detect_shim(trt), GpuInfo("NVIDIA GeForce RTX 4090", "8.9", "12.8"))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        started = time.perf_counter()
        load_engine(path, ctx=ctx)
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert trt.consumed["bytes"] == size
    print(json.dumps({"plan_bytes": size, "mode": args.mode, "peak_rss_bytes": peak, "rss_before_load_bytes": before,
                      "peak_rss_over_plan": round(peak / size, 3), "seconds": round(seconds, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
