"""``python -m tools.train_fixture``: train the ``trained`` fixture and write it with its training record.

Writes ``trt_pipeline/fixtures/trained/`` (or ``--out``): the Hugging Face checkpoint (config,
``model.safetensors``, tokenizer, chat template, image-processor config, generation config) and
``training.json`` (hyper-parameters, loss curve, wall time, weights sha256 and, unless
``--no-measure``, the peakedness on the held-out prompts). A hand-written ``README.md`` already in
the folder is kept.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from .corpus import ROOT
from .train import TrainConfig, save, train

DEFAULT_OUT = ROOT / "trt_pipeline" / "fixtures" / "trained"
KEEP = ("README.md",)


def _parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    ap = argparse.ArgumentParser(prog="python -m tools.train_fixture", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="checkpoint folder to (re)write")
    ap.add_argument("--steps", type=int, default=defaults.steps, help="optimizer steps")
    ap.add_argument("--seed", type=int, default=defaults.seed, help="init, data-order and image-pairing seed")
    ap.add_argument("--threads", type=int, default=defaults.threads,
                    help="torch threads (the committed weights were made with the default)")
    ap.add_argument("--no-measure", action="store_true", help="skip the held-out peakedness measurement")
    return ap


def record(cfg: TrainConfig, result: object, weights: Path, peaked: dict | None) -> dict:
    """The ``training.json`` content."""
    from trt_pipeline.artifacts import tool_versions
    from trt_pipeline.artifacts.hashing import sha256_file

    return {
        "generator": "python -m tools.train_fixture", "config": asdict(cfg),
        "weights": {"file": weights.name, "bytes": weights.stat().st_size, "sha256": sha256_file(weights)},
        "samples": {"agent": result.agent_samples, "agent_with_image": result.image_samples,
                    "text": result.text_samples},
        "final_loss": round(result.final_loss, 4), "losses": result.losses, "train_seconds": round(result.seconds, 1),
        "heldout_peakedness": peaked,
        "tool_versions": tool_versions("torch", "transformers", "tokenizers", "safetensors"),
    }


def main(argv: list[str] | None = None) -> int:
    from trt_pipeline.artifacts import write_json_atomic
    from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint
    from trt_pipeline.fixtures.committed import TRAINING_MANIFEST, WEIGHTS_FILE

    args = _parser().parse_args(argv)
    cfg = TrainConfig(steps=args.steps, seed=args.seed, threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="train-fixture-") as work:
        init, staged = Path(work) / "init", Path(work) / "trained"
        write_checkpoint(init, "trained", seed=cfg.seed, random_weights=True, progress=False)
        model, result = train(init, cfg)
        save(model, init, staged)
        peaked = None
        if not args.no_measure:
            from .measure import peakedness

            peaked = peakedness(staged)
            print(f"held-out: mean top-1 prob {peaked['mean_top1_prob']:.3f}, "
                  f"median margin {peaked['median_top1_top2_logit_margin']:.2f}")
        write_json_atomic(staged / TRAINING_MANIFEST, record(cfg, result, staged / WEIGHTS_FILE, peaked))
        for name in KEEP:
            if (args.out / name).is_file():
                shutil.copy2(args.out / name, staged / name)
        if args.out.exists():
            shutil.rmtree(args.out)
        shutil.copytree(staged, args.out)
    print(f"wrote {args.out} (final loss {result.final_loss:.4f}, {result.seconds:.0f} s)")
    return 0
