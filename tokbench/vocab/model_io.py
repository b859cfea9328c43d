"""Hugging Face model folders: find the input embedding and output head, read only those tensors,
write a new folder with new embedding/head rows while every other tensor streams through unchanged.

Only safetensors are read (single `model.safetensors` or sharded with `model.safetensors.index.json`);
pickled `.bin` / `.pt` weights are refused. The safetensors format is handled here directly (8-byte
little-endian header length, JSON header, raw little-endian data), so a tensor is read from its byte
range alone and unchanged tensors are copied byte for byte, in blocks: a 7B model never sits in RAM.
Floating dtypes are kept as they were (F32, F16, BF16, F64); new rows are converted to the base's dtype.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from tokbench.errors import TokbenchError
from tokbench.outputs import commit_output, prepare_output  # noqa: F401  (the output-folder API, re-exported)

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "consolidated.00.pth", "tf_model.h5",
            "flax_model.msgpack")
_COPY_BLOCK = 64 << 20

# Input embedding names by architecture family, most common first; the head likewise.
EMBED_NAMES = (
    "model.embed_tokens.weight",  # llama, mistral, qwen, gemma, phi3, olmo, smollm
    "transformer.wte.weight",  # gpt2, gpt-j, codegen, starcoder
    "gpt_neox.embed_in.weight",  # pythia / gpt-neox
    "model.decoder.embed_tokens.weight",  # opt
    "transformer.word_embeddings.weight",  # bloom, falcon
    "transformer.embd.wte.weight",  # phi-1
    "model.embed_in.weight",
    "embeddings.word_embeddings.weight",
    "word_embeddings.weight",
    "embed_tokens.weight",
    "tok_embeddings.weight",
)
HEAD_NAMES = ("lm_head.weight", "embed_out.weight", "output.weight", "lm_head.linear.weight")
_EMBED_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight",
                   "tok_embeddings.weight")

# safetensors dtype name -> (numpy dtype for the raw storage, bytes per element)
_DTYPES = {
    "F64": (np.dtype("<f8"), 8), "F32": (np.dtype("<f4"), 4), "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),
}
_ANY_DTYPE_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                   "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


# --- safetensors, by hand --------------------------------------------------------------------------
def read_header(path: Path) -> tuple[dict, int]:
    """(header dict, offset of the data section) of a safetensors file."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError("file shorter than 8 bytes")
            n = int.from_bytes(raw, "little")
            if n <= 0 or n > 100 << 20:
                raise ValueError(f"header length {n} is not plausible")
            header = json.loads(f.read(n))
    except (OSError, ValueError) as exc:
        raise TokbenchError(f"not a readable safetensors file ({exc})", path=path,
                            fix="re-download or re-save the weights with safetensors") from None
    if not isinstance(header, dict):
        raise TokbenchError("safetensors header is not a JSON object", path=path, fix="re-save the weights")
    _check_sizes(path, header, path.stat().st_size - 8 - n)
    return header, 8 + n


def _check_sizes(path: Path, header: dict, data_size: int) -> None:
    """Every tensor's byte range is as long as its shape and dtype say and lies inside the file: a
    truncated or damaged file is refused from its header, before any tensor is read."""
    fix = "the file is truncated or damaged: re-download or re-save the weights"
    end_max = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
            ok = (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end
                  and isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape))
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise TokbenchError(f"tensor {name!r} has a malformed header entry", path=path, fix=fix)
        item = _ANY_DTYPE_SIZE.get(dtype)
        if item is not None and end - start != int(np.prod(shape, dtype=np.int64)) * item:
            raise TokbenchError(f"tensor {name!r} ({dtype} {shape}) should take "
                                f"{int(np.prod(shape, dtype=np.int64)) * item:,} bytes, its header gives "
                                f"{end - start:,}", path=path, fix=fix)
        end_max = max(end_max, end)
    if end_max > data_size:
        raise TokbenchError(f"the header describes {end_max:,} bytes of tensors but the file holds {max(data_size, 0):,}",
                            path=path, fix=fix)


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits (uint16), round to nearest even; NaN stays NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = 0x7FC0
    return rounded


