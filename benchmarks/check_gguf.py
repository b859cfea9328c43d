"""Load a GGUF file written by `tokbench export gguf` back with transformers' GGUF loader and compare it with the
Hugging Face folder it came from: token ids on held-out texts, logits, greedy generation; also the file's
tokenizer metadata read with gguf's own GGUFReader. Prints one JSON object.

    python benchmarks/check_gguf.py FOLDER FILE.gguf [--texts wikitext2-test,gsm8k-test,code-python] [--chars 20000]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("gguf")
    ap.add_argument("--texts", default="wikitext2-test,gsm8k-test,code-python")
    ap.add_argument("--chars", type=int, default=20000)
    ap.add_argument("--prompt", default="The capital of France is")
    a = ap.parse_args()
    import torch
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tokbench.eval import load_eval_text

    g = Path(a.gguf)
    t0 = time.perf_counter()
    fields = GGUFReader(str(g)).fields
    kv = {k: fields[k].contents() for k in ("tokenizer.ggml.model", "tokenizer.ggml.pre") if k in fields}
    types = fields["tokenizer.ggml.token_type"].contents()
    kv["token_types"] = {str(t): types.count(t) for t in sorted(set(types))}
    kv["reader_s"] = round(time.perf_counter() - t0, 1)
    hf_tok = AutoTokenizer.from_pretrained(a.folder)
    gg_tok = AutoTokenizer.from_pretrained(str(g.parent), gguf_file=g.name)
    texts = {}
    for name in a.texts.split(","):
        text, _ = load_eval_text(name, a.chars)
        for label, t in ((name, text), (name + " (no leading space)", text.lstrip())):
            x, y = hf_tok(t)["input_ids"], gg_tok(t)["input_ids"]
            first = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), None if len(x) == len(y) else min(len(x), len(y)))
            texts[label] = {"tokens": len(x), "identical": x == y, "first_difference": first}
    hf = AutoModelForCausalLM.from_pretrained(a.folder, dtype=torch.float32)
    gg = AutoModelForCausalLM.from_pretrained(str(g.parent), gguf_file=g.name, dtype=torch.float32)
    ids = hf_tok(a.prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        diff = (hf(ids).logits - gg(ids).logits).abs().max().item()
    out_hf = hf.generate(ids, max_new_tokens=16, do_sample=False)
    out_gg = gg.generate(ids, max_new_tokens=16, do_sample=False)
    print(json.dumps({"gguf": kv, "texts": texts, "max_abs_logit_difference": diff,
                      "greedy_identical": bool(torch.equal(out_hf, out_gg)),
                      "greedy": hf_tok.decode(out_hf[0, ids.shape[1]:])}, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
