"""Train the ``trained`` fixture: a small GLM-4.1V whose text decoder has peaked distributions.

Deterministic by construction: the random init is ``write_checkpoint(preset="trained", seed=...,
random_weights=True)``, data order and batches come from ``random.Random(seed)``, torch runs on
one thread with deterministic algorithms. The same torch version on the same CPU family gives
byte-identical weights (another CPU ISA may round differently; the committed file is the reference).

The vision tower stays at its random init (frozen): image features are fed to the decoder during
training, so the decoder learns to be robust to image placeholder tokens without a trained vision tower.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trt_pipeline.artifacts.layout import CHECKPOINT_MANIFEST

from .corpus import ROOT, agent_turns, text_lines

END_OF_REPLY = "<|user|>"  # GLM ends an assistant turn where the next user turn starts (an EOS id)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters (the defaults made the committed checkpoint)."""

    seed: int = 0
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3
    warmup: int = 30
    weight_decay: float = 0.01
    text_share: float = 0.25  # share of plain-text rows per batch
    threads: int = 1


@dataclass
class Sample:
    ids: list[int]
    labels: list[int]
    image: str | None = None


@dataclass
class TrainResult:
    """What a run did: losses per logged step, wall time, sample counts."""

    losses: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    agent_samples: int = 0
    text_samples: int = 0
    image_samples: int = 0

    @property
    def final_loss(self) -> float:
        tail = [loss for _, loss in self.losses[-5:]]
        return sum(tail) / len(tail) if tail else float("nan")


def build_samples(processing: Any, seed: int) -> tuple[list[Sample], list[Sample], dict[str, Any]]:
    """Token ids + labels (-100 on the prompt) for agent turns and plain text; image inputs by path."""
    from PIL import Image

    tokenizer = processing.tokenizer
    images: dict[str, Any] = {}
    agents = []
    for turn in agent_turns(seed):
        count = 0
        if turn.image is not None:
            if turn.image not in images:
                with Image.open(ROOT / turn.image) as img:
                    images[turn.image] = processing.process_images([img.convert("RGB")])
            count = int(images[turn.image][1][0].prod()) // processing.merge ** 2
        prompt = processing._tokenize(processing.chat_text(turn.instruction, int(turn.image is not None)),
                                      [count] if turn.image else [])
        reply = tokenizer(turn.reply + END_OF_REPLY, add_special_tokens=False)["input_ids"]
        agents.append(Sample(prompt + reply, [-100] * len(prompt) + reply, turn.image))
    texts = []
    for line in text_lines():
        ids = tokenizer("[gMASK]<sop>" + line + "<|endoftext|>", add_special_tokens=False)["input_ids"]
        texts.append(Sample(ids, [-100, -100] + ids[2:]))
    return agents, texts, images


def collate(rows: list[Sample], images: dict[str, Any], pad_id: int, image_token_id: int) -> dict[str, Any]:
    """Right-padded batch with the rows' images packed in order."""
    import torch

    length = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row.ids)] = torch.tensor(row.ids)
        labels[i, :len(row.labels)] = torch.tensor(row.labels)
        mask[i, :len(row.ids)] = 1
    batch: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "labels": labels,
                             "mm_token_type_ids": ((ids == image_token_id) & mask.bool()).long()}
    used = [images[r.image] for r in rows if r.image is not None]
    if used:
        batch["pixel_values"] = torch.cat([p for p, _ in used])
        batch["image_grid_thw"] = torch.cat([g for _, g in used])
    return batch


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def _batches(agents: list[Sample], texts: list[Sample], cfg: TrainConfig) -> list[list[Sample]]:
    rng = random.Random(f"train-fixture-order-{cfg.seed}")
    n_text = round(cfg.batch_size * cfg.text_share)
    agent_pool: list[Sample] = []
    text_pool: list[Sample] = []
    out = []
    for _ in range(cfg.steps):
        if len(agent_pool) < cfg.batch_size - n_text:
            agent_pool += rng.sample(agents, len(agents))
        if len(text_pool) < n_text:
            text_pool += rng.sample(texts, len(texts))
        out.append([agent_pool.pop() for _ in range(cfg.batch_size - n_text)] + [text_pool.pop() for _ in range(n_text)])
    return out


def train(init_dir: Path, cfg: TrainConfig, log: Any = print) -> tuple[Any, TrainResult]:
    """Train the model in ``init_dir`` (a random ``trained``-preset checkpoint); return it and the log."""
    import torch
    from transformers import Glm4vForConditionalGeneration

    from trt_pipeline.models.glm4v.processing import Glm4vProcessing

    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.seed)
    processing = Glm4vProcessing(init_dir)
    agents, texts, images = build_samples(processing, cfg.seed)
    model = Glm4vForConditionalGeneration.from_pretrained(str(init_dir), dtype=torch.float32)
    model.model.visual.requires_grad_(False)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    result = TrainResult(agent_samples=len(agents), text_samples=len(texts),
                         image_samples=sum(s.image is not None for s in agents))
    start = time.perf_counter()
    pad, image_id = processing.pad_token_id, processing.dims.image_token_id
    for step, rows in enumerate(_batches(agents, texts, cfg)):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, cfg)
        loss = model(**collate(rows, images, pad, image_id)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if step % 25 == 0 or step == cfg.steps - 1:
            result.losses.append((step, round(loss.item(), 4)))
            log(f"step {step:4d}  loss {loss.item():.4f}  lr {_lr_at(step, cfg):.2e}  {time.perf_counter() - start:6.1f} s")
    result.seconds = time.perf_counter() - start
    model.eval()
    return model, result


def save(model: Any, init_dir: Path, out: Path) -> None:
    """``save_pretrained`` weights + config next to the init folder's tokenizer and image-processor files."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    for path in sorted(init_dir.iterdir()):  # not the init's random-checkpoint manifest
        if path.suffix in (".json", ".jinja") and path.name != CHECKPOINT_MANIFEST and not (out / path.name).exists():
            shutil.copy2(path, out / path.name)


__all__ = ["TrainConfig", "TrainResult", "build_samples", "collate", "save", "train"]
