#!/usr/bin/env python3
"""transformers' own greedy-token agreement across dtypes (issue 12): fp32 vs bf16 and fp16 (SDPA), bf16 eager vs SDPA.

The yardstick for small_dtypes.py's export-vs-transformers agreement: how often transformers itself
gives the same 32 greedy tokens in another dtype or attention implementation, on the same prompts.

    python benchmarks/transformers_dtype_tokens.py CHECKPOINT EXPORT_DIR [N_PROMPTS] [OUT_JSON]

(EXPORT_DIR: any export of CHECKPOINT, for its processor files and pixel limit.)
"""
import json, sys, time, gc
from pathlib import Path
import torch
from transformers import Glm4vForConditionalGeneration
from trt_pipeline.compare.data import load_heldout
from trt_pipeline.compare.tokens import reference_tokens
from trt_pipeline.accuracy.tokens import TokenAgreement
from trt_pipeline.models.glm4v.processing import Glm4vProcessing
from trt_pipeline.artifacts import read_export_manifest
ck, out = Path(sys.argv[1]), Path(sys.argv[2])
n = int(sys.argv[3]) if len(sys.argv) > 3 else 14
result = Path(sys.argv[4]) if len(sys.argv) > 4 else Path("transformers_dtype_tokens.json")
m = read_export_manifest(out)
processing = Glm4vProcessing(m.layout.hf_dir, max_pixels=m.max_pixels)
heldout = load_heldout(processing, None, n)
rows = {}
for name, dtype, attn in (("fp32", torch.float32, "sdpa"), ("bf16", torch.bfloat16, "sdpa"), ("bf16-eager", torch.bfloat16, "eager"), ("fp16", torch.float16, "sdpa")):
    t = time.time()
    model = Glm4vForConditionalGeneration.from_pretrained(str(ck), dtype=dtype, attn_implementation=attn).eval()
    print(name, "attn", model.config._attn_implementation, flush=True)
    with torch.no_grad():
        rows[name] = reference_tokens(model, processing, heldout, 32)
    del model; gc.collect(); print(name, round(time.time() - t), "s", flush=True)
res = {}
for ref, cand in (("fp32", "bf16"), ("fp32", "fp16"), ("bf16", "bf16-eager")):
    a = TokenAgreement(cand, cand, 0.0)
    for item, r, c in zip(heldout, rows[ref], rows[cand]):
        a.add(item.id, r, c, None)
    res[f"{cand} vs {ref}"] = {"exact": a.exact_matches, "prompts": a.prompts, "token_agreement": a.token_agreement,
                               "divergences": a.divergences}
print(json.dumps(res, indent=1))
result.write_text(json.dumps({"rows": rows, "agreement": res}, indent=1))
