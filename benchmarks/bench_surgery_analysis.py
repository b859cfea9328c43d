"""Figures for the analysis half of `tokbench surgery` (issue 11, acceptance items 6 and 7).

    python benchmarks/bench_surgery_analysis.py [--parts undertrained,planted,verify,union,mergekit,stress]
        [--work /tmp/tb-surgery-analysis] [--new-tokens 2000] [--lines 20] [--verify 200] [--verify-planted 200]
        [--mergekit /tmp/mkvenv/bin/mergekit-yaml] [--threads 1] [--results results.json]

undertrained: tbd-gpt2-d128's training text is known (shared/data models README, train_donors.py: WikiText-2
    valid, first 90% of Tiny Shakespeare, TheAlgorithms python/rust/cpp, GSM8K train, Tatoeba, UDHR); its
    tokens are counted with tokbench.bpe on exactly that text (11,348,334 tokens, donors_report.json's
    train_tokens) and the AUROC of each indicator against "never seen in training" is reported.
planted: SmolLM2-135M with 100 rows set to zero and 100 to the mean row: how many are reported.
verify: prompting verification of the top --verify candidates of tbd-gpt2-d128 and of the planted
    SmolLM2 rows (labels, seconds).
union: SmolLM2 ∪ (SmolLM2 + --new-tokens tokens learned on GSM8K train by continued BPE from SmolLM2's
    merges, `continue_bpe` below, a Python stand-in for tokbench's trainer, which cannot continue yet;
    rows of the new tokens = mean of their SmolLM2 constituents): reachability of the union, and for
    each member the re-indexed checkpoint's logits against the original's on --lines lines (max |diff|).
mergekit: mergekit-yaml with `tokenizer_source: union` on the same pair; how many of its tokens
    ordinary text can never produce.
stress: union of SmolLM2 with GPT-2 (different merge orders and pre-tokenizers; check disabled).
"""
from __future__ import annotations

import argparse
import glob
import heapq
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tokbench.assets import resolve  # noqa: E402
from tokbench.bpe import BPE  # noqa: E402
from tokbench.surgery.union import read_bpe  # noqa: E402


def _load_avg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


