"""Tiny Llama models on real tokenizers for the surgery tests: the real tokenizer files of a registered model
(SmolLM2-135M, tbd-gpt2-d128) with a random model of hidden size 16, so every op runs on the real
vocabulary, merges, specials and chat template in a second."""
from __future__ import annotations

import shutil
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json",
                   "special_tokens_map.json")


def tiny_on(src: Path, dest: Path, *, tied: bool = True, hidden: int = 16, sharded: bool = False,
            dtype: str = "bfloat16", seed: int = 0) -> Path:
    import json

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg_src = json.loads((src / "config.json").read_text())
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=cfg_src["vocab_size"], hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                      tie_word_embeddings=tied, bos_token_id=cfg_src.get("bos_token_id"),
                      eos_token_id=cfg_src.get("eos_token_id"), pad_token_id=cfg_src.get("pad_token_id"))
    model = LlamaForCausalLM(cfg).to(getattr(torch, dtype))
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(dest), max_shard_size="600KB" if sharded else "10GB")
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)
    return dest
