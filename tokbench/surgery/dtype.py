"""The `dtype` op: cast the embedding and head, or every floating tensor of the checkpoint, to another float type.

Runs on the finished output folder (before it is renamed into place), one shard and one tensor at a time: each
shard is rewritten into a temporary sibling and renamed over the old one, so at most one tensor is held in
memory twice. A cast is lossless when the target holds every value of the source (BF16/F16 -> F32/F64,
F32 -> F64); any other cast (F32 -> BF16/F16, BF16 <-> F16, F64 -> anything narrower) is refused at plan time
unless the recipe says `allow_lossy: true`, and the report then counts the elements that changed and the
values that overflowed to infinity.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from tokbench.errors import TokbenchError

NAMES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}
TORCH_NAMES = {v: k for k, v in NAMES.items()}
_WIDER = {("BF16", "F32"), ("F16", "F32"), ("BF16", "F64"), ("F16", "F64"), ("F32", "F64")}


def lossless(src: str, dst: str) -> bool:
    return src == dst or (src, dst) in _WIDER


def _to_f64(raw: bytes, dtype: str) -> np.ndarray:
    from tokbench.vocab.model_io import bf16_to_f32

    if dtype == "BF16":
        return bf16_to_f32(np.frombuffer(raw, dtype="<u2")).astype(np.float64)
    return np.frombuffer(raw, dtype={"F32": "<f4", "F16": "<f2", "F64": "<f8"}[dtype]).astype(np.float64)


def _from_f64(x: np.ndarray, dtype: str) -> bytes:
    from tokbench.vocab.model_io import to_storage

    if dtype == "BF16":
        return to_storage(x.astype(np.float32), "BF16")  # F64 -> F32 is exact for every BF16-range value we keep
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(x, dtype={"F32": "<f4", "F16": "<f2", "F64": "<f8"}[dtype]).tobytes()


def cast_folder(folder: Path, to: str, names: set[str] | None) -> dict:
    """Cast the floating tensors of every shard in `folder` (only `names` when given) to safetensors dtype `to`;
    update the shard index's total_size and config.json's dtype (whole checkpoint only). Returns counts."""
    from tokbench.vocab.model_io import INDEX_FILE, read_header, write_safetensors

    stats = {"to": TORCH_NAMES[to], "tensors": 0, "elements": 0, "changed_elements": 0, "overflowed": 0,
             "max_abs_error": 0.0, "from": {}}
    total = 0
    for shard in sorted(folder.glob("*.safetensors")):
        header, base = read_header(shard)
        entries = []
        for name, info in header.items():
            if name == "__metadata__":
                continue
            s, e = info["data_offsets"]
            src = info["dtype"]
            if src in NAMES.values() and src != to and (names is None or name in names):
                stats["tensors"] += 1
                stats["from"][src] = stats["from"].get(src, 0) + 1

                def make(shard=shard, a=base + s, b=base + e, src=src):
                    with open(shard, "rb") as f:
                        f.seek(a)
                        x = _to_f64(f.read(b - a), src)
                    out = _from_f64(x, to)
                    y = _to_f64(out, to)
                    diff = np.abs(y - x)
                    finite = np.isfinite(x)
                    stats["elements"] += int(x.size)
                    stats["changed_elements"] += int((diff[finite] > 0).sum())
                    stats["overflowed"] += int((finite & ~np.isfinite(y)).sum())
                    ok = finite & np.isfinite(y)
                    if ok.any():
                        stats["max_abs_error"] = max(stats["max_abs_error"], float(diff[ok].max()))
                    return out

                entries.append((name, to, info["shape"], make))
            else:
                entries.append((name, src, info["shape"], (shard, base + s, base + e)))
        tmp = shard.with_name(shard.name + ".cast-tmp")
        try:
            total += write_safetensors(tmp, entries, header.get("__metadata__") or {"format": "pt"})
            os.replace(tmp, shard)
        finally:
            if tmp.exists():
                tmp.unlink()
    index = folder / INDEX_FILE
    if index.exists():
        data = json.loads(index.read_text(encoding="utf-8"))
        data.setdefault("metadata", {})["total_size"] = total
        index.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if names is None:
        cfg_path = folder / "config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        for key in ("torch_dtype", "dtype"):
            if key in cfg or key == "torch_dtype":
                cfg[key] = TORCH_NAMES[to]
        for sub in ("text_config",):
            if isinstance(cfg.get(sub), dict) and "torch_dtype" in cfg[sub]:
                cfg[sub]["torch_dtype"] = TORCH_NAMES[to]
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    stats["max_abs_error"] = round(stats["max_abs_error"], 9)
    return stats


def plan_cast(model_dtypes: dict[str, str], to_name: str, scope: str, allow_lossy: bool, where: str,
              embed_names: set[str]) -> dict:
    """Check the cast at plan time: the tensors it touches and whether any is lossy (refused without allow_lossy)."""
    to = NAMES[to_name]
    touched = {n: d for n, d in model_dtypes.items() if d in NAMES.values() and d != to
               and (scope == "all" or n in embed_names)}
    lossy = sorted({d for d in touched.values() if not lossless(d, to)})
    if lossy and not allow_lossy:
        raise TokbenchError(f"{where}: casting {'/'.join(TORCH_NAMES[d] for d in lossy)} to {to_name} loses "
                            "precision or range", fix="add `allow_lossy: true` to the op, or cast to a wider type")
    return {"to": to_name, "tensors": scope, "touched": len(touched), "lossy": bool(lossy),
            "from": sorted({TORCH_NAMES[d] for d in touched.values()})}


__all__ = ["NAMES", "cast_folder", "lossless", "plan_cast"]
