"""Bits per byte of a causal LM on a text: total negative log-likelihood in bits of every predicted
token, divided by the UTF-8 bytes those tokens stand for. Independent of the tokenizer, so models on
different tokenizers compare directly.

The text is tokenized once (no special tokens added) and cut into windows of `chunk` tokens that overlap
by one token: every token but the very first is predicted, each with the context of its own window.
Bytes covered are counted from the tokenizer's character offsets (token i covers the text from its start
to the next token's start), so whitespace a tokenizer folds into a neighbour is still counted once.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

from tokbench import limits
from tokbench.errors import TokbenchError
from tokbench.extras import need
from tokbench.text import clean


def load_eval_text(text: str | os.PathLike, max_chars: int | None = None) -> tuple[str, str]:
    """(text, label) from a file path or a corpus asset name; first `max_chars` characters."""
    from tokbench.assets import iter_documents

    limits.optional("max_chars", max_chars, 1)
    p = Path(text)
    if p.is_file():
        from tokbench.assets import read_text

        body = read_text(p)
        label = str(p)
    else:
        parts: list[str] = []
        n = 0
        for doc in iter_documents(str(text)):
            parts.append(doc)
            n += len(doc) + 2
            if max_chars is not None and n >= max_chars:
                break
        body = "\n\n".join(parts)
        label = str(text)
    body = clean(body)
    if max_chars is not None:
        body = body[:max_chars]
    if not body:
        raise TokbenchError("the evaluation text is empty", path=label, fix="pass a non-empty text file or corpus")
    return body, label


def _device(device: str | None) -> str:
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _cache_key(model_dir: Path, text: str, chunk: int) -> str:
    h = hashlib.sha256()
    for name in sorted(os.listdir(model_dir)):
        if name.endswith((".safetensors", ".json")):
            st = (model_dir / name).stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(str(model_dir.resolve()).encode())
    h.update(f"chunk={chunk}".encode())
    h.update(hashlib.sha256(text.encode("utf-8")).digest())
    return h.hexdigest()[:24]


def bits_per_byte(model: str | os.PathLike, text: str, *, chunk: int = 512, batch: int = 4,
                  device: str | None = None, cache_dir: str | os.PathLike | None = None,
                  progress: bool = True) -> dict:
    """Bits per byte of the causal LM folder (or model asset) `model` on `text`.

    Returns {bits_per_byte, bytes_covered, bytes_total, tokens, predicted_tokens, chunk, seconds, device}.
    cache_dir: when given, results are cached there keyed by the model files' sizes/mtimes and the text.
    """
    from tokbench.assets import resolve

    chunk = limits.at_least("chunk", chunk, 2, what="tokens per window")
    batch = limits.at_least("batch", batch, 1, what="windows per forward pass")
    text = clean(text)
    model_dir = Path(model) if Path(model).is_dir() else Path(resolve(str(model), kind="model"))
    from tokbench.vocab.model_io import open_model_folder

    open_model_folder(model_dir)  # headers only: a damaged or truncated model is refused before any work
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"bpb-{_cache_key(model_dir, text, chunk)}.json"
        if cache_file.is_file():
            try:
                data = json.loads(cache_file.read_text())
                data["cached"] = True
                return data
            except ValueError:
                pass
    need("torch", "transformers", what="bits/byte evaluation (tokbench eval, transplant --eval)")
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    dev = _device(device)
    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir))
    except Exception as exc:  # transformers raises many types
        raise TokbenchError(f"the tokenizer does not load with transformers ({exc})", path=model_dir,
                            fix="check tokenizer.json / tokenizer_config.json") from None
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    offsets = enc["offset_mapping"]
    if len(ids) < 2:
        raise TokbenchError("text too short to evaluate (fewer than 2 tokens)", path=model_dir, fix="pass more text")
    starts = np.array([s for s, _ in offsets], dtype=np.int64)
    starts = np.maximum.accumulate(starts)
    starts[0] = 0
    bounds = np.append(starts, len(text))
    # UTF-8 byte position of every character boundary
    char_bytes = np.fromiter((len(c.encode("utf-8")) for c in text), dtype=np.int64, count=len(text))
    byte_pos = np.concatenate([[0], np.cumsum(char_bytes)])
    tok_bytes = byte_pos[bounds[1:]] - byte_pos[bounds[:-1]]

    # float32 on the CPU: bf16 matmuls there are slower and round the figure; bf16 on accelerators
    dtype = torch.float32 if dev == "cpu" else torch.bfloat16
    try:
        lm = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    except Exception as exc:
        raise TokbenchError(f"the model does not load with transformers ({exc})", path=model_dir,
                            fix="check config.json and the weights") from None
    lm.to(dev).eval()
    max_pos = getattr(lm.config, "max_position_embeddings", None)
    if isinstance(max_pos, int) and max_pos > 0:
        chunk = min(chunk, max_pos)
    windows = eval_windows(len(ids), chunk)
    total_nats, predicted = window_nats(lm, ids, windows, batch=batch, device=dev, progress=progress)
    covered = int(tok_bytes[1:].sum())
    result = {
        "bits_per_byte": total_nats / math.log(2) / covered,
        "bytes_covered": covered,
        "bytes_total": int(byte_pos[-1]),
        "chars": len(text),
        "tokens": len(ids),
        "predicted_tokens": predicted,
        "bytes_per_token": covered / predicted,
        "chunk": chunk,
        "seconds": round(time.perf_counter() - t0, 2),
        "device": dev,
        "model": str(model_dir),
    }
    if cache_file is not None:
        from tokbench.outputs import atomic_write

        atomic_write(cache_file, json.dumps(result, indent=2))  # a killed run leaves no truncated cache
    return result


# --- the forward passes --------------------------------------------------------------------------------
# Causal LMs whose logits are exactly `get_output_embeddings()(last hidden state)` (no soft-capping, logit
# scale or other post-processing): for them the head runs on slices of positions, so the (batch, window,
# vocab) logits are never held at once. Any other model takes the plain `model(input_ids).logits` path.
_PLAIN_HEAD = frozenset({"LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM", "Qwen2ForCausalLM",
                         "Qwen3ForCausalLM", "GPT2LMHeadModel", "GPTNeoXForCausalLM", "PhiForCausalLM",
                         "Phi3ForCausalLM", "StableLmForCausalLM", "OlmoForCausalLM", "Olmo2ForCausalLM"})
_HEAD_ROWS = 1024  # positions per slice of the output head (1024 x 50k float32 logits = 200 MB)


def eval_windows(n_tokens: int, chunk: int) -> list[tuple[int, int]]:
    """[start, end) token windows of at most `chunk` tokens overlapping by one: every token but the first
    is predicted exactly once, with the context of its own window."""
    if chunk < 2:
        raise TokbenchError(f"window of {chunk} tokens", fix="pass --chunk 2 or more (default 512)")
    stride = chunk - 1
    return [(s, min(s + chunk, n_tokens)) for s in range(0, n_tokens - 1, stride)]


def split_head(lm):
    import torch

    head = lm.get_output_embeddings()
    body = getattr(lm, getattr(lm, "base_model_prefix", ""), None)
    if type(lm).__name__ in _PLAIN_HEAD and isinstance(head, torch.nn.Linear) and isinstance(body, torch.nn.Module):
        return body, head
    return None


def _nats(logits, targets) -> float:
    """Sum over positions of -log softmax(logits)[target], in float32 per position, summed in float64."""
    import torch

    logits = logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return float((torch.logsumexp(logits, dim=-1) - picked).double().sum())


def window_nats(lm, ids: list[int], windows: list[tuple[int, int]], *, batch: int = 4, device: str = "cpu",
                progress: bool = True) -> tuple[float, int]:
    """(total negative log-likelihood in nats, predicted tokens) of `lm` over the token windows.

    Windows of the same length go through the model together, `batch` at a time, so no batch is ever padded
    and no attention mask is needed (the causal kernel runs unmasked); the output head runs on slices of
    positions (see _PLAIN_HEAD). The figure equals the plain per-window `model(input_ids).logits` +
    cross-entropy up to float rounding (tests/test_eval.py).
    """
    import torch
    from tqdm import tqdm

    if batch < 1:
        raise TokbenchError(f"batch of {batch} windows", fix="pass --batch 1 or more (default 4)")
    groups: list[list[tuple[int, int]]] = []
    for w in windows:
        if groups and len(groups[-1]) < batch and groups[-1][0][1] - groups[-1][0][0] == w[1] - w[0]:
            groups[-1].append(w)
        else:
            groups.append([w])
    split = split_head(lm)
    ids_t = torch.tensor(ids, dtype=torch.long)
    total, predicted = 0.0, 0
    with torch.inference_mode():
        for group in tqdm(groups, desc="bits/byte", unit="batch", disable=not progress):
            inp = torch.stack([ids_t[s:e] for s, e in group]).to(device)
            targets = inp[:, 1:].reshape(-1)
            if split is None:
                logits = lm(input_ids=inp).logits[:, :-1]
                total += _nats(logits.reshape(-1, logits.shape[-1]), targets)
            else:
                body, head = split
                hidden = body(input_ids=inp).last_hidden_state[:, :-1]
                hidden = hidden.reshape(-1, hidden.shape[-1])
                for r in range(0, hidden.shape[0], _HEAD_ROWS):
                    total += _nats(head(hidden[r:r + _HEAD_ROWS]), targets[r:r + _HEAD_ROWS])
            predicted += int(targets.numel())
    return total, predicted
