"""Hugging Face causal LM folder (as transplant and surgery write it) -> one GGUF file for llama.cpp and friends.

Supported architectures: LlamaForCausalLM and MistralForCausalLM (GGUF arch `llama`, q/k rows permuted
to llama.cpp's rotary layout), Qwen2ForCausalLM (`qwen2`) and Qwen3ForCausalLM (`qwen3`); any other is
refused in one line. Tensors keep their dtype (F32, F16, BF16) except 1-D ones (norms, biases), which are
written as F32 as llama.cpp expects; tensors are streamed from the safetensors shards one at a time.

Tokenizer (tokbench/export/gguf_tokenizer.py): byte-level BPE tokenizer.json files (GPT-2, Llama 3, Qwen, SmolLM
families) as GGUF model `gpt2`, SentencePiece-style BPE ones (Llama 2, Mistral) as model `llama` with scores and
byte tokens, Unigram ones (XLM-R) as model `t5` with scores and the precompiled charsmap, WordPiece ones (BERT) as
model `bert` in llama.cpp's phantom-space spelling; token types, merges, the pre-tokenizer name, bos / eos /
end-of-turn / pad / unk (and for t5 / bert sep / mask) ids (config.json, generation_config.json and the tokenizer's
own files, which transplant keeps consistent), add_bos / add_eos (/ add_sep) from the post-processor, the chat
template. Written to a temporary sibling and renamed into place.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np

from tokbench.errors import TokbenchError
from tokbench.outputs import clean_leftovers, umask
from tokbench.export.gguf_tokenizer import (BYTE, PRE_TOKENIZERS, _add_bos, add_special,  # noqa: F401
                                            metaspace_prepends, pre_tokenizer_name, special_ids, tokenizer_metadata)
from tokbench.vocab.chat import read_template
from tokbench.vocab.model_io import _text_config, bf16_to_f32, open_model_folder

# HF architecture -> (GGUF architecture, permute q/k for llama.cpp's rotary layout)
ARCHITECTURES = {"LlamaForCausalLM": ("llama", True), "MistralForCausalLM": ("llama", True),
                 "Qwen2ForCausalLM": ("qwen2", False), "Qwen3ForCausalLM": ("qwen3", False)}

_SKIP = ("rotary_emb.inv_freq",)
_NP = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}  # BF16 travels as its raw bits


def _need_gguf():
    if importlib.util.find_spec("gguf") is None:
        raise TokbenchError("tokbench export gguf needs the Python package gguf, which is not installed",
                            fix="pip install 'tokbench[gguf]'")
    import gguf

    return gguf


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """HF's rotate-half q/k rows -> llama.cpp's interleaved rotary layout (per head: pairs (i, i + d/2))."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Inverse of the q/k permutation (to compare a GGUF tensor with the HF one)."""
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def export_gguf(folder, out, *, pre_tokenizer: str | None = None, overwrite: bool = False,
                progress: bool = True) -> dict:
    """Convert the Hugging Face model folder `folder` into the GGUF file `out`; return a summary.

    pre_tokenizer: llama.cpp pre-tokenizer name to write instead of the one looked up (needed when the
    tokenizer's pre-tokenizer is not a known one). The file is written to a temporary sibling and renamed.
    """
    gguf = _need_gguf()
    folder = Path(folder)
    model = open_model_folder(folder)
    out = Path(out)
    if out.suffix != ".gguf":
        raise TokbenchError("the output name should end in .gguf", path=out, fix="pass -o NAME.gguf")
    if out.is_dir():
        raise TokbenchError("the output is a folder", path=out, fix="pass a file name ending in .gguf")
    if out.exists() and not overwrite:
        raise TokbenchError("the output file exists", path=out, fix="pass --overwrite or another -o")
    if out.resolve().parent == folder.resolve() and out.exists():
        raise TokbenchError("the output would replace a file of the input folder", path=out, fix="write it elsewhere")
    config = model.config
    tcfg = _text_config(config)
    hf_arch = (config.get("architectures") or [None])[0]
    if hf_arch not in ARCHITECTURES:
        raise TokbenchError(f"GGUF export supports {', '.join(ARCHITECTURES)}; this model is {hf_arch}",
                            path=folder / "config.json", fix="convert other architectures with llama.cpp's "
                            "convert_hf_to_gguf.py")
    arch, permute = ARCHITECTURES[hf_arch]
    scaling = tcfg.get("rope_scaling") or {}
    rope_type = scaling.get("rope_type", scaling.get("type")) if isinstance(scaling, dict) else None
    if rope_type not in (None, "default", "linear"):
        raise TokbenchError(f"rope scaling {rope_type!r} is not exported", path=folder / "config.json",
                            fix="convert this model with llama.cpp's convert_hf_to_gguf.py")
    heads = int(tcfg["num_attention_heads"])
    kv = int(tcfg.get("num_key_value_heads") or heads)
    hidden = int(tcfg["hidden_size"])
    head_dim = int(tcfg.get("head_dim") or hidden // heads)
    layers = int(tcfg["num_hidden_layers"])
    rope = tcfg.get("rope_parameters") if isinstance(tcfg.get("rope_parameters"), dict) else {}
    theta = rope.get("rope_theta", tcfg.get("rope_theta", 10000.0))

    tok = tokenizer_metadata(folder, model.vocab_rows, pre=pre_tokenizer)
    template, _ = read_template(folder)
    ids = special_ids(folder, tok["vocab"], template)
    for role, rid in (tok.get("roles") or {}).items():
        if role != "cls":
            ids[role] = rid
    if tok["model"] == "bert":  # llama.cpp's WPM tokenizer starts a text with bos: BERT's [CLS]; eos: its [SEP]
        ids["bos"] = ids["bos"] if ids["bos"] is not None else tok["roles"]["cls"]
        ids["eos"] = ids["eos"] if ids["eos"] is not None else tok["roles"]["sep"]
    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.upper()), layers)
    plan = []
    for name, shard in model.files.items():
        if name.endswith(_SKIP) or name == model.stray_head:
            continue
        gname = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise TokbenchError(f"tensor {name} has no GGUF name for architecture {arch}", path=shard,
                                fix="convert this model with llama.cpp's convert_hf_to_gguf.py")
        header, base = model.headers[shard]
        info = header[name]
        if info["dtype"] not in ("F32", "F16", "BF16"):
            raise TokbenchError(f"tensor {name} is {info['dtype']}", path=shard, fix="export float weights only")
        plan.append((gname, name, shard, base, info))
    dtypes = {p[4]["dtype"] for p in plan if len(p[4]["shape"]) > 1}
    ftype = {frozenset({"F32"}): gguf.LlamaFileType.ALL_F32, frozenset({"F16"}): gguf.LlamaFileType.MOSTLY_F16,
             frozenset({"BF16"}): gguf.LlamaFileType.MOSTLY_BF16}.get(frozenset(dtypes), gguf.LlamaFileType.GUESSED)

    def tensor(name, shard, base, info):
        s, e = info["data_offsets"]
        arr = np.memmap(shard, dtype=_NP[info["dtype"]], mode="r", offset=base + s, shape=tuple(info["shape"]))
        if len(info["shape"]) <= 1:
            return bf16_to_f32(np.asarray(arr)) if info["dtype"] == "BF16" else np.asarray(arr, dtype=np.float32)
        if permute and name.endswith("self_attn.q_proj.weight"):
            return _permute(np.asarray(arr), heads)
        if permute and name.endswith("self_attn.k_proj.weight"):
            return _permute(np.asarray(arr), kv)
        return arr

    clean_leftovers(out, [f".{out.name}.*.tmp"])
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    try:
        w = gguf.GGUFWriter(str(tmp), arch)
        w.add_name(folder.name)
        w.add_context_length(int(tcfg.get("max_position_embeddings") or 4096))
        w.add_embedding_length(hidden)
        w.add_block_count(layers)
        w.add_feed_forward_length(int(tcfg["intermediate_size"]))
        w.add_head_count(heads)
        w.add_head_count_kv(kv)
        w.add_rope_freq_base(float(theta))
        w.add_layer_norm_rms_eps(float(tcfg.get("rms_norm_eps", 1e-6)))
        w.add_rope_dimension_count(head_dim)
        if head_dim != hidden // heads or arch == "qwen3":
            w.add_key_length(head_dim)
            w.add_value_length(head_dim)
        if rope_type == "linear":
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(float(scaling["factor"]))
        w.add_vocab_size(model.vocab_rows)
        w.add_file_type(ftype)
        w.add_tokenizer_model(tok["model"])
        w.add_tokenizer_pre(tok["pre"])
        w.add_token_list(tok["tokens"])
        w.add_token_types(tok["types"])
        w.add_token_merges(tok["merges"])
        if tok["scores"] is not None:
            w.add_token_scores(tok["scores"])
        if tok["add_space_prefix"] is not None:
            w.add_add_space_prefix(tok["add_space_prefix"])
        if tok.get("remove_extra_whitespaces") is not None:
            w.add_remove_extra_whitespaces(tok["remove_extra_whitespaces"])
        if tok.get("charsmap"):
            w.add_precompiled_charsmap(tok["charsmap"])
        for key in ("lowercase", "strip_accents"):  # llama.cpp's WPM normaliser options (no gguf helper yet)
            if key in tok:
                w.add_bool(f"tokenizer.ggml.normalizer.{key}", tok[key])
        for role, add in (("bos", w.add_bos_token_id), ("eos", w.add_eos_token_id), ("eot", w.add_eot_token_id),
                          ("pad", w.add_pad_token_id), ("unk", w.add_unk_token_id), ("sep", w.add_sep_token_id),
                          ("mask", w.add_mask_token_id)):
            if isinstance(ids.get(role), int) and 0 <= ids[role] < model.vocab_rows:
                add(ids[role])
        adds = add_special(folder, tok["tokenizer_json"], ids)
        w.add_add_bos_token(adds["bos"])
        w.add_add_eos_token(adds["eos"])
        if "roles" in tok:  # t5 / bert: llama.cpp's reranking prompt puts sep between the two texts
            w.add_add_sep_token(adds["sep"])
        if template:
            w.add_chat_template(template)
        for gname, name, shard, base, info in plan:
            vector = len(info["shape"]) <= 1
            dt = np.dtype(np.float32 if vector else _NP[info["dtype"]])
            raw = gguf.GGMLQuantizationType.BF16 if info["dtype"] == "BF16" and not vector else None
            w.add_tensor_info(gname, info["shape"], dt, int(np.prod(info["shape"])) * dt.itemsize, raw_dtype=raw)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        from tqdm import tqdm

        for gname, name, shard, base, info in tqdm(plan, desc="writing gguf", unit="tensor", disable=not progress):
            arr = tensor(name, shard, base, info)
            w.write_tensor_data(np.ascontiguousarray(arr))
            del arr
        w.close()
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"out": str(out), "architecture": arch, "hf_architecture": hf_arch, "tensors": len(plan),
            "vocab": model.vocab_rows, "tokenizer_model": tok["model"], "tokenizer_pre": tok["pre"],
            "merges": len(tok["merges"]), "scores_from": tok["scores_from"],
            "token_types": {t: tok["types"].count(v) for t, v in (("normal", 1), ("unknown", 2), ("control", 3),
                                                                  ("user_defined", 4), ("unused", 5), ("byte", 6))},
            "special_ids": ids, "add_bos": adds["bos"], "add_eos": adds["eos"],
            "add_sep": adds["sep"] if "roles" in tok else None, "add_space_prefix": tok["add_space_prefix"],
            "remove_extra_whitespaces": tok.get("remove_extra_whitespaces"),
            "precompiled_charsmap_bytes": len(tok.get("charsmap") or b""),
            "normalizer": {k: tok[k] for k in ("lowercase", "strip_accents") if k in tok} or None,
            "chat_template": bool(template), "file_type": ftype.name,
            "bytes": out.stat().st_size, "warnings": _warnings(tok, ids)}


def _warnings(tok: dict, ids: dict) -> list[str]:
    """What the file holds but llama.cpp will not do as the tokenizer does."""
    out = []
    if tok["model"] == "t5" and BYTE in tok["types"]:
        out.append(f"llama.cpp's t5 (Unigram) tokenizer has no byte fallback: text the pieces do not cover becomes unk "
                   f"(id {ids.get('unk')}) there, not <0xXX> byte tokens")
    if tok["model"] == "llama" and metaspace_prepends(tok["tokenizer_json"] or {}):
        out.append("llama.cpp adds the \u2581 space prefix to every text, but this tokenizer.json's Metaspace adds it "
                   "only when the text does not start with a space: texts that start with a space (\" x\") get one "
                   "\u2581 more there")
    return out