def to_storage(x: np.ndarray, dtype: str) -> bytes:
    """float array -> raw little-endian bytes in safetensors dtype `dtype`."""
    return b"".join(storage_blocks(x, dtype))


def storage_blocks(x: np.ndarray, dtype: str, block_bytes: int = _COPY_BLOCK):
    """float array -> its raw bytes in safetensors dtype `dtype`, in blocks of whole rows (about
    `block_bytes` of float32 each): converting a 151k x 4096 table never holds more than one block's
    temporaries (the whole-array bf16 rounding took three full-size uint32 copies)."""
    if dtype not in _DTYPES:
        raise TokbenchError(f"cannot write embedding rows as {dtype}", fix="only F32/F16/BF16/F64 are supported")
    rows = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(1, -1)
    step = max(1, block_bytes // max(1, rows.shape[1] * 4))
    for i in range(0, rows.shape[0], step):
        part = rows[i:i + step]
        yield (f32_to_bf16(part) if dtype == "BF16" else np.ascontiguousarray(part, dtype=_DTYPES[dtype][0])).tobytes()


def read_tensor_f32(path: Path, name: str) -> np.ndarray:
    """One tensor of a safetensors file as float32, reading only its byte range."""
    header, base = read_header(path)
    info = header.get(name)
    if info is None:
        raise TokbenchError(f"no tensor {name!r}", path=path, fix="check the weight files match the index")
    dtype = info["dtype"]
    if dtype not in _DTYPES:
        raise TokbenchError(f"tensor {name} has dtype {dtype}, not a float type", path=path,
                            fix="quantized embeddings are not supported; dequantize the model first")
    start, end = info["data_offsets"]
    np_dtype, _ = _DTYPES[dtype]
    count = (end - start) // np_dtype.itemsize
    out = np.empty(count, dtype=np.float32)
    # converted block by block into the float32 result: no full-size raw or uint32 temporaries
    step = max(1, _COPY_BLOCK // np_dtype.itemsize)
    with open(path, "rb") as f:
        f.seek(base + start)
        for i in range(0, count, step):
            raw = np.fromfile(f, dtype=np_dtype, count=min(step, count - i))
            if len(raw) != min(step, count - i):
                raise TokbenchError(f"file ended early while reading {name}", path=path, fix="re-download the weights")
            out[i:i + len(raw)] = bf16_to_f32(raw) if dtype == "BF16" else raw
    return out.reshape(info["shape"])


def write_safetensors(dest: Path, entries: list[tuple[str, str, list[int], Callable[[], bytes] | tuple[Path, int, int]]],
                      metadata: dict | None) -> int:
    """Write a safetensors file. Each entry: (name, dtype, shape, source) where source is a callable
    returning the bytes (or an iterable of byte blocks), or (file, start, end) to copy from. Returns the data size in bytes."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for name, dtype, shape, source in entries:
        size = int(np.prod(shape, dtype=np.int64)) * _ANY_DTYPE_SIZE[dtype] if shape else _ANY_DTYPE_SIZE[dtype]
        if isinstance(source, tuple):
            size = source[2] - source[1]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    with open(dest, "wb") as out:
        out.write(len(blob).to_bytes(8, "little"))
        out.write(blob)
        for name, dtype, shape, source in entries:
            if isinstance(source, tuple):
                src, start, end = source
                with open(src, "rb") as f:
                    f.seek(start)
                    left = end - start
                    while left > 0:
                        block = f.read(min(_COPY_BLOCK, left))
                        if not block:
                            raise TokbenchError("file ended early while copying a tensor", path=src,
                                                fix="re-download the weights")
                        out.write(block)
                        left -= len(block)
            else:
                data = source()
                written = 0
                for block in ([data] if isinstance(data, (bytes, bytearray, memoryview)) else data):
                    out.write(block)
                    written += len(block)
                if written != header[name]["data_offsets"][1] - header[name]["data_offsets"][0]:
                    raise AssertionError(f"size mismatch writing {name}")
    return offset


# --- model folders ---------------------------------------------------------------------------------
@dataclass
class ModelFolder:
    """A Hugging Face causal LM folder with safetensors weights.

    embed_name / head_name: tensor names of the input embedding and (untied) output head; head_name is
    None when the head is tied to the input embedding. files: tensor name -> shard file.
    """

    path: Path
    config: dict
    files: dict[str, Path]
    index: dict | None
    embed_name: str
    head_name: str | None
    shape: tuple[int, int]
    dtype: str
    stray_head: str | None = None  # a head tensor present although the config ties it (rewritten as a copy)
    headers: dict[Path, tuple[dict, int]] = field(default_factory=dict, repr=False)

    @property
    def tied(self) -> bool:
        return self.head_name is None

    @property
    def vocab_rows(self) -> int:
        return self.shape[0]

    @property
    def hidden(self) -> int:
        return self.shape[1]

    @property
    def shards(self) -> list[Path]:
        return sorted(set(self.files.values()))

    def read_embedding(self) -> np.ndarray:
        return read_tensor_f32(self.files[self.embed_name], self.embed_name)

    def read_head(self) -> np.ndarray:
        """The output head as float32 (the input embedding when tied)."""
        if self.head_name is None:
            return self.read_embedding()
        return read_tensor_f32(self.files[self.head_name], self.head_name)


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise TokbenchError(f"not readable JSON ({exc})", path=path, fix="restore the file from the model's source") from None
    if not isinstance(data, dict):
        raise TokbenchError("expected a JSON object", path=path, fix="restore the file from the model's source")
    return data


def _text_config(config: dict) -> dict:
    """The language model's part of a config (multimodal configs nest it as text_config)."""
    inner = config.get("text_config")
    return inner if isinstance(inner, dict) and "vocab_size" in inner else config


def open_model_folder(path: str | Path) -> ModelFolder:
    """Inspect a model folder: weight files, embedding and head tensors (reads headers only)."""
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise TokbenchError("model folder not found", path=folder, fix="pass a Hugging Face model folder or a model asset name")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise TokbenchError("no config.json in the model folder", path=folder,
                            fix="pass a Hugging Face model folder (config.json + safetensors weights)")
    config = _read_json(config_path)
    index = None
    files: dict[str, Path] = {}
    if (folder / INDEX_FILE).is_file():
        index = _read_json(folder / INDEX_FILE)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise TokbenchError("index has no weight_map", path=folder / INDEX_FILE, fix="restore the index file")
        for name, shard in weight_map.items():
            p = folder / shard
            if not p.is_file():
                raise TokbenchError(f"shard {shard} named by the index is missing", path=folder / INDEX_FILE,
                                    fix="download every shard of the model")
            files[name] = p
    elif (folder / SINGLE_FILE).is_file():
        header, _ = read_header(folder / SINGLE_FILE)
        files = {k: folder / SINGLE_FILE for k in header if k != "__metadata__"}
    else:
        pickled = [n for n in _PICKLED if (folder / n).exists()] + sorted(
            p.name for p in folder.glob("pytorch_model-*.bin"))
        others = sorted(p.name for p in folder.glob("*.safetensors"))
        if pickled:
            raise TokbenchError(f"weights are pickled ({pickled[0]}); tokbench reads only safetensors",
                                path=folder / pickled[0],
                                fix="convert once with transformers: AutoModelForCausalLM.from_pretrained(p)"
                                    ".save_pretrained(out, safe_serialization=True)")
        if others:
            raise TokbenchError(f"safetensors files ({', '.join(others[:3])}) but neither {SINGLE_FILE} nor {INDEX_FILE}",
                                path=folder, fix=f"write {INDEX_FILE} or rename the single file to {SINGLE_FILE}")
        raise TokbenchError("no model weights (model.safetensors or model.safetensors.index.json)", path=folder,
                            fix="download the model's safetensors weights")

    headers = {p: read_header(p) for p in set(files.values())}
    shapes = {n: headers[p][0][n]["shape"] for n, p in files.items() if n in headers[p][0]}
    dtypes = {n: headers[p][0][n]["dtype"] for n, p in files.items() if n in headers[p][0]}
    tcfg = _text_config(config)
    vocab_size = tcfg.get("vocab_size")
    hidden = tcfg.get("hidden_size") or tcfg.get("n_embd") or tcfg.get("d_model")

    def plausible(n: str) -> bool:
        s = shapes.get(n)
        if not s or len(s) != 2:
            return False
        if isinstance(vocab_size, int) and s[0] != vocab_size:
            return False
        return not (isinstance(hidden, int) and s[1] != hidden)

    embed = next((n for n in EMBED_NAMES if n in shapes and plausible(n)), None)
    if embed is None:
        cands = [n for n in shapes if n.endswith(_EMBED_SUFFIXES) and plausible(n)]
        embed = cands[0] if len(cands) == 1 else None
    if embed is None:
        where = folder / INDEX_FILE if index else folder / SINGLE_FILE
        raise TokbenchError(f"no input embedding found (looked for {', '.join(EMBED_NAMES[:3])}, ... with "
                            f"{vocab_size} rows x {hidden})", path=where,
                            fix="pass a causal LM folder whose config.json vocab_size/hidden_size match its embedding")
    head = next((n for n in HEAD_NAMES if n in shapes and shapes[n] == shapes[embed]), None)
    tie = tcfg.get("tie_word_embeddings", config.get("tie_word_embeddings", True))
    stray = None
    if tie is not False and head is not None:
        stray, head = head, None  # transformers ties it anyway; we rewrite it as a copy
    if tie is False and head is None:
        raise TokbenchError(f"config says tie_word_embeddings=false but no output head ({', '.join(HEAD_NAMES[:2])}) "
                            "is in the weights", path=config_path, fix="set tie_word_embeddings to true or add the head")
    if dtypes[embed] not in _DTYPES:
        raise TokbenchError(f"embedding {embed} is {dtypes[embed]}, not a float dtype", path=files[embed],
                            fix="dequantize the model first")
    return ModelFolder(path=folder, config=config, files=files, index=index, embed_name=embed, head_name=head,
                       shape=(shapes[embed][0], shapes[embed][1]), dtype=dtypes[embed], stray_head=stray,
                       headers=headers)


def write_model_folder(model: ModelFolder, dest: Path, embedding: np.ndarray, head: np.ndarray | None,
                       config_updates: dict, progress: bool = True) -> None:
    """Write weights and config of `model` into the (existing, empty) folder `dest`, with `embedding`
    (and `head` for an untied model) replacing the base's, in the base's dtype; every other tensor is
    copied byte for byte, shard by shard, in the same shard layout. Non-weight files are not copied."""
    from tqdm import tqdm

    replaced: dict[str, np.ndarray] = {model.embed_name: embedding}
    if model.head_name is not None:
        if head is None:
            raise ValueError("untied model needs a head")
        replaced[model.head_name] = head
    if model.stray_head is not None:
        replaced[model.stray_head] = embedding
    rows = embedding.shape[0]
    total = 0
    weight_map: dict[str, str] = {}
    shards = model.shards
    for shard in tqdm(shards, desc="writing shards", unit="shard", disable=not progress or len(shards) < 2):
        header, base = model.headers[shard]
        entries = []
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if name in replaced:
                arr = replaced[name]
                entries.append((name, info["dtype"], [rows, info["shape"][1]],
                                (lambda a=arr, d=info["dtype"]: storage_blocks(a, d))))
            else:
                s, e = info["data_offsets"]
                entries.append((name, info["dtype"], info["shape"], (shard, base + s, base + e)))
            weight_map[name] = shard.name
        total += write_safetensors(dest / shard.name, entries, header.get("__metadata__") or {"format": "pt"})
    if model.index is not None:
        index = dict(model.index)
        meta = dict(index.get("metadata") or {})
        meta["total_size"] = total
        index["metadata"] = meta
        index["weight_map"] = {k: weight_map[k] for k in model.index["weight_map"] if k in weight_map}
        with open(dest / INDEX_FILE, "w", encoding="utf-8") as f:
            json.dump(index, f, indent=2)
            f.write("\n")
    config = json.loads(json.dumps(model.config))
    target = _text_config(config)
    target["vocab_size"] = rows
    for k, v in config_updates.items():
        target[k] = v
        if target is not config and k in config:
            config[k] = v
    with open(dest / "config.json", "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
