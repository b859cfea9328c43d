"""Where the excess bits of a transplant's rows are, before any refinement (issue 16 section 2).

    nice python benchmarks/bench_refine_excess.py [--base smollm2-135m] --student FOLDER
        [--corpus wikitext2-test] [--chars 120000] [--threads 1]

Per-token negative log-likelihoods of the teacher (BASE under its own tokenizer) and of the student (the
transplanted FOLDER under the new one) on the evaluation text, in 512-token windows as `tokbench eval`
(so the totals equal its bits/byte). The text is cut into chunks at the character positions where both
tokenizations start a token; each chunk's excess (student nats - teacher nats) is put in one class:

- target_new: a student token of the chunk is a new row (the row is predicted: the output side);
- prev_token_new: else, the student token just before the chunk is new (the row is the input);
- new_in_prev_8: else, one of the 8 student tokens before the chunk is new (near context);
- neither: no new row in the chunk or the 8 tokens before it; split into chunks that are one token on both
  sides (the same segmentation: only far context differs) and the rest (other segmentation of old tokens).

What refining the new rows can reach is bounded by the classes it acts on. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path


def per_token(folder: Path, text: str):
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tokbench.eval.bpb import eval_windows, split_head

    tok = AutoTokenizer.from_pretrained(str(folder))
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    st = np.maximum.accumulate(np.array([s for s, _ in enc["offset_mapping"]]))
    st[0] = 0
    lm = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    body, head = split_head(lm)
    nats = np.zeros(len(ids))
    ids_t = torch.tensor(ids)
    with torch.inference_mode():
        for s, e in eval_windows(len(ids), 512):
            inp = ids_t[s:e][None]
            lg = head(body(input_ids=inp).last_hidden_state[0, :-1]).float()
            nats[s + 1:e] = (torch.logsumexp(lg, -1) - lg.gather(-1, inp[0, 1:, None])[:, 0]).double().numpy()
    return np.array(ids), st, nats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="smollm2-135m")
    ap.add_argument("--student", required=True, help="the transplanted model folder")
    ap.add_argument("--corpus", default="wikitext2-test")
    ap.add_argument("--chars", type=int, default=120_000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from tokbench.assets import resolve
    from tokbench.eval import load_eval_text
    from tokbench.vocab import align, load_vocabulary

    t0 = time.perf_counter()
    base = Path(resolve(args.base, kind="model"))
    student = Path(args.student)
    text, _ = load_eval_text(args.corpus, args.chars)
    t_ids, t_st, t_nats = per_token(base, text)
    s_ids, s_st, s_nats = per_token(student, text)
    al = align(load_vocabulary(base), load_vocabulary(student))
    new = np.zeros(int(s_ids.max()) + 1 + len(al.new_only), dtype=bool)
    new[sorted(al.new_only)] = True
    isnew = new[s_ids]
    char_bytes = np.fromiter((len(c.encode()) for c in text), dtype=np.int64, count=len(text))
    byte_pos = np.concatenate([[0], np.cumsum(char_bytes)])
    shared = np.intersect1d(s_st, t_st)
    bounds = np.append(shared, len(text))
    n = len(shared)
    sc = np.searchsorted(bounds, s_st, side="right") - 1
    tc = np.searchsorted(bounds, t_st, side="right") - 1
    excess = np.bincount(sc, s_nats, n) - np.bincount(tc, t_nats, n)
    teacher = np.bincount(tc, t_nats, n)
    cb = byte_pos[bounds[1:]] - byte_pos[bounds[:-1]]
    first = np.searchsorted(s_st, shared)
    cs = np.concatenate([[0], np.cumsum(isnew)])
    target_new = np.bincount(sc, isnew.astype(float), n) > 0
    prev_new = (first > 0) & isnew[np.maximum(first - 1, 0)]
    near = cs[first] - cs[np.maximum(first - 8, 0)] > 0
    one_token = (np.bincount(sc, minlength=n) == 1) & (np.bincount(tc, minlength=n) == 1)
    total_bytes = int(cb.sum())
    tb, sb = t_nats.sum() / math.log(2) / total_bytes, s_nats.sum() / math.log(2) / total_bytes
    out = {"corpus": args.corpus, "chars": len(text), "bytes": total_bytes, "student_tokens": len(s_ids),
           "teacher_tokens": len(t_ids), "new_token_share": float(isnew.mean()), "teacher_bpb": tb,
           "student_bpb": sb, "ratio": sb / tb, "chunks": n, "classes": {}}
    neither = ~target_new & ~prev_new & ~near
    classes = {"target_new": target_new, "prev_token_new": ~target_new & prev_new,
               "new_in_prev_8": ~target_new & ~prev_new & near, "neither_same_segmentation": neither & one_token,
               "neither_other_segmentation": neither & ~one_token}
    for name, m in classes.items():
        ex = excess[m].sum() / math.log(2) / total_bytes
        out["classes"][name] = {"chunks": int(m.sum()), "byte_share": float(cb[m].sum() / total_bytes),
                                "excess_bpb": float(ex), "share_of_excess": float(ex / (sb - tb)),
                                "teacher_bpb_part": float(teacher[m].sum() / math.log(2) / total_bytes)}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    sys.exit(main())
