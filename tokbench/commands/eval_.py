"""`tokbench eval`: bits per byte of a causal LM on a text (tokenizer-independent)."""
from __future__ import annotations

import json

import click


@click.command("eval")
@click.argument("model")
@click.option("--text", required=True, help="Text file or corpus asset name.")
@click.option("--max-chars", type=int, default=None, help="Use the first N characters.")
@click.option("--chunk", type=int, default=512, show_default=True, help="Tokens per window.")
@click.option("--batch", type=int, default=4, show_default=True, help="Windows per forward pass.")
@click.option("--device", default=None, help="torch device (default: cuda when present, else cpu).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def eval_(model, text, max_chars, chunk, batch, device, as_json) -> None:
    """Bits per byte of MODEL (folder or asset) on TEXT, in windows of --chunk tokens."""
    from tokbench.eval import bits_per_byte, load_eval_text

    body, label = load_eval_text(text, max_chars)
    r = bits_per_byte(model, body, chunk=chunk, batch=batch, device=device)
    r["text"] = label
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    click.echo(f"{r['model']}: {r['bits_per_byte']:.4f} bits/byte on {label} ({r['bytes_covered']:,} of "
               f"{r['bytes_total']:,} bytes covered, {r['predicted_tokens']:,} tokens predicted, "
               f"{r['bytes_per_token']:.2f} bytes/token, {r['seconds']} s on {r['device']})")