# --- inputs ---------------------------------------------------------------------------------------
def tbd_training_texts() -> list[str]:
    """The documents tbd-gpt2-d128 was trained on, in train_donors.py's order."""
    texts = [open(resolve("wikitext2-valid"), encoding="utf-8").read()]
    sh = open(resolve("tinyshakespeare"), encoding="utf-8").read()
    texts.append(sh[: int(len(sh) * 0.9)])
    for lang in ("python", "rust", "cpp"):
        with open(resolve(f"code-{lang}"), encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f]
    with open(resolve("gsm8k-train"), encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            texts.append(r["question"] + "\n" + r["answer"])
    for p in sorted(glob.glob(str(resolve("tatoeba")) + "/tatoeba.*")):
        texts.append(open(p, encoding="utf-8").read())
    with open(resolve("udhr"), encoding="utf-8") as f:
        for line in f:
            secs = json.loads(line).get("sections") or {}
            texts.append("\n".join(p for v in secs.values() for p in (v if isinstance(v, list) else [v])
                                   if isinstance(p, str)))
    return texts


def training_counts(model_dir: Path, texts: list[str]) -> np.ndarray:
    """Occurrences of every id in the training stream (documents + one eos each, as train_donors.py)."""
    enc = BPE.from_file(model_dir / "tokenizer.json")
    ids = enc.encode_batch(texts, allowed_special="all")
    n = enc.n_vocab
    counts = np.bincount(np.concatenate([np.asarray(x, dtype=np.int64) for x in ids]), minlength=n)
    eos = enc.special_tokens.get("<|endoftext|>")
    if eos is not None:
        counts[eos] += len(texts)
    return counts


def gsm8k_texts(name: str = "gsm8k-train") -> list[str]:
    with open(resolve(name), encoding="utf-8") as f:
        return [(lambda r: r["question"] + "\n" + r["answer"])(json.loads(line)) for line in f]


# --- continued BPE (stand-in) ---------------------------------------------------------------------
def continue_bpe(base_json: Path, texts: list[str], n_new: int, min_count: int = 2) -> tuple[dict, dict[int, list[int]]]:
    """Learn n_new merges on texts on top of a byte-level BPE's own merges (pre-tokens are first encoded
    with the base, then the most frequent adjacent pair is merged, repeatedly; pairs whose result is
    already a base token are skipped). Returns (tokenizer.json dict, new id -> base constituent ids)."""
    tok = read_bpe(base_json)
    bpe = BPE.from_file(base_json)
    words_c: Counter = Counter()
    for t in texts:
        words_c.update(bpe.pre_tokenize(t))
    strings = {i: s for s, i in tok.vocab.items()}
    vocab = dict(tok.vocab)
    words, freqs = [], []
    for w, c in words_c.items():
        ids = bpe.encode_ordinary(w)
        if len(ids) > 1:
            words.append(list(ids))
            freqs.append(c)
    pairs: Counter = Counter()
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for k, w in enumerate(words):
        for p in zip(w, w[1:]):
            pairs[p] += freqs[k]
            where[p].add(k)
    heap = [(-c, p) for p, c in pairs.items()]
    heapq.heapify(heap)
    parts: dict[int, list[int]] = {}
    next_id = max(max(vocab.values()), max((int(a["id"]) for a in tok.added), default=-1)) + 1
    new_merges: list[tuple[str, str]] = []
    while len(new_merges) < n_new and heap:
        c, p = heapq.heappop(heap)
        if -c != pairs.get(p, 0) or -c < min_count:
            if -c < min_count and -c == pairs.get(p, 0):
                break
            continue
        s = strings[p[0]] + strings[p[1]]
        if s in vocab:
            pairs[p] = 0  # an existing token: never merged here
            continue
        new = next_id
        next_id += 1
        vocab[s] = new
        strings[new] = s
        parts[new] = parts.get(p[0], [p[0]]) + parts.get(p[1], [p[1]])
        new_merges.append((strings[p[0]], strings[p[1]]))
        changed: set[tuple[int, int]] = set()
        for k in list(where[p]):
            w, f = words[k], freqs[k]
            for q in zip(w, w[1:]):
                pairs[q] -= f
                changed.add(q)
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == p:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            words[k] = out
            for q in zip(out, out[1:]):
                pairs[q] += f
                where[q].add(k)
                changed.add(q)
        for q in changed:
            if pairs[q] > 0:
                heapq.heappush(heap, (-pairs[q], q))
    data = json.loads(json.dumps(tok.data))
    data["model"]["vocab"] = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
    fmt_str = isinstance((tok.data["model"].get("merges") or [[""]])[0], str)
    data["model"]["merges"] = [f"{a} {b}" if fmt_str else [a, b] for a, b in tok.merges + new_merges]
    # the added tokens keep their ids; new vocab ids come after them
    return data, parts


def make_member(base_dir: Path, dest: Path, tokenizer: dict, parts: dict[int, list[int]]) -> None:
    """Write an HF folder: the base with rows for the new tokens (mean of their base constituents)."""
    from tokbench.vocab.model_io import open_model_folder, write_model_folder

    folder = open_model_folder(base_dir)
    emb = folder.read_embedding()
    rows = np.concatenate([emb, np.stack([emb[parts[i]].mean(axis=0) for i in sorted(parts)])])
    assert sorted(parts) == list(range(emb.shape[0], rows.shape[0]))
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    head = None if folder.tied else np.concatenate([folder.read_head(), rows[emb.shape[0]:]])
    write_model_folder(folder, dest, rows, head, {}, progress=False)
    for name in ("tokenizer_config.json", "generation_config.json", "chat_template.jinja"):
        if (base_dir / name).is_file():
            shutil.copy(base_dir / name, dest / name)
    (dest / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")


def write_reindexed(member_dir: Path, dest: Path, union, rows: np.ndarray) -> None:
    """A re-indexed checkpoint: the member's weights with the union's rows and tokenizer."""
    from tokbench.vocab.model_io import open_model_folder, write_model_folder

    folder = open_model_folder(member_dir)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    write_model_folder(folder, dest, rows, None if folder.tied else rows, {}, progress=False)
    for name in ("tokenizer_config.json", "generation_config.json", "chat_template.jinja"):
        if (member_dir / name).is_file():
            shutil.copy(member_dir / name, dest / name)
    union.save(dest)


def logits_gap(orig_dir: Path, reidx_dir: Path, inverse: dict[int, int], lines: list[str]) -> float:
    """max |logit difference| over the member's ids, original vs re-indexed, on lines encoded by the member."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    tk = Tokenizer.from_file(str(orig_dir / "tokenizer.json"))
    a = AutoModelForCausalLM.from_pretrained(orig_dir, dtype=torch.float32).eval()
    b = AutoModelForCausalLM.from_pretrained(reidx_dir, dtype=torch.float32).eval()
    cols = torch.tensor([inverse[j] for j in range(len(inverse))])
    gap = 0.0
    with torch.no_grad():
        for line in lines:
            ids = tk.encode(line, add_special_tokens=False).ids
            la = a(torch.tensor([ids])).logits[0]
            lb = b(torch.tensor([[inverse[i] for i in ids]])).logits[0]
            gap = max(gap, float((la - lb[:, cols]).abs().max()))
    return gap


# --- parts ----------------------------------------------------------------------------------------
def part_undertrained(res: dict, args) -> None:
    from tokbench.surgery.undertrained import (INDICATORS, _centroid_references, auroc, degenerate_rows,
                                               detect_model, indicator_scores)
    from tokbench.vocab import load_vocabulary
    from tokbench.vocab.model_io import open_model_folder

    model = Path(resolve("tbd-gpt2-d128"))
    t0 = time.time()
    counts = training_counts(model, tbd_training_texts())
    t_count = time.time() - t0
    never = counts == 0
    t0 = time.time()
    r = detect_model(model)
    t_detect = time.time() - t0
    emb = open_model_folder(model).read_embedding()
    per = {ind: auroc(indicator_scores(ind, embedding=emb, references=r.references), never) for ind in INDICATORS}
    # rule (e), as if the model had no known-unused tokens
    centroid = _centroid_references(emb, load_vocabulary(model), degenerate_rows(emb))
    per_centroid = auroc(indicator_scores("eout_cos", embedding=emb, references=centroid), never)
    cand = np.asarray(r.candidates)
    res["undertrained"] = {
        "model": "tbd-gpt2-d128", "train_tokens": int(counts.sum()), "never_seen": int(never.sum()),
        "rows": int(len(counts)), "indicator": r.indicator, "reference_rule": r.reference_rule,
        "references": len(r.references), "auroc_default": per[r.indicator], "auroc": per,
        "auroc_centroid_references": per_centroid, "centroid_references": len(centroid),
        "candidates": len(r.candidates), "candidates_never_seen": int(never[cand].sum()),
        "count_seconds": round(t_count, 2), "detect_seconds": round(t_detect, 2), "load": _load_avg(),
    }


def _planted(seed: int = 0):
    from tokbench.vocab import load_vocabulary
    from tokbench.vocab.model_io import open_model_folder

    model = Path(resolve("smollm2-135m"))
    emb = open_model_folder(model).read_embedding()
    vocab = load_vocabulary(model)
    rng = np.random.default_rng(seed)
    ids = rng.choice(np.arange(len(vocab.specials) + 17, emb.shape[0]), 200, replace=False)
    planted = emb.copy()
    planted[ids[:100]] = 0.0
    planted[ids[100:]] = emb.mean(axis=0)
    return model, vocab, planted, [int(i) for i in ids]


def part_planted(res: dict, args) -> None:
    from tokbench.surgery.undertrained import detect

    model, vocab, planted, ids = _planted()
    t0 = time.time()
    r = detect(vocab, planted, tokenizer_json=model / "tokenizer.json")
    cands = set(r.candidates)
    res["planted"] = {
        "model": "smollm2-135m", "planted_zero": 100, "planted_mean": 100,
        "reported_zero": sum(i in cands for i in ids[:100]), "reported_mean": sum(i in cands for i in ids[100:]),
        "by_degenerate_rule": sum(i in r.degenerate for i in ids), "reference_rule": r.reference_rule,
        "candidates": len(r.candidates), "degenerate": len(r.degenerate),
        "other_degenerate": sorted((i, r.tokens[i], why) for i, why in r.degenerate.items() if i not in set(ids)),
        "seconds": round(time.time() - t0, 2), "load": _load_avg(),
    }


def part_verify(res: dict, args) -> None:
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    from tokbench.surgery.undertrained import detect, detect_model, verify

    torch.set_num_threads(args.threads)
    out = {}
    model = Path(resolve("tbd-gpt2-d128"))
    counts = training_counts(model, tbd_training_texts())
    r = detect_model(model)
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    tk = Tokenizer.from_file(str(model / "tokenizer.json"))
    t0 = time.time()
    v = verify(lm, lambda s: tk.encode(s, add_special_tokens=False).ids, r.candidates, max_candidates=args.verify)
    labels = Counter(x["label"] for x in v.values())
    secs = time.time() - t0
    frequent = [int(i) for i in np.argsort(-counts, kind="stable")[:50]]  # control: the most frequent tokens
    vf = verify(lm, lambda s: tk.encode(s, add_special_tokens=False).ids, frequent, max_candidates=50)
    out["tbd-gpt2-d128"] = {"tested": len(v), "labels": dict(labels),
                            "tested_never_seen": int(sum(counts[i] == 0 for i in v)),
                            "control_50_most_frequent": dict(Counter(x["label"] for x in vf.values())),
                            "seconds": round(secs, 1), "load": _load_avg()}
    smol, vocab, planted, ids = _planted()
    lm = AutoModelForCausalLM.from_pretrained(smol, dtype=torch.float32).eval()
    with torch.no_grad():
        lm.get_input_embeddings().weight.copy_(torch.from_numpy(planted))
    tk = Tokenizer.from_file(str(smol / "tokenizer.json"))
    rr = detect(vocab, planted, tokenizer_json=smol / "tokenizer.json")
    found = set(rr.candidates)
    half = max(1, args.verify_planted // 2)  # as many zero rows as mean rows
    order = [i for i in ids[:half] + ids[100:100 + half] if i in found]
    t0 = time.time()
    v = verify(lm, lambda s: tk.encode(s, add_special_tokens=False).ids, order, max_candidates=len(order))
    out["smollm2-planted"] = {"tested": len(v), "zero_rows": half, "mean_rows": half, "labels": dict(Counter(x["label"] for x in v.values())),
                              "max_prob_max": max(x["max_prob"] for x in v.values()),
                              "seconds": round(time.time() - t0, 1), "load": _load_avg()}
    res["verify"] = out


def _members(work: Path, n_new: int) -> tuple[Path, Path]:
    smol = Path(resolve("smollm2-135m"))
    dest = work / f"smollm2-gsm8k-{n_new}"
    if not (dest / "model.safetensors").is_file():
        t0 = time.time()
        tokenizer, parts = continue_bpe(smol / "tokenizer.json", gsm8k_texts(), n_new)
        print(f"continued BPE: {len(parts)} tokens in {time.time() - t0:.1f} s", flush=True)
        make_member(smol, dest, tokenizer, parts)
    return smol, dest


def _lines(n: int) -> list[str]:
    wt = [ln for ln in open(resolve("wikitext2-test"), encoding="utf-8").read().splitlines() if len(ln.strip()) > 40]
    gsm = gsm8k_texts("gsm8k-test")
    half = n // 2
    return [ln[:600] for ln in wt[:half]] + [g[:600] for g in gsm[: n - half]]


def part_union(res: dict, args) -> None:
    from tokbench.surgery.union import build_union, reachability, reindex_rows, row_plan
    from tokbench.vocab.model_io import open_model_folder

    work = Path(args.work)
    smol, gsm = _members(work, args.new_tokens)
    t0 = time.time()
    u = build_union({"smollm2": smol, "gsm8k": gsm}, "smollm2")
    t_union = time.time() - t0
    reach = reachability(u.tokenizer)
    plan = row_plan(u)
    rows = {"smollm2": open_model_folder(smol).read_embedding(), "gsm8k": open_model_folder(gsm).read_embedding()}
    lines = _lines(args.lines)
    gaps = {}
    for name, src in (("smollm2", smol), ("gsm8k", gsm)):
        dest = work / f"reindexed-{name}"
        write_reindexed(src, dest, u, reindex_rows(plan[name], rows))
        gaps[name] = logits_gap(src, dest, u.inverse(name), lines)
    base_reach = reachability(smol)
    res["union"] = {"members": {"smollm2": 49152, "gsm8k": 49152 + args.new_tokens}, "summary": u.summary(),
                    "reachability": reach.counts(), "base_reachability": base_reach.counts(),
                    "max_abs_logit_diff": gaps, "lines": len(lines), "union_seconds": round(t_union, 2),
                    "new_tokens_source": "continue_bpe (Python stand-in) on GSM8K train", "load": _load_avg()}


def part_mergekit(res: dict, args) -> None:
    from tokbench.surgery.union import reachability

    work = Path(args.work)
    smol, gsm = _members(work, args.new_tokens)
    exe = Path(args.mergekit)
    if not exe.is_file():
        res["mergekit"] = {"run": False, "why": f"{exe} not found"}
        return
    cfg = work / "mergekit-union.yml"
    cfg.write_text(
        f"merge_method: linear\nbase_model: {smol}\nmodels:\n"
        f"  - model: {smol}\n    parameters: {{weight: 0.5}}\n"
        f"  - model: {gsm}\n    parameters: {{weight: 0.5}}\n"
        "dtype: bfloat16\ntokenizer_source: union\n", encoding="utf-8")
    out = work / "mergekit-out"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    proc = subprocess.run(["nice", str(exe), str(cfg), str(out)], capture_output=True, text=True)
    secs = time.time() - t0
    if proc.returncode != 0:
        res["mergekit"] = {"run": False, "why": proc.stderr.strip().splitlines()[-3:], "seconds": round(secs, 1)}
        return
    reach = reachability(out / "tokenizer.json")
    version = subprocess.run([str(exe.parent / "python"), "-c", "import importlib.metadata as m; print(m.version('mergekit'))"],
                             capture_output=True, text=True).stdout.strip()
    res["mergekit"] = {"run": True, "version": version, "reachability": reach.counts(),
                       "tokens": sum(len(getattr(reach, k)) for k in reach.CLASSES),
                       "seconds": round(secs, 1), "load": _load_avg(), "config": cfg.read_text()}


def part_stress(res: dict, args) -> None:
    from tokbench.surgery.union import build_union, reachability

    t0 = time.time()
    u = build_union({"smollm2": "smollm2", "gpt2": "gpt2"}, "smollm2", check_pretokenizer=False)
    t = time.time() - t0
    reach = reachability(u.tokenizer)
    gpt2_reach = reachability("gpt2")
    # GPT-2 tokens the union cannot produce although GPT-2 can: SmolLM2's pre-tokenizer splits every numeric character
    from tokbench.bpe.encoding import bytelevel_bytes

    digits = sum(1 for i in reach.unreachable if u.origin[i] != "smollm2"
                 and any(ch.isnumeric() for ch in (bytelevel_bytes(u.tokens[i]) or b"").decode("utf-8", "replace")))
    res["stress"] = {"summary": u.summary(), "reachability": reach.counts(), "gpt2_reachability": gpt2_reach.counts(),
                     "unreachable_gpt2_tokens_with_digits": digits, "seconds": round(t, 2), "load": _load_avg()}


PARTS = {"undertrained": part_undertrained, "planted": part_planted, "verify": part_verify,
         "union": part_union, "mergekit": part_mergekit, "stress": part_stress}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--work", default="/tmp/tb-surgery-analysis")
    ap.add_argument("--new-tokens", type=int, default=2000)
    ap.add_argument("--lines", type=int, default=20)
    ap.add_argument("--verify", type=int, default=200)
    ap.add_argument("--verify-planted", type=int, default=200, help="planted SmolLM2 rows to verify (half zero, half mean)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: no spin-waiting on a loaded machine)")
    ap.add_argument("--mergekit", default="/tmp/mkvenv/bin/mergekit-yaml")
    ap.add_argument("--results", default="surgery-analysis-results.json")
    args = ap.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    path = Path(args.results)
    res = json.loads(path.read_text()) if path.is_file() else {}
    for name in args.parts.split(","):
        t0 = time.time()
        print(f"== {name} (load {_load_avg()})", flush=True)
        PARTS[name](res, args)
        print(json.dumps(res[name], indent=1, default=str)[:3000], flush=True)
        print(f"   {time.time() - t0:.1f} s", flush=True)
        path.write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
