"""Auxiliary embedding space for donor-free methods: a sentence-embedding model (all-MiniLM-L6-v2 by
default: mean pooling over tokens, then L2 normalisation) applied to every token's text.

`aux_space(base_vocab, new_vocab, new_ids)` embeds the base's normal and byte tokens and the given new-vocabulary
tokens into one `AuxSpace`, the space TokenAdapt and donor-free OMP work in."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tokbench.errors import TokbenchError
from tokbench.vocab import Kind

DEFAULT_AUX = "minilm"


def token_texts(vocab, ids) -> list[str]:
    """Readable text of token ids for the embedder (word-start space dropped, invalid UTF-8 replaced)."""
    out = []
    for i in ids:
        key = vocab.key(i)
        if key is None:
            t = vocab.tokens[i] or ""
        else:
            t = key[0].decode("utf-8", errors="replace")
        out.append(t.strip() or t or " ")
    return out


class AuxEmbedder:
    def __init__(self, name_or_path: str | os.PathLike = DEFAULT_AUX, device: str | None = None):
        from tokbench.assets import resolve

        p = Path(name_or_path)
        self.path = p if p.is_dir() else Path(resolve(str(name_or_path)))
        if not (self.path / "config.json").is_file():
            raise TokbenchError("not a sentence-embedding model folder (no config.json)", path=self.path,
                                fix="pass --aux-embedder minilm or a folder with config.json + safetensors")
        self.device = device
        self._model = None
        self._tok = None

    def _load(self):
        if self._model is None:
            import torch
            from transformers import AutoModel, AutoTokenizer

            try:
                self._tok = AutoTokenizer.from_pretrained(str(self.path))
                self._model = AutoModel.from_pretrained(str(self.path), dtype=torch.float32)
            except Exception as exc:
                raise TokbenchError(f"the auxiliary embedder does not load ({exc})", path=self.path,
                                    fix="run `tokbench assets fetch minilm` or pass another sentence-embedding folder") from None
            dev = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self.device = dev
            self._model.to(dev).eval()

    def embed(self, texts: list[str], batch: int = 512, progress: bool = True,
              cache_dir: str | os.PathLike | None = None) -> np.ndarray:
        """(len(texts), dim) L2-normalised mean-pooled embeddings."""
        cache = None
        if cache_dir is not None:
            h = hashlib.sha256(str(self.path.resolve()).encode())
            for t in texts:
                h.update(t.encode("utf-8", errors="replace") + b"\0")
            cache = Path(cache_dir) / f"aux-{h.hexdigest()[:24]}.npy"
            if cache.is_file():
                return np.load(cache)
        self._load()
        import torch
        from tqdm import tqdm

        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths together: less padding
        out = None
        with torch.inference_mode():
            for b0 in tqdm(range(0, len(texts), batch), desc="aux embeddings", unit="batch",
                           disable=not progress or len(texts) <= batch):
                sel = order[b0:b0 + batch]
                enc = self._tok([texts[i] for i in sel], padding=True, truncation=True, max_length=32,
                                return_tensors="pt").to(self.device)
                hid = self._model(**enc).last_hidden_state
                m = enc["attention_mask"].unsqueeze(-1).to(hid.dtype)
                pooled = (hid * m).sum(1) / m.sum(1).clamp(min=1)
                pooled = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
                if out is None:
                    out = np.zeros((len(texts), pooled.shape[1]), dtype=np.float32)
                out[sel] = pooled
        assert out is not None
        if cache is not None:
            import io

            from tokbench.outputs import atomic_write

            buf = io.BytesIO()
            np.save(buf, out)
            atomic_write(cache, buf.getvalue())
        return out


@dataclass
class AuxSpace:
    """Token vectors in an auxiliary embedder's space: old_ids (base ids with a vector), old_vecs (their rows),
    old_lens (base id -> byte length), new_pos (new id -> row of new_vecs), new_vecs; path of the embedder."""

    path: Path
    old_ids: np.ndarray
    old_vecs: np.ndarray
    old_lens: dict[int, int]
    new_pos: dict[int, int]
    new_vecs: np.ndarray


def aux_space(base_vocab, new_vocab, new_ids, embedder=None, *, device: str | None = None, cache_dir=None,
              progress: bool = True) -> AuxSpace:
    """Embed the base's normal/byte tokens and `new_ids` of `new_vocab` (in that order) with `embedder`
    (a folder or asset name; default minilm). Vectors are cached in cache_dir by the texts' hash."""
    emb = AuxEmbedder(embedder or DEFAULT_AUX, device=device)
    old_ids = np.array([j for j, kd in enumerate(base_vocab.kinds) if kd in (Kind.NORMAL, Kind.BYTE)
                        and base_vocab.key(j) is not None], dtype=np.int64)
    old_vecs = emb.embed(token_texts(base_vocab, old_ids), progress=progress, cache_dir=cache_dir)
    new_ids = [int(i) for i in new_ids]
    new_vecs = emb.embed(token_texts(new_vocab, new_ids), progress=progress, cache_dir=cache_dir)
    return AuxSpace(path=emb.path, old_ids=old_ids, old_vecs=old_vecs,
                    old_lens={int(j): len(base_vocab.key(int(j))[0]) for j in old_ids},
                    new_pos={i: r for r, i in enumerate(new_ids)}, new_vecs=new_vecs)
