"""7B-shaped transplant: peak memory, wall time, lazy load and byte-identical copies (issue 16, section 3).

Builds, streaming (never a whole model in RAM), under ROOT (default /work/tmp-scale):
- base/: a Llama-3-8B-shaped causal LM of random bf16 weights in sharded safetensors (vocab 128,256 from the
  llama3-hf tokenizer, hidden 4096, 32 layers, intermediate 14336, 32 heads / 8 kv heads, untied head;
  about 16 GB), with the Llama 3 tokenizer.json;
- donor/: a Qwen3-tokenizer donor of random bf16 rows (151,669 x 3584, untied head; embedding and head only:
  that is all a donor contributes).
Then runs `tokbench transplant base -t qwen3 ...` under /usr/bin/time -v for each method (subword; omp with the
donor), one at a time, nice'd, with OMP_NUM_THREADS / torch threads = --threads, and reports peak RSS against
the bound "largest input shard + 2 x (embedding + head) + the method's working set" (terms stated), wall time,
the time and RSS of a lazy safetensors open of the output, and whether every copied tensor is byte-identical.
ROOT is deleted at the end (--keep keeps it).

    nice python benchmarks/bench_transplant_scale.py            # full size (needs ~36 GB disk, ~12 GB RAM)
    nice python benchmarks/bench_transplant_scale.py --layers 4  # a smaller model, same vocabulary shapes
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tokbench.assets import resolve
from tokbench.vocab import load_vocabulary
from tokbench.vocab.model_io import INDEX_FILE, f32_to_bf16, open_model_folder, read_header, write_safetensors

GB = 1e9
BLOCK = 32 << 20  # bytes of bf16 generated per step


_POOL = 1 << 22  # values in a tensor's random pool


def _pool(rng: np.random.Generator, normal: bool) -> np.ndarray:
    if normal:
        return f32_to_bf16(rng.standard_normal(_POOL, dtype=np.float32) * np.float32(0.02))
    u = rng.integers(0, 1 << 16, size=_POOL, dtype=np.uint16)
    u &= 0x807F
    u |= 0x3C00  # random sign and mantissa, magnitude 2^-7..2^-6
    return u


def _blocks(rng: np.random.Generator, n: int, normal: bool):
    """n random bf16 values in blocks: each block is the tensor's random pool (4M values) read from a random
    offset, so every block differs while generation costs a copy, not a random draw per value (drawing
    8 billion values took most of the build time on this shared 2-core machine)."""
    pool = _pool(rng, normal)
    twice = np.concatenate([pool, pool])
    step = BLOCK // 2
    for i in range(0, n, step):
        m = min(step, n - i)
        out = np.empty(m, dtype=np.uint16)
        for j in range(0, m, _POOL):
            k = min(_POOL, m - j)
            o = int(rng.integers(0, _POOL))
            out[j:j + k] = twice[o:o + k]
        yield out.tobytes()


def _write_sharded(folder: Path, tensors: list[tuple[str, list[int], str]], shard_bytes: float, seed: int) -> dict:
    """tensors: (name, shape, kind 'rows' | 'bits' | 'ones'); written in order into shards of <= shard_bytes."""
    groups: list[list] = [[]]
    size = 0
    for t in tensors:
        nbytes = int(np.prod(t[1])) * 2
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(t)
        size += nbytes
    weight_map = {}
    total = 0
    for gi, group in enumerate(groups):
        name = f"model-{gi + 1:05d}-of-{len(groups):05d}.safetensors"
        entries = []
        for ti, (tname, shape, kind) in enumerate(group):
            rng = np.random.default_rng([seed, gi, ti])
            if kind == "ones":
                src = (lambda s=shape: f32_to_bf16(np.ones(s, dtype=np.float32)).tobytes())
            else:  # "rows": N(0, 0.02^2) values (embedding, head); "bits": small random weights
                src = (lambda r=rng, s=shape, k=kind: _blocks(r, int(np.prod(s)), k == "rows"))
            entries.append((tname, "BF16", shape, src))
            weight_map[tname] = name
        total += write_safetensors(folder / name, entries, {"format": "pt"})
        print(f"  {folder.name}/{name}: {len(group)} tensors", flush=True)
    (folder / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                indent=2))
    return {"shards": len(groups), "bytes": total}


def build_base(folder: Path, *, vocab: int, hidden: int, layers: int, inter: int, heads: int, kv: int,
               shard_bytes: float, tokenizer: Path) -> dict:
    folder.mkdir(parents=True)
    hd = hidden // heads
    tensors: list[tuple[str, list[int], str]] = [("model.embed_tokens.weight", [vocab, hidden], "rows")]
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors += [(p + "input_layernorm.weight", [hidden], "ones"),
                    (p + "self_attn.q_proj.weight", [heads * hd, hidden], "bits"),
                    (p + "self_attn.k_proj.weight", [kv * hd, hidden], "bits"),
                    (p + "self_attn.v_proj.weight", [kv * hd, hidden], "bits"),
                    (p + "self_attn.o_proj.weight", [hidden, heads * hd], "bits"),
                    (p + "post_attention_layernorm.weight", [hidden], "ones"),
                    (p + "mlp.gate_proj.weight", [inter, hidden], "bits"),
                    (p + "mlp.up_proj.weight", [inter, hidden], "bits"),
                    (p + "mlp.down_proj.weight", [hidden, inter], "bits")]
    tensors += [("model.norm.weight", [hidden], "ones"), ("lm_head.weight", [vocab, hidden], "rows")]
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab, "hidden_size": hidden,
           "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
           "num_key_value_heads": kv, "head_dim": hd, "hidden_act": "silu", "max_position_embeddings": 8192,
           "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
           "bos_token_id": 128000, "eos_token_id": 128001}
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    shutil.copyfile(tokenizer, folder / "tokenizer.json")
    return _write_sharded(folder, tensors, shard_bytes, seed=1)


def build_donor(folder: Path, *, vocab: int, hidden: int, tokenizer_dir: Path) -> dict:
    folder.mkdir(parents=True)
    cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": vocab, "hidden_size": hidden,
           "num_hidden_layers": 0, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, folder / name)
    return _write_sharded(folder, [("model.embed_tokens.weight", [vocab, hidden], "rows"),
                                   ("lm_head.weight", [vocab, hidden], "rows")], 8 * GB, seed=2)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _time_v(cmd: list[str], env: dict) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1)) * 1024
    return {"wall_s": round(wall, 1), "peak_rss_bytes": rss, "stdout": proc.stdout}


def verify(base: Path, out: Path) -> dict:
    """Lazy open of the output (time, RSS growth) and byte comparison of every tensor that is not replaced."""
    import resource

    import torch  # noqa: F401  (imported before the clock: safe_open(framework="pt") needs it)
    from safetensors import safe_open

    bm, om = open_model_folder(base), open_model_folder(out)
    replaced = {bm.embed_name, bm.head_name}
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    n = 0
    for shard in om.shards:
        with safe_open(str(shard), framework="pt") as f:
            n += len(list(f.keys()))
            f.get_slice(next(iter(f.keys())))[:1]  # touch one row of one tensor only
    lazy_s = time.perf_counter() - t0
    lazy_rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024
    t0 = time.perf_counter()
    same = differ = 0
    compared = 0
    for name, src in bm.files.items():
        if name in replaced:
            continue
        (bh, bb), (oh, ob) = read_header(src), read_header(om.files[name])
        bs, be = bh[name]["data_offsets"]
        os_, oe = oh[name]["data_offsets"]
        ok = be - bs == oe - os_ and bh[name]["shape"] == oh[name]["shape"] and bh[name]["dtype"] == oh[name]["dtype"]
        with open(src, "rb") as a, open(om.files[name], "rb") as b:
            a.seek(bb + bs)
            b.seek(ob + os_)
            left = be - bs
            while ok and left > 0:
                x, y = a.read(min(BLOCK, left)), b.read(min(BLOCK, left))
                ok = x == y
                left -= len(x)
                compared += len(x)
        same += ok
        differ += not ok
    return {"tensors": n, "lazy_open_s": round(lazy_s, 3), "lazy_open_rss_growth_bytes": lazy_rss,
            "copied_tensors": same + differ, "byte_identical": same, "differ": differ,
            "compared_gb": round(compared / GB, 2), "compare_s": round(time.perf_counter() - t0, 1),
            "out_rows": om.vocab_rows, "out_head": om.head_name}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="/work/tmp-scale")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--inter", type=int, default=14336)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv", type=int, default=8)
    ap.add_argument("--shard-gb", type=float, default=5.0)
    ap.add_argument("--donor-hidden", type=int, default=3584)
    ap.add_argument("--base-tokenizer", default="llama3-hf")
    ap.add_argument("--target", default="qwen3")
    ap.add_argument("--methods", nargs="+", default=["subword", "omp"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--k", type=int, default=None, help="OMP sparsity (default: chosen by held-out reconstruction)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", default=None, help="write the results here")
    a = ap.parse_args()

    root = Path(a.root)
    if root.exists():
        raise SystemExit(f"{root} exists: remove it first")
    base_tok = Path(resolve(a.base_tokenizer))
    target = Path(resolve(a.target))
    vocab = len(load_vocabulary(base_tok))
    tvocab = len(load_vocabulary(target))
    emb = vocab * a.hidden * 2
    layer = (2 * a.hidden * a.hidden + 2 * a.kv * (a.hidden // a.heads) * a.hidden + 3 * a.inter * a.hidden) * 2
    base_bytes = 2 * emb + a.layers * layer
    donor_bytes = 2 * tvocab * a.donor_hidden * 2
    out_bytes = base_bytes + 2 * (tvocab - vocab) * a.hidden * 2
    need = base_bytes + donor_bytes + out_bytes
    free_disk = shutil.disk_usage(root.parent).free
    print(f"base {base_bytes / GB:.2f} GB, donor {donor_bytes / GB:.2f} GB, one output {out_bytes / GB:.2f} GB; "
          f"disk free {free_disk / GB:.1f} GB; load {_load()}", flush=True)
    if need > free_disk - 3 * GB:
        raise SystemExit(f"not enough disk: need {need / GB:.1f} GB + 3 GB headroom; try --layers {a.layers // 2}")

    results: dict = {"shapes": {"base_vocab": vocab, "target_vocab": tvocab, "hidden": a.hidden, "layers": a.layers,
                                "intermediate": a.inter, "donor_hidden": a.donor_hidden, "dtype": "BF16",
                                "tied": False}, "threads": a.threads, "runs": {}}
    try:
        t0 = time.perf_counter()
        results["base"] = build_base(root / "base", vocab=vocab, hidden=a.hidden, layers=a.layers, inter=a.inter,
                                     heads=a.heads, kv=a.kv, shard_bytes=a.shard_gb * GB,
                                     tokenizer=base_tok if base_tok.is_file() else base_tok / "tokenizer.json")
        results["base"]["build_s"] = round(time.perf_counter() - t0, 1)
        if "omp" in a.methods:
            t0 = time.perf_counter()
            results["donor"] = build_donor(root / "donor", vocab=tvocab, hidden=a.donor_hidden,
                                           tokenizer_dir=target if target.is_dir() else target.parent)
            results["donor"]["build_s"] = round(time.perf_counter() - t0, 1)
        shards = sorted((root / "base").glob("*.safetensors"))
        largest = max(p.stat().st_size for p in shards)
        f32 = lambda rows, cols: rows * cols * 4  # noqa: E731
        terms = {"largest_input_shard": largest,
                 "base_embedding_and_head_f32": 2 * f32(vocab, a.hidden),
                 "new_embedding_and_head_f32": 2 * f32(tvocab, a.hidden)}
        results["bound_terms_bytes"] = terms
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads),
                   TQDM_DISABLE="1")
        for method in a.methods:
            out = root / f"out-{method}"
            cmd = [sys.executable, "-m", "tokbench.cli", "transplant", str(root / "base"), "-t", str(target),
                   "--method", method, "-o", str(out), "--no-cache", "--json"]
            if method == "omp":
                cmd += ["--donor", str(root / "donor")] + (["--k", str(a.k)] if a.k else [])
            load_before = _load()
            print(f"{method}: running (load {load_before}) ...", flush=True)
            run = _time_v(cmd, env)
            report = json.loads(run.pop("stdout"))
            run.update(load_before=load_before, load_after=_load(), seconds=report.get("seconds"),
                       counts=report.get("counts"), parameters=report.get("parameters"))
            if method == "omp":
                # the donor table of one role (float32) and its normalised anchor copy, the new tokens' donor rows
                working = f32(tvocab, a.donor_hidden) * 2 + f32(report["counts"]["new"], a.donor_hidden)
            else:
                working = f32(report["counts"]["new"], a.hidden)  # the new rows before assembly
            run["working_set_bytes"] = working
            run["bound_bytes"] = terms["largest_input_shard"] + terms["base_embedding_and_head_f32"] + \
                terms["new_embedding_and_head_f32"] + working
            run["within_bound"] = run["peak_rss_bytes"] <= run["bound_bytes"]
            run["verify"] = verify(root / "base", out)
            results["runs"][method] = run
            print(json.dumps({method: {k: v for k, v in run.items() if k != "parameters"}}, indent=1), flush=True)
            shutil.rmtree(out)
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
