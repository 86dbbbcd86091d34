#!/usr/bin/env python3
"""Write the chat-template goldens of tests/chat_templates.rs with Hugging
Face's own `apply_chat_template` (transformers, no model weights needed).

Usage: python3 scripts/golden-chat.py SMOLLM2.gguf
The SmolLM2 template is read from the GGUF file's `tokenizer.chat_template`
(with the `gguf` package); the Gemma, Llama 3, ChatML and Mistral templates
are meft's built-ins, read from core/src/data/chat.rs.
"""
import json, pathlib, re, sys

from gguf import GGUFReader
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

root = pathlib.Path(__file__).resolve().parent.parent
out = root / "tests" / "golden"
out.mkdir(parents=True, exist_ok=True)

conversation = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "Who built the Veltrano lighthouse?"},
    {"role": "assistant", "content": "Odile Marsk built it."},
    {"role": "user", "content": "In which year?"},
    {"role": "assistant", "content": "In 1874."},
]

templates = {}
smollm2 = GGUFReader(sys.argv[1]).fields["tokenizer.chat_template"].contents()
templates["smollm2"] = (smollm2, "<|im_start|>", "<|im_end|>")
src = (root / "core" / "src" / "data" / "chat.rs").read_text()
specials = {"chatml": ("", ""), "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
            "gemma": ("<bos>", "<eos>"), "mistral": ("<s>", "</s>")}
for name, (bos, eos) in specials.items():
    m = re.search(r'\(\s*"' + name + r'",\s*"((?:[^"\\]|\\.)*)",\s*\)', src)
    # The Rust string's escapes (\n) are the template's characters.
    templates[name] = (json.loads('"' + m.group(1) + '"'), bos, eos)

for name, (template, bos, eos) in templates.items():
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()), bos_token=bos or None,
                                  eos_token=eos or None)
    tok.chat_template = template
    full = tok.apply_chat_template(conversation, tokenize=False)
    prompt = tok.apply_chat_template(conversation[:-1], tokenize=False, add_generation_prompt=True)
    (out / f"chat-{name}.txt").write_text(full)
    (out / f"chat-{name}-prompt.txt").write_text(prompt)
    print(name, len(full), len(prompt))
