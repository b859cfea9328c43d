"""`tokbench vocab inspect|align`: inspect a vocabulary or align two of them."""
from __future__ import annotations

import json
import time

import click


@click.group()
def vocab() -> None:
    """Inspect a vocabulary or align two of them."""


def _print_json(data: dict) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


@vocab.command("inspect")
@click.argument("tokenizer")
@click.option("--pattern", default=None, help="Split pattern for tiktoken rank files (name or regex).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def inspect_cmd(tokenizer: str, pattern: str | None, as_json: bool) -> None:
    """Size, kinds, word-start style, number policy and byte coverage of TOKENIZER
    (a file, a model folder or an asset name)."""
    from tokbench.vocab import inspect_report, load_vocabulary

    report = inspect_report(load_vocabulary(tokenizer, pattern=pattern))
    if as_json:
        _print_json(report)
        return
    click.echo(f"{report['source']}  ({report['format']}, {report['family']}, {report['style']})")
    click.echo(f"  size            {report['size']:,}")
    click.echo("  kinds           " + ", ".join(f"{k} {v:,}" for k, v in report["kinds"].items() if v))
    ws = report["word_start"]
    click.echo(f"  word starts     {ws['tokens']:,} ({ws['fraction_of_normal']:.1%} of normal tokens)")
    n = report["numbers"]
    click.echo(f"  numbers         {n['policy']} (longest digit token {n['max_digits']}, "
               f"{n['digit_tokens']:,} digit tokens)")
    b = report["bytes"]
    click.echo(f"  bytes           {b['single_byte_tokens']}/256 single-byte tokens"
               f"{', byte fallback' if b['byte_fallback'] else ''}; mean {b['mean_token_bytes']} "
               f"bytes/token, longest {b['max_token_bytes']}")
    roles = ", ".join(f"{r}={v['token']!s}({v['id']})" for r, v in report["specials"].items())
    click.echo(f"  specials        {report['special_tokens']} tokens; roles: {roles or 'none'}")


@vocab.command("align")
@click.argument("old")
@click.argument("new")
@click.option("--examples", default=8, show_default=True, type=click.IntRange(min=0), help="Examples per category.")
@click.option("--threads", default=0, type=click.IntRange(min=0), help="Threads for decomposition (0 = all cores).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def align_cmd(old: str, new: str, examples: int, threads: int, as_json: bool) -> None:
    """Align vocabulary NEW against OLD: shared tokens, new-only tokens and their decomposition
    into OLD tokens, special tokens by role, number splitting of both sides."""
    from tokbench.vocab import align, align_report, load_vocabulary

    t0 = time.perf_counter()
    old_v = load_vocabulary(old)
    new_v = load_vocabulary(new)
    t1 = time.perf_counter()
    report = align_report(align(old_v, new_v, num_threads=threads), examples=examples)
    report["seconds"] = {"load": round(t1 - t0, 3), **report["seconds"],
                         "total": round(time.perf_counter() - t0, 3)}
    if as_json:
        _print_json(report)
        return
    c = report["counts"]
    click.echo(f"old {report['old']['source']} ({report['old']['size']:,}, {report['old']['style']})")
    click.echo(f"new {report['new']['source']} ({report['new']['size']:,}, {report['new']['style']})")
    click.echo(f"  shared {c['shared']:,}   new only {c['new_only']:,}   old only {c['old_only']:,}   "
               f"new specials {c['new_specials']} ({c['roles_matched']} roles and "
               f"{c['specials_matched']} others matched, {c['specials_unmatched']} unmatched)")
    for role, r in report["roles"].items():
        click.echo(f"  {role:<4} {r['new_token']} -> {r['old_token']}")
    nums = report["numbers"]
    flag = "DIFFER" if nums["differ"] else "same"
    click.echo(f"  numbers: old {nums['old']['policy']}, new {nums['new']['policy']} ({flag}); "
               f"{c['new_numeric']:,} new numeric tokens")
    d = report["decomposition"]
    click.echo(f"  decomposition of new tokens: mean {d['mean_pieces']} old pieces, max "
               f"{d['max_pieces']}, {d['with_unk']} with unk")
    for e in report["examples"]["new_only"]:
        click.echo(f"    {e['token']!r:>24} -> {e['old_pieces']}")
    click.echo(f"  {report['seconds']['total']:.2f} s")
