"""Matplotlib figures of a metrics run (each saved as PNG and SVG)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

DOMAINS = (("english", ("wikitext", "shakespeare", "tinystories", "gutenberg", "english")),
           ("math", ("gsm8k", "math")),
           ("code", ("code", "python", "rust", "cpp")),
           ("multilingual", ("udhr", "tatoeba", "bible", "flores", "multilingual")))


def domain_of(corpus: str) -> str:
    low = corpus.lower()
    for name, keys in DOMAINS:
        if any(k in low for k in keys):
            return name
    return "other"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "svg.fonttype": "none", "figure.dpi": 110})
    return plt


def _save(fig, out: Path, stem: str) -> list[str]:
    names = []
    for ext in ("png", "svg"):
        fig.savefig(out / f"{stem}.{ext}", bbox_inches="tight", metadata={"Date": None} if ext == "svg" else None)
        names.append(f"{stem}.{ext}")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return names


def domain_table(data: dict) -> dict:
    """tokenizer -> domain -> {bytes_per_token, zstd/gzip/lzma bits_per_byte} (byte-weighted over corpora)."""
    acc: dict = {}
    for r in data["results"]:
        d = acc.setdefault(r["tokenizer"], {}).setdefault(domain_of(r["corpus"]),
                                                          {"bytes": 0, "tokens": 0, "bits": {}})
        d["bytes"] += r["bytes"]
        d["tokens"] += r["tokens"]
        for m in data["settings"]["compressors"]:
            v = r.get(f"{m}_bits_per_byte")
            if v is not None:
                d["bits"][m] = d["bits"].get(m, 0.0) + v * r["bytes"]
    out = {}
    for tok, doms in acc.items():
        out[tok] = {}
        for dom, d in doms.items():
            row = {"bytes_per_token": d["bytes"] / d["tokens"] if d["tokens"] else None}
            for m, bits in d["bits"].items():
                row[f"{m}_bits_per_byte"] = bits / d["bytes"]
            out[tok][dom] = row
    return out


def compression_bars(data: dict, out: Path) -> list[str]:
    plt = _plt()
    table = domain_table(data)
    toks = [t["name"] for t in data["tokenizers"]]
    doms = [d for d, _ in DOMAINS if any(d in table[t] for t in toks)] + \
        (["other"] if any("other" in table[t] for t in toks) else [])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / max(1, len(toks))
    x = np.arange(len(doms))
    cmap = plt.get_cmap("tab10" if len(toks) <= 10 else "tab20")
    for i, t in enumerate(toks):
        bpt = [table[t].get(d, {}).get("bytes_per_token") or np.nan for d in doms]
        zs = [table[t].get(d, {}).get("zstd_bits_per_byte") or np.nan for d in doms]
        axes[0].bar(x + i * width - 0.4 + width / 2, bpt, width, label=t, color=cmap(i))
        axes[1].bar(x + i * width - 0.4 + width / 2, zs, width, label=t, color=cmap(i))
    ref = data.get("text_compression", {})
    for j, d in enumerate(doms):
        cs = [c for c in ref if domain_of(c) == d]
        if cs:
            nbytes = {c["name"]: c["bytes"] for c in data["corpora"]}
            tot = sum(nbytes.get(c, 0) for c in cs)
            if tot and "zstd_bits_per_byte" in ref[cs[0]]:
                v = sum(ref[c]["zstd_bits_per_byte"] * nbytes.get(c, 0) for c in cs) / tot
                axes[1].hlines(v, j - 0.45, j + 0.45, colors="black", linestyles="--", linewidth=1,
                               label="raw UTF-8 text, zstd" if j == 0 else None)
    axes[0].set_title("bytes per token (higher = more compression)")
    axes[1].set_title("zstd-compressed token stream, bits per text byte (lower = better)")
    for ax in axes:
        ax.set_xticks(x, doms)
        ax.grid(axis="y", alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _save(fig, out, "compression")


def hk_curves(data: dict, out: Path) -> list[str]:
    plt = _plt()
    corpora = [c["name"] for c in data["corpora"]]
    toks = [t["name"] for t in data["tokenizers"]]
    n = len(corpora)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.6 * rows), squeeze=False, sharex=True)
    cmap = plt.get_cmap("tab10" if len(toks) <= 10 else "tab20")
    by = {(r["tokenizer"], r["corpus"]): r for r in data["results"]}
    for idx, c in enumerate(corpora):
        ax = axes[idx // cols][idx % cols]
        for i, t in enumerate(toks):
            r = by.get((t, c))
            if not r:
                continue
            ks = [g["order"] for g in r["ngrams"]]
            pl = [g["conditional_entropy"] if g["conditional_entropy"] is not None else np.nan for g in r["ngrams"]]
            ho = [g.get("heldout_bits_per_token") or np.nan for g in r["ngrams"]]
            ax.plot(ks, pl, "-o", color=cmap(i), markersize=2.5, linewidth=1, label=t)
            ax.plot(ks, ho, ":", color=cmap(i), linewidth=1)
        ax.set_title(f"{c}", fontsize=8)
        ax.grid(alpha=0.3)
        ax.set_xticks(range(1, data["settings"]["max_order"] + 1))
    for idx in range(n, rows * cols):
        axes[idx // cols][idx % cols].axis("off")
    fig.supxlabel("order k")
    fig.supylabel("bits per token")
    handles, labels = axes[0][0].get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles += [Line2D([], [], color="gray", linestyle="-"), Line2D([], [], color="gray", linestyle=":")]
    labels += ["plug-in H(X_k | X_<k)", "held-out Witten-Bell k-gram"]
    fig.legend(handles, labels, loc="upper center", ncol=min(6, len(labels)), fontsize=7,
               bbox_to_anchor=(0.5, 1.04))
    fig.tight_layout()
    return _save(fig, out, "hk_curves")


def parity_chart(data: dict, out: Path, dataset: str) -> list[str]:
    plt = _plt()
    rows = data["parity"].get(dataset) or []
    toks = [p["tokenizer"] for p in rows]
    langs = sorted({lang for p in rows for lang, v in p["languages"].items() if v.get("premium_sum") is not None})
    if not langs:
        return []
    mat = np.full((len(toks), len(langs)), np.nan)
    for i, p in enumerate(rows):
        for j, lang in enumerate(langs):
            v = p["languages"].get(lang, {}).get("premium_sum")
            if v is not None:
                mat[i, j] = v
    order = np.argsort(np.nanmean(mat, axis=0))
    cmap = plt.get_cmap("tab10" if len(toks) <= 10 else "tab20")
    if len(langs) <= 150:
        fig, ax = plt.subplots(figsize=(8, 0.16 * len(langs) + 1.2))
        y = np.arange(len(langs))
        for i, t in enumerate(toks):
            ax.scatter(mat[i, order], y, s=9, color=cmap(i), label=t, alpha=0.85)
        ax.set_yticks(y, [langs[j] for j in order], fontsize=6)
        ax.set_ylim(-1, len(langs))
        ax.set_xscale("log")
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xlabel("premium vs English (tokens / English tokens, ratio of sums; log scale)")
        ax.grid(axis="x", alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower right")
        ax.set_title(f"{dataset}: {len(langs)} languages sorted by mean premium over tokenizers")
    else:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        for i, t in enumerate(toks):
            v = np.sort(mat[i][~np.isnan(mat[i])])
            ax.plot(np.arange(v.size), v, color=cmap(i), label=t, linewidth=1.2)
        ax.set_yscale("log")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xlabel("languages, sorted by premium (per tokenizer)")
        ax.set_ylabel("premium vs English (ratio of sums, log)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        ax.set_title(f"{dataset}: {len(langs)} languages")
    return _save(fig, out, f"parity_{dataset}")
