"""Small real tokenizers trained inside the tests (HF `tokenizers` trainers on generated text)."""
from __future__ import annotations

import random
from pathlib import Path

SYLLABLES = ["ka", "to", "ri", "mu", "sen", "lo", "var", "ex", "qui", "zu", "ä", "ø", "日", "本",
             "δα", "ще", "12", "7", "305", "-", ",", ".", "'s", "?"]


def generated_text(seed: int = 0, words: int = 20000) -> list[str]:
    rng = random.Random(seed)
    lines, line = [], []
    for _ in range(words):
        line.append("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))))
        if rng.random() < 0.08:
            lines.append(" ".join(line))
            line = []
    lines.append(" ".join(line))
    return lines


def train_bytelevel_bpe(folder: Path, vocab_size: int = 600, seed: int = 0) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(generated_text(seed), trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


def train_metaspace_bpe(folder: Path, vocab_size: int = 500, seed: int = 1) -> Path:
    """Llama-style BPE: metaspace, character units, byte fallback."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size + 259, special_tokens=specials)
    tok.train_from_iterator(generated_text(seed), trainer)
    data = tok.to_str()
    folder.mkdir(parents=True, exist_ok=True)
    # byte-fallback pieces are ordinary vocabulary entries in Llama-style files, not added tokens
    import json

    j = json.loads(data)
    j["added_tokens"] = [t for t in j["added_tokens"] if not t["content"].startswith("<0x")]
    (folder / "tokenizer.json").write_text(json.dumps(j, ensure_ascii=False), encoding="utf-8")
    return folder / "tokenizer.json"


def train_wordpiece(folder: Path, vocab_size: int = 500, seed: int = 2) -> Path:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size,
                                        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    tok.train_from_iterator(generated_text(seed), trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


def train_unigram(folder: Path, vocab_size: int = 400, seed: int = 3) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>")
    tok.train_from_iterator(generated_text(seed), trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


TRAINERS = {"bytelevel": train_bytelevel_bpe, "metaspace": train_metaspace_bpe,
            "wordpiece": train_wordpiece, "unigram": train_unigram}
