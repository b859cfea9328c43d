"""The surgery recipe: YAML read with `yaml.safe_load`, validated by pydantic models that refuse unknown keys.

Every validation error becomes one `TokbenchError` naming the recipe file, the YAML path of the bad value
(`ops[2].init.method`) and the fix. Paths inside the recipe (corpora, models, template files) are relative to
the recipe file's folder; a name that is no path is looked up as a tokbench asset.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tokbench.embeddings.refine import DEFAULT_LR
from tokbench.errors import TokbenchError

ROW_METHODS = ("subword", "position_mean", "omp", "tokenadapt", "mean", "zero", "random", "copy")
PAD_INITS = ("anti_hidden", "negative_mean", "mean", "zero")
ROLES = ("bos", "eos", "pad", "unk", "eot")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CorpusSpec(_Strict):
    """A named text source: a file/folder or a corpus asset name; `split` takes a slice of its documents."""

    path: str
    field: str | None = None
    split: str | None = Field(None, description='document slice "a%:b%", e.g. "0%:80%" or "80%:100%"')
    max_chars: int | None = Field(None, gt=0, le=2_000_000_000)

    @field_validator("split")
    @classmethod
    def _split(cls, v):
        if v is not None and not re.fullmatch(r"\s*\d{1,3}(\.\d+)?%?\s*:\s*\d{1,3}(\.\d+)?%?\s*", v):
            raise ValueError('split must look like "0%:80%"')
        if v is not None:
            a, b = (float(x.strip().rstrip("%")) for x in v.split(":"))
            if not 0 <= a < b <= 100:
                raise ValueError('split bounds must satisfy 0 <= a < b <= 100, e.g. "0%:80%"')
        return v


class ModelSpec(_Strict):
    path: str


class RefineSpec(_Strict):
    """After the rows are made, optimise only the new rows by self-distillation from the base model
    (`tokbench.embeddings.refine_rows`) on a named corpus; its last `held_out` share is kept for early stopping."""

    text: str = Field(min_length=1, description="a name under `corpora:`")
    seconds: float | None = Field(None, gt=0, le=86_400)
    steps: int | None = Field(None, gt=0, le=1_000_000)
    max_chars: int = Field(400_000, ge=1000, le=1_000_000_000)
    lr: float = Field(DEFAULT_LR, gt=0, le=1.0)
    batch: int = Field(4, ge=1, le=1024)
    window: int = Field(256, ge=16, le=8192)
    loss: Literal["distill", "distill_ntp", "ntp"] = "ntp"

    @model_validator(mode="after")
    def _bounded(self):
        if self.seconds is None and self.steps is None:
            raise ValueError("refine needs a bound: `seconds: S` and/or `steps: N`")
        return self


class RowInit(_Strict):
    """How the embedding (and untied head) rows of new tokens are made."""

    method: Literal["subword", "position_mean", "omp", "tokenadapt", "mean", "zero", "random", "copy"] = "subword"
    source: str | None = Field(None, alias="from", description="for copy: the token whose row is copied")
    norm_cap: Literal["median", "none"] = "median"
    refine: RefineSpec | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _copy_needs_from(self):
        if self.method == "copy" and not self.source:
            raise ValueError("method copy needs `from: <token>` (the token whose row is copied)")
        if self.method != "copy" and self.source:
            raise ValueError("`from` applies to method copy only")
        return self


class PruneOp(_Strict):
    op: Literal["prune"]
    strategy: Literal["frequency", "list", "script", "undertrained"] = "frequency"
    corpora: list[str] = Field(default_factory=list, max_length=64)
    min_count: int = Field(1, ge=1, le=1_000_000_000)
    target_vocab_size: int | None = Field(None, ge=1)
    tokens: list[str] = Field(default_factory=list)
    scripts_keep: list[str] = Field(default_factory=list)
    protect: list[str] = Field(default_factory=list, description="tokens never removed")

    @model_validator(mode="after")
    def _needs(self):
        if self.strategy == "frequency" and not self.corpora:
            raise ValueError("strategy frequency needs `corpora: [<name>, ...]` (calibration corpora)")
        if self.strategy == "list" and not self.tokens:
            raise ValueError("strategy list needs `tokens: [...]`")
        if self.strategy == "script" and not self.scripts_keep:
            raise ValueError("strategy script needs `scripts_keep: [Latin, Common, ...]`")
        return self


class StableSpec(_Strict):
    """Keep general reference corpora's ids: a learned merge that would change more than the bound's share of
    the lines of any of them is refused (tokbench.surgery.stable)."""

    corpora: list[str] = Field(min_length=1, max_length=16,
                               description="names under `corpora:` (general text, not the evaluation text)")
    max_changed_lines_pct: float = Field(1.0, ge=0.0, le=100.0)
    candidates: int = Field(4, ge=1, le=64, description="candidates learned per token kept")


class LearnSpec(_Strict):
    corpora: list[str] = Field(min_length=1, max_length=64)
    n: int = Field(gt=0, le=1_000_000)
    min_frequency: int = Field(2, ge=1)
    max_token_length: int | None = Field(None, ge=2, le=1024)
    require_letter: bool = Field(False, description="refuse learned tokens without a letter (symbol glue)")
    min_documents: int = Field(1, ge=1, le=1_000_000,
                               description="refuse learned tokens used in fewer documents of the corpora")
    keep_stable: StableSpec | None = None


class AddTokensOp(_Strict):
    op: Literal["add_tokens"]
    tokens: list[str] = Field(default_factory=list, max_length=1_000_000)
    learn: LearnSpec | None = None
    init: RowInit = RowInit()

    @model_validator(mode="after")
    def _something(self):
        if not self.tokens and self.learn is None:
            raise ValueError("add_tokens needs `tokens: [...]` or `learn: {corpora: [...], n: N}`")
        return self


class ControlToken(_Strict):
    token: str = Field(min_length=1)
    init: RowInit = RowInit(method="mean")


class SpecialTokensOp(_Strict):
    op: Literal["special_tokens"]
    roles: dict[Literal["bos", "eos", "pad", "unk", "eot"], str | None] = Field(default_factory=dict)
    rename: dict[str, str] = Field(default_factory=dict)
    add_control: list[ControlToken] = Field(default_factory=list, max_length=100_000)


class ChatTemplateOp(_Strict):
    op: Literal["chat_template"]
    source: Literal["keep", "file", "model"] = "keep"
    path: str | None = None
    model: str | None = None
    write: list[Literal["jinja", "tokenizer_config"]] = Field(default_factory=lambda: ["jinja", "tokenizer_config"],
                                                              min_length=1)

    @model_validator(mode="after")
    def _needs(self):
        if self.source == "file" and not self.path:
            raise ValueError("source file needs `path: <template.jinja>`")
        if self.source == "model" and not self.model:
            raise ValueError("source model needs `model: <name in models: or a model folder>`")
        return self


class PadVocabOp(_Strict):
    op: Literal["pad_vocab"]
    multiple_of: int = Field(gt=0, le=1 << 20)
    init: Literal["anti_hidden", "negative_mean", "mean", "zero"] = "anti_hidden"
    corpus: str | None = Field(None, description="anti_hidden: text (a name in corpora:) for the mean hidden state")
    suppress_in_generation: bool = True


class ReplaceTokenizerOp(_Strict):
    op: Literal["replace_tokenizer"]
    tokenizer: str
    method: Literal["subword", "mean", "zero", "random"] = "subword"


class UndertrainedOp(_Strict):
    op: Literal["undertrained"]
    indicator: Literal["auto", "ein_l2", "eout_cos"] = "auto"
    percentile: float = Field(2.0, gt=0, le=100)
    verify: bool = False
    max_verify: int = Field(200, ge=0, le=10_000)
    action: Literal["report", "prune", "reinit"] = "report"


class UnionOp(_Strict):
    op: Literal["union"]
    with_: list[str] = Field(alias="with", min_length=1)
    vocab: str = "union"
    tokens: dict[str, Any] = Field(default_factory=dict)
    emit: Literal["permuted", "merged"] = "permuted"
    weights: dict[str, float] | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DtypeOp(_Strict):
    """Cast the embedding + head (`tensors: embeddings`) or every floating tensor (`all`) to another float type."""

    op: Literal["dtype"]
    to: Literal["float32", "float16", "bfloat16", "float64"]
    tensors: Literal["all", "embeddings"] = "all"
    allow_lossy: bool = False


Op = Annotated[Union[PruneOp, AddTokensOp, SpecialTokensOp, ChatTemplateOp, PadVocabOp, ReplaceTokenizerOp,
                     UndertrainedOp, UnionOp, DtypeOp], Field(discriminator="op")]
OP_NAMES = ("prune", "add_tokens", "special_tokens", "chat_template", "pad_vocab", "replace_tokenizer",
            "undertrained", "union", "dtype")


class Recipe(_Strict):
    version: Literal[1]
    base: str
    seed: int = Field(0, ge=0, le=2**32 - 1)
    corpora: dict[str, CorpusSpec] = Field(default_factory=dict)
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    ops: list[Op] = Field(default_factory=list, max_length=1000)
    checks: dict[str, list[str]] = Field(default_factory=dict, description="roundtrip: [corpus names]")

    # not part of the YAML: where the recipe lives (relative paths resolve against it)
    root: Path = Field(default=Path("."), exclude=True)

    @field_validator("checks")
    @classmethod
    def _checks(cls, v):
        bad = [k for k in v if k != "roundtrip"]
        if bad:
            raise ValueError(f"unknown check {bad[0]!r}; the only check with options is roundtrip: [corpus names]")
        return v


def yaml_path(loc: tuple) -> str:
    """pydantic location ('ops', 2, 'prune', 'init', 'method') -> 'ops[2].init.method'."""
    out = ""
    prev = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif prev == "ops_index" and part in OP_NAMES:
            pass  # the discriminator tag pydantic inserts
        elif isinstance(part, str) and part.startswith("function-"):
            pass
        else:
            out += ("." if out else "") + str(part)
        prev = "ops_index" if isinstance(part, int) and out.startswith("ops[") and out.count("[") == 1 else part
    return out or "(top level)"


def _fix_for(err: dict) -> str:
    kind = err.get("type", "")
    loc = err.get("loc", ())
    if kind == "extra_forbidden":
        return "remove this key (unknown keys are refused; check its spelling against the recipe schema in README)"
    if kind == "missing":
        return "add this key"
    if kind == "union_tag_invalid" or (kind == "union_tag_not_found"):
        return f"set `op:` to one of {', '.join(OP_NAMES)}"
    if kind == "literal_error":
        return "use one of the allowed values"
    if kind == "value_error":
        return "see the recipe schema in README (tokbench surgery)"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"give a value of the right type ({err.get('msg', '').lower()})"
    if loc and loc[-1] == "version":
        return "set version: 1"
    return "correct the value"


def _format_error(exc: ValidationError, source: str) -> TokbenchError:
    errs = exc.errors(include_url=False)
    err = errs[0]
    msg = err.get("msg", "invalid value")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    more = f" (and {len(errs) - 1} more problem{'s' if len(errs) > 2 else ''})" if len(errs) > 1 else ""
    return TokbenchError(f"{yaml_path(tuple(err.get('loc', ())))}: {msg}{more}", path=source, fix=_fix_for(err))


def parse_recipe(data: Any, source: str = "<recipe>", root: Path | None = None) -> Recipe:
    """Validate an already loaded recipe mapping."""
    if not isinstance(data, dict):
        raise TokbenchError("the recipe is not a YAML mapping", path=source,
                            fix="write `version: 1`, `base: <model>` and `ops: [...]` as top-level keys")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise _format_error(exc, source) from None
    return recipe.model_copy(update={"root": root or Path(".")})


def load_recipe(path: str | Path) -> tuple[Recipe, str]:
    """(validated recipe, raw YAML text) of a recipe file."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TokbenchError("recipe file not found", path=p, fix="pass the path of a YAML recipe") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokbenchError(f"recipe not readable ({exc})", path=p, fix="pass a UTF-8 YAML file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TokbenchError(f"not valid YAML{where} ({problem})", path=p, fix="fix the YAML syntax") from None
    return parse_recipe(data, str(p), p.absolute().parent), text


__all__ = ["AddTokensOp", "ChatTemplateOp", "CorpusSpec", "LearnSpec", "ModelSpec", "OP_NAMES", "PadVocabOp",
           "PruneOp", "Recipe", "ReplaceTokenizerOp", "RowInit", "SpecialTokensOp", "UndertrainedOp", "UnionOp",
           "load_recipe", "parse_recipe", "yaml_path"]
