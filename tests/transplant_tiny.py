"""Tiny synthetic models for the transplant / model I/O / eval tests: two byte-level BPE tokenizers trained
on different generated text (so they share some tokens and differ in others), Llama models of a few
thousand parameters on them (tied or untied, single file or sharded, bf16 or fp32), and a tiny BERT
sentence-embedding folder to stand in for MiniLM."""
from __future__ import annotations

import hashlib
import random
from pathlib import Path

WORDS_A = ["the", "cat", "sat", "on", "mat", "and", "dog", "ran", "to", "house", "big", "red", "12", "7", "one"]
WORDS_B = ["the", "cat", "ran", "far", "into", "forest", "with", "green", "trees", "and", "3141", "59", "one"]


def corpus(words: list[str], seed: int, n: int = 3000) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + "." for _ in range(n // 10)]


def train_tokenizer(words: list[str], seed: int, vocab_size: int, specials: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(words, seed), trainer)
    return tok


def save_tokenizer(tok, folder: Path, bos: str | None, eos: str, pad: str | None = None) -> None:
    from transformers import PreTrainedTokenizerFast

    kw = {"eos_token": eos}
    if bos:
        kw["bos_token"] = bos
    if pad:
        kw["pad_token"] = pad
    PreTrainedTokenizerFast(tokenizer_object=tok, **kw).save_pretrained(str(folder))


def make_model(folder: Path, tok, *, tied: bool = True, sharded: bool = False, dtype: str = "float32",
               hidden: int = 32, seed: int = 0, bos: str | None = "<s>", eos: str = "</s>",
               pad: str | None = None) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    vocab = tok.get_vocab_size()
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=tied, bos_token_id=tok.token_to_id(bos) if bos else None,
                      eos_token_id=tok.token_to_id(eos), pad_token_id=tok.token_to_id(pad) if pad else None)
    model = LlamaForCausalLM(cfg).to(getattr(torch, dtype))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), max_shard_size="40KB" if sharded else "10GB")
    save_tokenizer(tok, folder, bos, eos, pad)
    return folder


def base_and_target(tmp: Path, **kw) -> tuple[Path, Path, Path]:
    """(base model folder, target tokenizer folder, donor model folder on the target tokenizer)."""
    base_tok = train_tokenizer(WORDS_A, 0, 330, ["<unk>", "<s>", "</s>"])
    tgt_tok = train_tokenizer(WORDS_B, 1, 340, ["<|endoftext|>"])
    base = make_model(tmp / "base", base_tok, **kw)
    target = tmp / "target"
    save_tokenizer(tgt_tok, target, None, "<|endoftext|>")
    donor = make_model(tmp / "donor", tgt_tok, hidden=16, seed=1, bos=None, eos="<|endoftext|>")
    return base, target, donor


def make_aux(folder: Path) -> Path:
    """A tiny BERT 'sentence embedder' (random weights) with a WordPiece-free byte-level tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(2)
    tok = train_tokenizer(WORDS_A + WORDS_B, 3, 300, ["[PAD]", "[UNK]"])
    cfg = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(str(folder))
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(str(folder))
    return folder


def folder_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}
