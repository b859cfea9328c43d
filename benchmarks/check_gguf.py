"""Load a GGUF file written by `tokbench export gguf` back and compare it with the Hugging Face folder it came from:
the file's tokenizer metadata read with gguf's own GGUFReader; token ids on held-out texts (whole, and line by line)
from the folder's tokenizer against the tokenizers built from the GGUF vocabulary by transformers' GGUF loader (when it
supports the file's tokenizer model: gpt2, llama, t5, not bert) and by llama.cpp itself (when `llama_cpp`, the
llama-cpp-python binding, is importable; it is not a tokbench dependency); logits and greedy generation through
transformers' loader (and llama.cpp's logits at every prompt position). Prints one JSON object.

    python benchmarks/check_gguf.py FOLDER FILE.gguf [--texts wikitext2-test,gsm8k-test,code-python] [--chars 20000]
        [--lines 300] [--no-model]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path


def _first_difference(x: list[int], y: list[int]) -> int | None:
    return next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), None if len(x) == len(y) else min(len(x), len(y)))


def _compare(hf_ids, other_ids, texts: dict[str, str], lines: int) -> dict:
    out = {}
    for label, text in texts.items():
        row = {}
        for form, t in (("whole", text), ("whole, no leading space", text.lstrip())):
            x, y = hf_ids(t), other_ids(t)
            row[form] = {"tokens": len(x), "identical": x == y, "first_difference": _first_difference(x, y)}
        chosen = [ln for ln in text.splitlines() if ln.strip()][:lines]
        differ = [ln for ln in chosen if hf_ids(ln) != other_ids(ln)]
        row["lines"] = {"lines": len(chosen), "identical": len(chosen) - len(differ),
                        "examples": [ln[:80] for ln in differ[:3]]}
        out[label] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("gguf")
    ap.add_argument("--texts", default="wikitext2-test,gsm8k-test,code-python")
    ap.add_argument("--chars", type=int, default=20000)
    ap.add_argument("--lines", type=int, default=300, help="lines of each text compared one by one")
    ap.add_argument("--prompt", default="The capital of France is")
    ap.add_argument("--no-model", action="store_true", help="compare the tokenizers only")
    a = ap.parse_args()
    import torch
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tokbench.eval import load_eval_text

    g = Path(a.gguf)
    t0 = time.perf_counter()
    fields = GGUFReader(str(g)).fields
    kv = {k: fields[k].contents() for k in fields if k.startswith("tokenizer.ggml.") and k not in (
        "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.scores", "tokenizer.ggml.merges",
        "tokenizer.ggml.precompiled_charsmap")}
    if "tokenizer.ggml.precompiled_charsmap" in fields:
        kv["precompiled_charsmap_bytes"] = len(fields["tokenizer.ggml.precompiled_charsmap"].data)
    types = fields["tokenizer.ggml.token_type"].contents()
    kv["token_types"] = {str(t): types.count(t) for t in sorted(set(types))}
    kv["reader_s"] = round(time.perf_counter() - t0, 1)
    texts = {}
    for name in a.texts.split(","):
        texts[name], _ = load_eval_text(name, a.chars)
    hf_tok = AutoTokenizer.from_pretrained(a.folder)

    def hf_ids(t):
        return hf_tok(t)["input_ids"]

    result: dict = {"gguf": kv, "tokenizers": {}}
    try:
        gg_tok = AutoTokenizer.from_pretrained(str(g.parent), gguf_file=g.name)
    except ValueError as exc:  # transformers' GGUF loader builds gpt2 / llama / t5 vocabularies only
        gg_tok = None
        result["tokenizers"]["transformers"] = {"unsupported": str(exc).splitlines()[0][:160]}
    if gg_tok is not None:
        result["tokenizers"]["transformers"] = _compare(hf_ids, lambda t: gg_tok(t)["input_ids"], texts, a.lines)
    llm = None
    if importlib.util.find_spec("llama_cpp") is None:
        result["tokenizers"]["llama.cpp"] = {"unavailable": "llama_cpp (llama-cpp-python) is not installed"}
    else:
        import llama_cpp

        llm = llama_cpp.Llama(model_path=str(g), vocab_only=a.no_model, n_ctx=64, n_threads=2,
                              logits_all=not a.no_model, verbose=False)
        result["llama_cpp_python"] = llama_cpp.__version__
        result["tokenizers"]["llama.cpp"] = _compare(
            hf_ids, lambda t: llm.tokenize(t.encode("utf-8"), add_bos=True, special=True), texts, a.lines)
    if not a.no_model:
        hf = AutoModelForCausalLM.from_pretrained(a.folder, dtype=torch.float32)
        gg = AutoModelForCausalLM.from_pretrained(str(g.parent), gguf_file=g.name, dtype=torch.float32)
        ids = hf_tok(a.prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            ref = hf(ids).logits
            result["max_abs_logit_difference"] = (ref - gg(ids).logits).abs().max().item()
        out_hf = hf.generate(ids, max_new_tokens=16, do_sample=False)
        out_gg = gg.generate(ids, max_new_tokens=16, do_sample=False)
        result["greedy_identical"] = bool(torch.equal(out_hf, out_gg))
        result["greedy"] = hf_tok.decode(out_hf[0, ids.shape[1]:])
        if llm is not None:  # llama.cpp's own forward pass over the same ids (its CPU kernels, not bit-exact)
            llm.reset()
            llm.eval(ids[0].tolist())
            theirs = torch.tensor(llm.scores[:ids.shape[1]])
            same = int((ref[0].argmax(-1) == theirs.argmax(-1)).sum())
            result["llama_cpp_logits"] = {"max_abs_difference": (ref[0] - theirs).abs().max().item(),
                                          "max_abs_logit": ref[0].abs().max().item(),
                                          "same_argmax_positions": f"{same} of {ids.shape[1]}"}
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
