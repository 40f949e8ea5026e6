"""One feed builder and one decoder stepper for GLM-4.1V, over any Polygraphy-style runner.

Everything data-dependent around the two exported graphs happens here, once:

* :class:`FeedBuilder` turns host data into named input arrays: token embeddings with image
  features written into the placeholder positions, M-RoPE cos/sin from
  :func:`~trt_pipeline.models.glm4v.host.rope_index`, the 0/1 attention mask, empty or filled
  ``past_key_values.*`` and ``logits_positions``. Float inputs get the dtype the runner declares
  (fp16-I/O AutoCast graphs take float16), inputs the runner does not declare are left out (an
  export made before ``logits_positions`` existed), and with ``reference_inputs`` the
  reference-only inputs (``position_ids``, ``image_grid_thw``) of the transformers runners are added.
* :class:`DecoderStepper` owns one KV cache and steps it: :meth:`~DecoderStepper.prefill` appends
  a segment of any length to the cache (split into chunks, each a multi-token step on a filled
  cache once the first chunk ran), :meth:`~DecoderStepper.decode` appends one token per row.
  Each step returns the logits of the positions asked for (the last one by default), so a caller
  (greedy generation, a server sampling with temperature/top-p) picks tokens itself.
  :meth:`~DecoderStepper.decode` builds its feed from tables (:meth:`FeedBuilder.decode_feed`)
  instead of the general :meth:`~DecoderStepper.prepare` path: bitwise the same feed, cache and
  logits, a fraction of the host work (a small model's decode step is a few milliseconds). With an
  ``inplace`` cache fed in blocks to a runner that writes it in place (the export's contract says
  the graph takes free rows), a batch of one decodes through
  :class:`~trt_pipeline.models.glm4v.kept_decode.KeptDecode`: that feed built and bound once per
  block, then only written into.

The runner is anything with Polygraphy's ``infer(feed, check_inputs=...)`` and
``get_input_metadata()``: the torch modules runner, ONNX Runtime's ``OnnxrtRunner``, the TensorRT
runner or the transformers reference runner (with ``reference_inputs=True``). Batches are
left-padded (as :class:`~trt_pipeline.models.glm4v.processing.Glm4vProcessing` makes them), so the
last position of every row is a real token and one shared ``logits_positions`` serves every row.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch

from trt_pipeline.models.glm4v import host
from trt_pipeline.models.glm4v.contract import ExportContract
from trt_pipeline.models.glm4v.config import Glm4vDims
from trt_pipeline.models.glm4v.decoder_ops import KV_CACHES, step_refusal
from trt_pipeline.models.glm4v.io_spec import LOGITS_POSITIONS, KvLayout, past_names, present_names
from trt_pipeline.models.glm4v.kept_decode import KeptDecode
from trt_pipeline.models.glm4v.kv_arena import KV_BLOCK, KvArena, extended
from trt_pipeline.models.glm4v.processing import MultimodalInputs

#: Which positions of a step get logits: the last one, every one, or explicit indices of the segment.
Logits = Literal["last", "all"] | Sequence[int]


class HostTables(Protocol):
    """What the host needs besides the runners (``generation.HostAssets``)."""

    dims: Glm4vDims
    embed_table: torch.Tensor  # [vocab, hidden]
    vision_position_table: torch.Tensor  # [grid*grid, vision_hidden]


def _np(t: torch.Tensor, dtype: Any = np.float32) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy().astype(dtype, copy=False))


def pad_mask(mask: np.ndarray, total: int) -> np.ndarray:
    """``mask [B, T]`` followed by zero columns up to ``total`` (the free rows of a fed inplace cache)."""
    padded = np.zeros((mask.shape[0], total), np.int64)
    padded[:, :mask.shape[1]] = mask
    return padded


def runner_binds_in_place(runner: Any) -> bool:
    """Whether an active runner writes ``present.*`` into the fed ``past_key_values.*`` arrays
    (:class:`~trt_pipeline.runtime.ort_binding.BoundOrtRunner` over an inplace graph)."""
    return bool(getattr(runner, "binds_in_place", False))


def runner_inputs(runner: Any) -> dict[str, np.dtype]:
    """Declared input names -> numpy dtype of a Polygraphy runner (numpy or Polygraphy DataType)."""
    with warnings.catch_warnings():  # Polygraphy deprecates numpy dtypes in ORT metadata; both handled
        warnings.simplefilter("ignore", DeprecationWarning)
        meta = runner.get_input_metadata()
    out = {}
    for name, entry in meta.items():
        try:
            out[name] = np.dtype(entry.dtype)
        except TypeError:  # Polygraphy DataType
            from polygraphy.datatype import DataType

            out[name] = np.dtype(DataType.to_dtype(entry.dtype, "numpy"))
    return out


def runner_kv_cache(runner: Any) -> str:
    """The KV-cache contract a decoder runner declares: ``inplace`` when its cache inputs are 3-D
    (``[B, T, kv * D]``), ``shared`` when they are 4-D with the mask's length axis (``[B, kv, T, D]``, the
    new rows included), else ``concat`` (a runner without cache inputs, e.g. the vision encoder, too)."""
    declared = getattr(runner, "kv_cache", None)  # a runner that says it (the transformers reference runner)
    if isinstance(declared, str) and declared in KV_CACHES:
        return declared
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        meta = runner.get_input_metadata()
    shapes = [entry.shape for name, entry in meta.items() if name.startswith("past_key_values.")]
    past = shapes[0] if shapes else None
    if past is None:
        return "concat"
    if len(past) == 3:
        return "inplace"
    mask = meta["attention_mask"].shape if "attention_mask" in meta else None
    if len(past) == 4 and mask is not None and isinstance(past[2], str) and past[2] == mask[1]:
        return "shared"
    return "concat"


def logit_indices(request: Logits, length: int) -> list[int]:
    """Indices into a segment of ``length`` positions for a :data:`Logits` request."""
    if request == "last":
        return [length - 1]
    if request == "all":
        return list(range(length))
    indices = [int(i) for i in request]  # type: ignore[union-attr]
    if not indices or any(not 0 <= i < length for i in indices):
        raise ValueError(f"logit positions {indices} must be non-empty and inside 0..{length - 1}")
    return indices


class FeedBuilder:
    """Named input arrays of the vision encoder and the decoder, matched to one runner's inputs.

    Args:
        assets: dims and host tables (``HostAssets``).
        input_dtypes: the runner's declared inputs and dtypes (:func:`runner_inputs`); None feeds
            every input in float32/int64 (feeds shared by several runners, e.g. ``compare``).
        reference_inputs: add ``position_ids`` / ``image_grid_thw`` for the transformers runners.
        kv_cache: the decoder's KV-cache contract (:data:`~trt_pipeline.models.glm4v.decoder_ops.KV_CACHES`;
            :meth:`for_runner` reads it from the runner's inputs).
    """

    def __init__(
        self, assets: HostTables, input_dtypes: Mapping[str, np.dtype] | None = None, *, reference_inputs: bool = False,
        kv_cache: str = "concat",
    ) -> None:
        self.assets = assets
        self.dims = assets.dims
        self.kv_layout = KvLayout.of(assets.dims, kv_cache)
        self.input_dtypes = dict(input_dtypes) if input_dtypes is not None else None
        # inputs declared floating point: the only ones :meth:`cast` converts (looked up per input and step)
        self._float_inputs = {name: np.dtype(dtype) for name, dtype in (self.input_dtypes or {}).items()
                              if np.issubdtype(dtype, np.floating)}
        self.reference_inputs = reference_inputs
        layers = self.dims.text.num_hidden_layers
        self.past_names, self.present_names = past_names(layers), present_names(layers)
        self._decode_tables: _DecodeTables | None = None

    @classmethod
    def for_runner(cls, assets: HostTables, runner: Any, *, reference_inputs: bool = False) -> FeedBuilder:
        return cls(assets, runner_inputs(runner), reference_inputs=reference_inputs, kv_cache=runner_kv_cache(runner))

    # -- inputs -------------------------------------------------------------------------------
    def accepts(self, name: str) -> bool:
        return self.input_dtypes is None or name in self.input_dtypes

    def cast(self, name: str, value: np.ndarray) -> np.ndarray:
        """``value`` in the runner's declared float dtype (float inputs only)."""
        want = self._float_inputs.get(name)
        if want is None or value.dtype == want or value.dtype.kind != "f":
            return value
        return value.astype(want, copy=False)

    def _finish(self, feed: Mapping[str, np.ndarray]) -> OrderedDict:
        """The accepted inputs of ``feed``, cast as :meth:`cast` does (inlined: runs per input and decode step)."""
        declared, floats, out = self.input_dtypes, self._float_inputs, OrderedDict()
        for name, value in feed.items():
            if declared is not None and name not in declared:
                continue
            want = floats.get(name)
            out[name] = value if want is None or value.dtype == want or value.dtype.kind != "f" else value.astype(want, copy=False)
        return out

    # -- vision ---------------------------------------------------------------------------------
    def vision_feed(self, pixel_values: torch.Tensor, grid_thw: host.GridTHW) -> OrderedDict:
        """Vision-encoder inputs of ONE image (``grid_thw`` [[1, h, w]]; + ``image_grid_thw``)."""
        extra = host.vision_inputs(self.dims.vision, self.assets.vision_position_table.float(), grid_thw)
        feed: dict[str, np.ndarray] = {"pixel_values": _np(pixel_values)}
        feed.update((name, _np(value)) for name, value in extra.items())
        if self.reference_inputs:
            feed["image_grid_thw"] = _np(torch.as_tensor(grid_thw), np.int64)
        return self._finish(feed)

    def vision_feeds(self, pixel_values: torch.Tensor, grid_thw: host.GridTHW) -> list[OrderedDict]:
        """One vision-encoder feed per image of packed patches (the encoder takes one image per call)."""
        return [self.vision_feed(pixel_values[start:stop], [grid])
                for start, stop, grid in host.image_segments(grid_thw)]

    # -- decoder --------------------------------------------------------------------------------
    def token_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows of the host embedding table, float32 ``[B, S, hidden]``."""
        return self.assets.embed_table[ids].float()

    def prompt_embeddings(self, inputs: MultimodalInputs, image_features: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with image features written into the placeholder positions (row-major)."""
        embeds = self.token_embeddings(inputs.input_ids).clone()
        mask = inputs.mm_token_type_ids.bool()
        if image_features is not None:
            if int(mask.sum()) != image_features.shape[0]:
                raise ValueError(
                    f"{int(mask.sum())} image placeholder tokens but {image_features.shape[0]} image features"
                )
            embeds[mask] = image_features.to(embeds.dtype)
        return embeds

    def prompt_positions(self, inputs: MultimodalInputs) -> torch.Tensor:
        """M-RoPE position ids ``[3, B, S]`` of a prompt (0 at padding)."""
        positions, _ = host.rope_index(inputs.input_ids, inputs.mm_token_type_ids, inputs.image_grid_thw,
                                       inputs.attention_mask, self.dims.vision.spatial_merge_size)
        return positions

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        shape = self.kv_layout.shape(batch, 0)
        return {name: self.cast(name, np.zeros(shape, np.float32)) for name in self.past_names}

    def decoder_feed(
        self,
        embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        positions: torch.Tensor,
        past: Mapping[str, np.ndarray],
        logits: Logits = "last",
    ) -> OrderedDict:
        """One decoder step: ``embeds [B, S, H]`` after ``past`` (``attention_mask [B, past + S]``).

        ``positions`` are the M-RoPE ids ``[3, B, S]`` of the new tokens. An ``inplace`` cache
        ``past`` may already span the new rows (``past + S``, as a stepper feeds it) or not (extended here),
        or run further (free rows of a graph that takes them, :class:`KvArena` blocks: the mask gets 0 there).
        """
        total = attention_mask.shape[1]
        mask = _np(attention_mask, np.int64)
        if self.kv_layout.inplace and total and not mask[:, -1].any():
            # the inplace graph writes the new rows where the mask's attended rows end (text.attended_end)
            raise ValueError(f"an {self.kv_layout.kind} KV cache step needs its last new position attended (attention_mask 1) "
                             "in at least one row: left-pad the batch (as Glm4vProcessing does)")
        why = step_refusal(self.kv_layout.kind, int(mask.shape[0]), int(embeds.shape[1]), total - int(embeds.shape[1]))
        if why is not None:
            raise ValueError(f"{why}: prefill such batches one row at a time")
        fed = self.kv_layout.length(next(iter(past.values()))) if self.kv_layout.inplace and past else total
        if fed < total:
            # not yet spanning the new rows: a copy that does (a stepper feeds views of its KvArena instead)
            past = {name: extended(self.kv_layout, value, total) for name, value in past.items()}
        elif fed > total:  # free rows after the new ones (a KvArena block): the mask covers them with 0
            mask = pad_mask(mask, fed)
        cos, sin = host.text_rope(self.dims.text, positions)
        feed: dict[str, np.ndarray] = {
            "inputs_embeds": _np(embeds),
            "attention_mask": mask,
            "rope_cos": _np(cos),
            "rope_sin": _np(sin),
            LOGITS_POSITIONS: np.asarray(logit_indices(logits, embeds.shape[1]), np.int64),
        }
        feed.update(past)
        if self.reference_inputs:
            feed["position_ids"] = _np(positions, np.int64)
        return self._finish(feed)

    def decode_tables(self) -> _DecodeTables:
        """The embedding and M-RoPE rows :meth:`decode_feed` looks up (made on first use)."""
        tables = self._decode_tables
        if tables is None:
            tables = self._decode_tables = _DecodeTables(self)
        return tables

    def decode_feed(
        self, tokens: np.ndarray, positions: np.ndarray, attention_mask: np.ndarray, past: Mapping[str, np.ndarray]
    ) -> OrderedDict:
        """:meth:`decoder_feed` of one token per row, in numpy: the same arrays, bitwise, in the same order.

        ``tokens [B]`` and their M-RoPE ``positions [B]`` (one per row: a decode token has the same
        position on all three axes), ``attention_mask [B, past + 1]`` int64 including the new
        column; logits of the (only) last position. A decode step is a few milliseconds on a
        small model, so the torch round trips of the general path (embedding lookup, M-RoPE
        cos/sin computed afresh, mask and dtype conversions) are replaced by table lookups:
        embedding rows and rows of :func:`~trt_pipeline.models.glm4v.host.text_rope_table`.
        Not for ``reference_inputs`` builders (their ``position_ids``): use :meth:`decoder_feed`.
        """
        tables = self.decode_tables()
        cos, sin = tables.rope(positions)
        batch = tokens.shape[0]
        embeds = tables.embeddings(tokens).reshape(batch, 1, -1)
        feed: dict[str, np.ndarray] = {"inputs_embeds": embeds, "attention_mask": attention_mask,
                                       "rope_cos": cos, "rope_sin": sin, LOGITS_POSITIONS: np.zeros(1, np.int64)}
        if not tables.past_as_is(past):
            feed.update(past)
            return self._finish(feed)
        finished = self._finish(feed)
        finished.update(past)  # exactly what _finish would keep and cast: all accepted, none cast
        return finished


