"""`tokbench export`: deployment formats of a model folder written by transplant or surgery."""
from __future__ import annotations

import json

import click


@click.group("export")
def export() -> None:
    """Convert a Hugging Face model folder (transplant / surgery output) for deployment."""


@export.command("gguf")
@click.argument("folder")
@click.option("-o", "--out", required=True, help="Output file, NAME.gguf.")
@click.option("--pre-tokenizer", default=None,
              help="llama.cpp pre-tokenizer name to write (default: looked up from tokenizer.json; needed for "
                   "pre-tokenizers llama.cpp does not know by name).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def gguf(folder, out, pre_tokenizer, overwrite, as_json) -> None:
    """Write FOLDER (llama / mistral / qwen2 / qwen3 causal LM; byte-level or SentencePiece-style BPE, Unigram or
    WordPiece tokenizer) as one GGUF file."""
    from tokbench.export import export_gguf

    r = export_gguf(folder, out, pre_tokenizer=pre_tokenizer, overwrite=overwrite)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    t = r["token_types"]
    ids = ", ".join(f"{k} {v}" for k, v in r["special_ids"].items() if v is not None)
    click.echo(f"{r['out']}: {r['architecture']} ({r['file_type']}), {r['tensors']} tensors, {r['vocab']:,} tokens "
               f"(control {t['control']}, unused {t['unused']}, user-defined {t['user_defined']}, byte {t['byte']}), "
               f"tokenizer {r['tokenizer_model']}, {r['merges']:,} merges, pre-tokenizer {r['tokenizer_pre']}, ids: {ids}, chat template: {'yes' if r['chat_template'] else 'no'}, "
               f"{r['bytes'] / 1e6:.1f} MB")
    for w in r["warnings"]:
        click.echo(f"warning: {w}")
