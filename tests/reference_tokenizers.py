"""The original libraries of the shared tokenizer families, wrapped to one interface for tests:
`encode(texts) -> list[list[int]]` (no special tokens added) and `decode(ids) -> str` (specials
skipped) — the library's own behaviour, which tokbench must reproduce."""
from __future__ import annotations

from pathlib import Path

# asset name -> which library is the reference
FAMILIES = {
    "gpt2": "tokenizers",
    "qwen3": "tokenizers",
    "smollm2": "tokenizers",
    "xlm-r": "tokenizers",
    "bert": "tokenizers",
    "llama3-hf": "tokenizers",
    "gpt2-tiktoken": "tiktoken",
    "whisper": "tiktoken",
    "llama3": "tiktoken",
    "llama2": "sentencepiece",
    "mistral-v1": "sentencepiece",
    "mistral-v3": "sentencepiece",
}


class Reference:
    def __init__(self, name: str, path: Path, vocab):
        self.name, self.library = name, FAMILIES[name]
        path = Path(path)
        if self.library == "tokenizers":
            from tokenizers import Tokenizer, decoders

            file = path / "tokenizer.json" if path.is_dir() else path
            self.tok = Tokenizer.from_file(str(file))
            self.tok.no_padding()
            self.tok.no_truncation()
            if vocab.style.value == "wordpiece":
                # documented exception: BERT's decoder "cleans up" spaces before punctuation;
                # tokbench joins pieces exactly, so compare with the cleanup switched off
                self.tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
        elif self.library == "tiktoken":
            import tiktoken
            from tiktoken.load import load_tiktoken_bpe

            self.tok = tiktoken.Encoding(name, pat_str=vocab.pattern,
                                         mergeable_ranks=load_tiktoken_bpe(str(path)),
                                         special_tokens={})
        else:
            import sentencepiece as spm

            self.tok = spm.SentencePieceProcessor(model_file=str(path))

    def encode(self, texts: list[str]) -> list[list[int]]:
        if self.library == "tokenizers":
            return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]
        if self.library == "tiktoken":
            return self.tok.encode_ordinary_batch(texts)
        return self.tok.encode(texts)

    def decode(self, ids: list[int]) -> str:
        if self.library == "tokenizers":
            return self.tok.decode(ids, skip_special_tokens=True)
        if self.library == "tiktoken":
            return self.tok.decode_bytes(ids).decode("utf-8", errors="replace")
        return self.tok.decode(ids)