class _DecodeTables:
    """What :meth:`FeedBuilder.decode_feed` looks rows up in, made once per builder.

    The M-RoPE table is grown (with headroom) when a position outside it comes, by recomputing
    it with :func:`~trt_pipeline.models.glm4v.host.text_rope_table` and casting it to the
    runner's dtype once (a cast is elementwise, so casting rows later gives the same values).
    """

    def __init__(self, builder: FeedBuilder) -> None:
        self.builder = builder
        table = builder.assets.embed_table
        # a float32 CPU table is read through a numpy view (rows are copied, never written); any
        # other dtype goes through torch's .float() as token_embeddings does
        self.embed_rows = table.detach().numpy() if table.dtype == torch.float32 and table.device.type == "cpu" else None
        self.cos = self.sin = np.zeros((0, builder.dims.text.rotary_dim), np.float32)
        declared = builder.input_dtypes
        self.accepted = None if declared is None else frozenset(declared)
        wants = {builder._float_inputs.get(name) for name in builder.past_names}
        # the one float dtype every past input is declared with (None: none is cast); several: never as is
        self.past_dtype = next(iter(wants)) if len(wants) == 1 else False

    def past_as_is(self, past: Mapping[str, np.ndarray]) -> bool:
        """Whether :meth:`FeedBuilder._finish` would keep every array of ``past`` and cast none.

        A decode step's cache is the runner's last outputs, already in the declared dtype, so
        checking that once per step (one dtype test per array) replaces finishing it per array.
        """
        if self.accepted is not None and not past.keys() <= self.accepted:
            return False
        want = self.past_dtype
        if want is False:
            return False
        return want is None or all(type(value) is np.ndarray and value.dtype == want for value in past.values())

    def embeddings(self, tokens: np.ndarray) -> np.ndarray:
        """Float32 embedding rows ``[B, hidden]`` of ``tokens [B]`` (as ``FeedBuilder.token_embeddings``)."""
        if self.embed_rows is not None:
            return self.embed_rows[tokens]
        return self.builder.token_embeddings(torch.from_numpy(tokens)).numpy()

    def rope(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """cos/sin ``[B, 1, rotary_dim]`` of text positions ``[B]``, in the runner's dtype."""
        wanted = positions.tolist()
        if min(wanted) < 0:
            raise ValueError(f"M-RoPE positions must be >= 0, got {wanted}")
        if max(wanted) >= len(self.cos):
            cos, sin = host.text_rope_table(self.builder.dims.text, max(2 * max(wanted) + 2, 256))
            self.cos = self.builder.cast("rope_cos", cos.numpy())
            self.sin = self.builder.cast("rope_sin", sin.numpy())
        batch = len(wanted)
        return self.cos[positions].reshape(batch, 1, -1), self.sin[positions].reshape(batch, 1, -1)


@dataclass
class StepOutput:
    """The result of one :class:`DecoderStepper` call.

    ``logits`` are float32 ``[B, K, vocab]`` for the K positions asked for (in the order asked);
    ``feed``/``outputs`` are those of the last chunk run (``present.*`` in ``outputs``).
    """

    logits: torch.Tensor
    feed: Mapping[str, np.ndarray]
    outputs: Mapping[str, Any]

    @property
    def last_logits(self) -> torch.Tensor:
        """``[B, vocab]`` logits of the last position asked for."""
        return self.logits[:, -1, :]


@dataclass
class CacheState:
    """A stepper's KV cache and host bookkeeping (cheap to keep: arrays are not copied)."""

    past: dict[str, np.ndarray]
    attention_mask: torch.Tensor  # [B, past]
    next_position: torch.Tensor  # [B] M-RoPE position of the next token


class DecoderStepper:
    """Prefill (in chunks, on an empty or filled cache) and decode over one decoder runner.

    Args:
        assets: dims and host tables (``HostAssets``).
        runner: an *active* Polygraphy-style decoder runner.
        builder: feeds for this runner (default: :meth:`FeedBuilder.for_runner`).
        chunk_size: longest segment run in one call (the export's ``sequence_length`` max);
            None runs each segment in one call.
        check_inputs: passed to ``runner.infer`` (Polygraphy's input shape/dtype check).
        contract: the export's limits; a call outside them is refused before the runner sees it.
        kv_block: rows an ``inplace`` cache's fed views grow by, where the contract says the graph takes
            free rows (:data:`~trt_pipeline.models.glm4v.kv_arena.KV_BLOCK`; ``benchmarks/kv_block_sweep.py``).
    """

    def __init__(
        self,
        assets: HostTables,
        runner: Any,
        *,
        builder: FeedBuilder | None = None,
        chunk_size: int | None = None,
        check_inputs: bool = True,
        contract: ExportContract | None = None,
        kv_block: int = KV_BLOCK,
    ) -> None:
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.runner = runner
        self.builder = builder or FeedBuilder.for_runner(assets, runner)
        self.chunk_size = chunk_size
        self.check_inputs = check_inputs
        self.contract = contract
        layout = self.builder.kv_layout
        #: an inplace cache's growing buffers (None: concat, each step's present.* is the next past); fed in
        #: blocks of KV_BLOCK rows, bound once per block, when the graph takes free rows and the runner
        #: writes in place (any other runner would only copy the free rows)
        blocks = layout.inplace and contract is not None and contract.kv_free_rows and runner_binds_in_place(runner)
        self.arena = KvArena(layout, kv_block if blocks else None, contract.max_total if blocks else None) \
            if layout.inplace else None
        #: batch-of-one decode steps through one kept binding per block (None: every step binds its feed)
        self.kept = KeptDecode(self.builder, self.arena, runner, check_inputs) \
            if KeptDecode.applies(self.builder, self.arena, runner) else None
        self.reset(1)

    # -- cache ----------------------------------------------------------------------------------
    def reset(self, batch: int = 1) -> None:
        """Empty the cache for a batch of ``batch`` rows."""
        self.state = CacheState(self.builder.empty_past(batch), torch.zeros(batch, 0, dtype=torch.long),
                                torch.zeros(batch, dtype=torch.long))

    def load(self, state: CacheState) -> None:
        """Continue from ``state`` (from :meth:`save`, or a cache made elsewhere, e.g. by transformers).

        An ``inplace`` cache is settled with the arena here (:meth:`KvArena.adopt`: kept in place or
        copied once), so the decode steps after a load cost what every other step costs.
        """
        past = {k: self.builder.cast(k, np.asarray(v)) for k, v in state.past.items()}
        self.state = CacheState(past, state.attention_mask.long(), state.next_position.long())  # lets go of the old one
        if self.arena is not None:
            self.state.past = self.arena.adopt(past)

    def save(self) -> CacheState:
        return CacheState(dict(self.state.past), self.state.attention_mask, self.state.next_position)

    def truncate(self, length: int, next_position: torch.Tensor) -> None:
        """Forget every cached position from ``length`` on; the next token goes to M-RoPE ``next_position [B]``.

        (M-RoPE positions are not cache indices, an image advances them by less than its length,
        so the caller who knows the prompt says where the next token goes.)
        """
        if not 0 <= length <= self.past_length:
            raise ValueError(f"cannot truncate a cache of {self.past_length} positions to {length}")
        rows = self.builder.kv_layout.rows
        past = {k: np.ascontiguousarray(rows(v, 0, length)) for k, v in self.state.past.items()}
        self.state = CacheState(past, self.state.attention_mask[:, :length], next_position.long())

    @property
    def batch(self) -> int:
        return int(self.state.attention_mask.shape[0])

    @property
    def past_length(self) -> int:
        return int(self.state.attention_mask.shape[1])

    # -- one call -------------------------------------------------------------------------------
    def prepare(
        self, embeds: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor, logits: Logits = "last"
    ) -> OrderedDict:
        """The feed of one call appending ``embeds [B, S, H]`` (mask ``[B, S]``) to the cache, not run."""
        mask = torch.cat([self.state.attention_mask, attention_mask.long()], dim=1)
        return self.builder.decoder_feed(embeds, mask, positions, self._step_past(embeds.shape[1]), logits)

    def _step_past(self, new: int) -> Mapping[str, np.ndarray]:
        """The cache a step of ``new`` tokens is fed: the state's (concat) or views of the arena (inplace)."""
        if self.arena is None:
            return self.state.past
        return self.arena.feed(self.state.past, new)

    def step(self, feed: Mapping[str, np.ndarray], positions: torch.Tensor, logits: Logits = "last") -> StepOutput:
        """Run a feed from :meth:`prepare` and append its keys/values and mask to the cache.

        ``positions`` are the M-RoPE ids of the fed tokens and ``logits`` the request the feed was
        prepared with (used only when the runner has no ``logits_positions`` input and computes
        every position).
        """
        if self.contract is not None:
            embeds = feed["inputs_embeds"]
            self.contract.check_step(int(embeds.shape[0]), int(embeds.shape[1]), self.past_length)
        out = self.runner.infer(feed, check_inputs=self.check_inputs)
        need = self.past_length + int(positions.shape[2])
        past = self._past_from(out, feed, need)
        after = positions.amax(dim=(0, 2)) + 1
        mask = torch.as_tensor(feed["attention_mask"])[:, :need].long()  # every decoder runner takes the mask
        self.state = CacheState(past, mask, torch.maximum(self.state.next_position, after))
        return StepOutput(step_logits(out, feed, logits, positions.shape[2]), feed, out)

    def _past_from(self, out: Mapping[str, Any], feed: Mapping[str, Any], need: int) -> dict[str, np.ndarray]:
        """A run's ``present.*`` outputs as the next step's ``past_key_values.*`` (numpy, not copied), ``need`` rows.

        Fed in blocks (:class:`KvArena`), the outputs span the block: written in place (the fed arrays
        came back), the state is the arena's exact views; else the outputs' first ``need`` rows."""
        builder = self.builder  # mapped in C: this runs once per decode step, cache-cold after the run
        past = dict(zip(builder.past_names, map(np.asarray, map(out.__getitem__, builder.present_names))))
        arena = self.arena
        if arena is None or arena.block is None or not past:
            return past
        first = builder.past_names[0]
        fed = feed.get(first)
        if past[first] is fed and fed is arena.bound.get(first):  # the arena's block, written in place
            return dict(arena.handed)
        rows = builder.kv_layout.rows
        return {name: rows(value, 0, need) for name, value in past.items()}

    def _step_by_rows(self, embeds: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor,
                      logits: Logits) -> StepOutput:
        """:meth:`prepare` + :meth:`step` of a batch's several-token call, run one row at a time.

        For a graph that takes such calls for a batch of one only (:func:`step_refusal`: the onnxruntime
        flavour's GroupQueryAttention). Each row is fed exact copies of its cache rows (not the
        arena's buffers, which a row's run would write in place under the next row), and its
        outputs are copied before the next run reuses the runner's buffers; the rows' logits and
        caches are then stacked as the batch's. Rows are independent (attention never crosses
        them), so this is the batched call's result, at the batch's cost in weight reads.
        """
        state = self.state
        if self.contract is not None:
            self.contract.check_step(self.batch, int(embeds.shape[1]), self.past_length)
        need = self.past_length + int(embeds.shape[1])
        mask = torch.cat([state.attention_mask, attention_mask.long()], dim=1)
        rows_of, logit_rows, pasts = self.builder.kv_layout.rows, [], []
        for row in range(self.batch):
            one = slice(row, row + 1)
            past = {name: np.array(value[one]) for name, value in state.past.items()}
            feed = self.builder.decoder_feed(embeds[one], mask[one], positions[:, one], past, logits)
            out = self.runner.infer(feed, check_inputs=self.check_inputs)
            logit_rows.append(step_logits(out, feed, logits, positions.shape[2]))
            pasts.append([np.array(rows_of(np.asarray(out[name]), 0, need)) for name in self.builder.present_names])
        past = {name: np.concatenate([rows[i] for rows in pasts]) for i, name in enumerate(self.builder.past_names)}
        self.state = CacheState(past, mask, torch.maximum(state.next_position, positions.amax(dim=(0, 2)) + 1))
        return StepOutput(torch.cat(logit_rows), feed, out)

    # -- segments -------------------------------------------------------------------------------
    def prefill(
        self,
        embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        positions: torch.Tensor,
        *,
        logits: Logits = "last",
        chunk_size: int | None = None,
    ) -> StepOutput:
        """Append a segment (``embeds [B, S, H]``, ``attention_mask [B, S]``, M-RoPE ``positions [3, B, S]``).

        The segment runs in chunks of at most ``chunk_size`` (default: the stepper's) tokens; every
        chunk after the first is a multi-token step on a filled cache. Logits come back for the
        segment positions ``logits`` asks for, gathered over the chunks.
        """
        length = embeds.shape[1]
        wanted = logit_indices(logits, length)
        size = chunk_size or self.chunk_size or length
        pieces: list[torch.Tensor] = []
        kind = self.builder.kv_layout.kind
        for start in range(0, length, size):
            end = min(start + size, length)
            local = [i - start for i in wanted if start <= i < end]
            chunk = positions[:, :, start:end]
            if step_refusal(kind, self.batch, end - start, self.past_length):  # a call the graph takes for one row only
                last = self._step_by_rows(embeds[:, start:end], attention_mask[:, start:end], chunk, local or "last")
            else:
                feed = self.prepare(embeds[:, start:end], attention_mask[:, start:end], chunk, local or "last")
                last = self.step(feed, chunk, local or "last")
            if local:
                pieces.append(last.logits)
        return StepOutput(torch.cat(pieces, dim=1), last.feed, last.outputs)

    def prefill_tokens(self, ids: torch.Tensor, *, logits: Logits = "last", chunk_size: int | None = None) -> StepOutput:
        """Append text tokens ``ids [B, S]`` (no padding) at the next M-RoPE positions."""
        batch, length = ids.shape
        positions = (self.state.next_position.view(1, batch, 1) + torch.arange(length).view(1, 1, -1)).expand(3, -1, -1)
        return self.prefill(self.builder.token_embeddings(ids), torch.ones(batch, length, dtype=torch.long),
                            positions, logits=logits, chunk_size=chunk_size)

    def prefill_prompt(
        self,
        inputs: MultimodalInputs,
        image_features: torch.Tensor | None = None,
        *,
        logits: Logits = "last",
        chunk_size: int | None = None,
    ) -> StepOutput:
        """Reset the cache and prefill a (left-padded, multimodal) prompt."""
        self.reset(inputs.input_ids.shape[0])
        embeds = self.builder.prompt_embeddings(inputs, image_features)
        positions = self.builder.prompt_positions(inputs)
        return self.prefill(embeds, inputs.attention_mask, positions, logits=logits, chunk_size=chunk_size)

    def prepare_decode(self, tokens: torch.Tensor) -> tuple[OrderedDict, torch.Tensor]:
        """Feed and M-RoPE positions of one new token per row (``tokens [B]``), not run."""
        batch = self.batch
        positions = self.state.next_position.view(1, batch, 1).expand(3, batch, 1)
        embeds = self.builder.token_embeddings(tokens.view(batch, 1))
        return self.prepare(embeds, torch.ones(batch, 1, dtype=torch.long), positions), positions

    def decode(self, tokens: torch.Tensor) -> StepOutput:
        """Append one token per row and return its logits ``[B, 1, vocab]``.

        The same feed, cache and logits as :meth:`prepare_decode` + :meth:`step` (asserted bitwise
        by ``tests/models/test_decode_fast_path.py``), with the host work of a step cut to table
        lookups and one mask copy (:meth:`FeedBuilder.decode_feed`). Reference-input builders
        (transformers runners) take the general path.
        """
        if self.builder.reference_inputs:
            feed, positions = self.prepare_decode(tokens)
            return self.step(feed, positions)
        state = self.state
        batch, length = state.attention_mask.shape
        if self.contract is not None:
            self.contract.check_step(batch, 1, length)
        kept = self.kept
        if kept is not None and kept.prepare(state, tokens):  # one kept binding per cache block
            after = CacheState(dict(self.arena.handed), kept.state_mask, torch.from_numpy(state.next_position.numpy() + 1))
            logits, out = kept.run()
            self.state = after
            return StepOutput(logits, kept.feed, out)
        before, next_position = state.attention_mask.numpy(), state.next_position.numpy()
        past = self._step_past(1)
        fed = self.builder.kv_layout.length(next(iter(past.values()))) if self.arena is not None and past else length + 1
        mask = (np.empty if fed == length + 1 else np.zeros)((batch, fed), np.int64)  # 0 on free rows (KvArena blocks)
        mask[:, :length] = before
        mask[:, length] = 1
        feed = self.builder.decode_feed(tokens.numpy().reshape(batch), next_position, mask, past)
        out = self.runner.infer(feed, check_inputs=self.check_inputs)
        self.state = CacheState(self._past_from(out, feed, length + 1), torch.from_numpy(mask[:, :length + 1]),
                                torch.from_numpy(next_position + 1))
        return StepOutput(step_logits(out, feed, "last", 1), feed, out)


def step_logits(out: Mapping[str, Any], feed: Mapping[str, Any], request: Logits, length: int) -> torch.Tensor:
    """Float32 logits ``[B, K, vocab]`` of the positions asked for, copied out of the runner's buffer
    (reused by the next run); an older export without ``logits_positions`` computed all ``length``."""
    values = torch.from_numpy(np.array(out["logits"], dtype=np.float32))
    if LOGITS_POSITIONS not in feed:
        values = values[:, logit_indices(request, length)]
    return values


def encode_images(builder: FeedBuilder, vision_runner: Any, inputs: MultimodalInputs) -> torch.Tensor | None:
    """Run the vision runner once per image of the batch; features concatenated in image order."""
    if inputs.pixel_values is None:
        return None
    features = [np.asarray(vision_runner.infer(feed)["image_features"], dtype=np.float32)
                for feed in builder.vision_feeds(inputs.pixel_values, inputs.image_grid_thw)]
    return torch.from_numpy(np.concatenate(features))


__all__ = [
    "CacheState",
    "DecoderStepper",
    "FeedBuilder",
    "HostTables",
    "Logits",
    "StepOutput",
    "encode_images",
    "logit_indices",
    "pad_mask",
    "runner_binds_in_place",
    "runner_inputs",
    "runner_kv_cache",
]
