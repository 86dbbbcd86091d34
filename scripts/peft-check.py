#!/usr/bin/env python3
"""Cross-check meft's exports with transformers, PEFT and gguf (once, by hand).

    scripts/peft-check.py BASE_DIR PEFT_DIR MERGED_DIR LOGITS_JSON [GGUF_FILE]

BASE_DIR, PEFT_DIR and MERGED_DIR are `meft export --format base|peft|merged`
of one LoRA run; LOGITS_JSON is `meft generate --run RUN --logits-out` on a
prompt (its token ids and the next-token logits with the adapter on).
Loads the base with transformers, the adapter with PeftModel.from_pretrained,
the merged directory alone, and prints each one's largest logit difference
from meft's; with GGUF_FILE, prints what the gguf package reads from it.
Exits 1 when PEFT's or the merged model's logits are more than 1e-3 away.
"""
import json
import sys

import torch
import transformers
import peft
from transformers import AutoModelForCausalLM
from peft import PeftModel


def last_logits(model, ids):
    with torch.no_grad():
        out = model(torch.tensor([ids]))
    return out.logits[0, -1].float()


def main():
    base_dir, peft_dir, merged_dir, logits_json = sys.argv[1:5]
    gguf_file = sys.argv[5] if len(sys.argv) > 5 else None
    want = json.load(open(logits_json))
    ids, meft_logits = want["ids"], torch.tensor(want["logits"])
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    print(f"prompt: {len(ids)} tokens; meft's logits: {len(meft_logits)}, max |logit| {meft_logits.abs().max():.4f}")
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    base.eval()
    plain = last_logits(base, ids)
    tuned = PeftModel.from_pretrained(base, peft_dir)
    tuned.eval()
    with_peft = last_logits(tuned, ids)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    merged.eval()
    with_merged = last_logits(merged, ids)
    worst = 0.0
    for name, got in [("base + PEFT adapter", with_peft), ("merged", with_merged), ("base alone", plain)]:
        d = (got - meft_logits).abs().max().item()
        same = int(got.argmax()) == int(meft_logits.argmax())
        print(f"{name:22s} max |logit - meft's| {d:.3e}   same next token: {same}")
        if name != "base alone":
            worst = max(worst, d)
    if gguf_file:
        from gguf import GGUFReader
        r = GGUFReader(gguf_file)
        f = r.fields
        print("gguf:", f["general.architecture"].contents(),
              "tokenizer", f["tokenizer.ggml.model"].contents(),
              f"{len(f['tokenizer.ggml.tokens'].data)} tokens,",
              "chat template" if "tokenizer.chat_template" in f else "no chat template",
              f"{len(r.tensors)} tensors, {r.tensors[0].name} in {r.tensors[0].tensor_type.name}")
    sys.exit(0 if worst <= 1e-3 else 1)


main()
