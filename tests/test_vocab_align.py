"""align() on real shared tokenizers: counts cross-checked with the testbed notes, roles, numbers,
decompositions that rebuild each new token's bytes, and speed."""
from __future__ import annotations

import time

from tokbench.vocab import Kind, align, align_report, load_vocabulary


def test_smollm2_to_gpt2_matches_testbed_counts(require_asset):
    # ../shared/notes: 36,961 shared token strings, 13,296 new (both byte-level with Ġ)
    a = align(load_vocabulary(require_asset("smollm2")), load_vocabulary(require_asset("gpt2")))
    # the notes count <|endoftext|> as a shared string; tokbench maps it as a special by role
    assert len(a.shared) == 36960 and a.roles == {"bos": (50256, 0), "eos": (50256, 0)}
    assert len(a.new_only) == 13296
    # SmolLM2 has no token for 21 byte values (e.g. 0xC0); GPT-2's single-byte tokens for them
    # cannot be decomposed and are reported, not silently mapped
    assert len(a.uncovered) == 21
    assert all(len(a.new.token_bytes[i]) == 1 and not a.decompositions[i] for i in a.uncovered)
    for i in a.new_only:
        if i in a.uncovered:
            continue
        pieces = a.decompositions[i]
        assert b"".join(a.old.token_bytes[j] for j in pieces) == a.new.token_bytes[i]


def test_decompositions_rebuild_new_tokens_across_styles(require_asset):
    # SentencePiece (metaspace, byte fallback) -> byte-level BPE
    old, new = load_vocabulary(require_asset("llama2")), load_vocabulary(require_asset("qwen3"))
    a = align(old, new)
    assert len(a.shared) > 10000 and len(a.new_only) > 100000
    for i in a.new_only[::50]:
        rebuilt = b"".join(old.token_bytes[j] for j in a.decompositions[i])
        assert rebuilt == old.surface(new.key(i))[0]
    # specials by role: Qwen3 declares no bos; its eos (<|im_end|>) maps to Llama 2's </s>
    assert "bos" not in a.roles
    assert (new.tokens[a.roles["eos"][0]], old.tokens[a.roles["eos"][1]]) == ("<|im_end|>", "</s>")


def test_roles_map_between_sentencepiece_families(require_asset):
    a = align(load_vocabulary(require_asset("llama2")), load_vocabulary(require_asset("mistral-v3")))
    assert {r: (a.new.tokens[i], a.old.tokens[j]) for r, (i, j) in a.roles.items()} == {
        "bos": ("<s>", "<s>"), "eos": ("</s>", "</s>"), "unk": ("<unk>", "<unk>")}
    # Mistral v3 control tokens are kept one by one; Llama 2 has none of them
    contents = {a.new.tokens[i] for i, j in a.special_map.items() if j is None}
    assert {"[INST]", "[/INST]", "[TOOL_CALLS]"} <= contents


def test_wordpiece_and_unigram_alignment(require_asset):
    old, new = load_vocabulary(require_asset("bert")), load_vocabulary(require_asset("xlm-r"))
    a = align(old, new)
    assert len(a.shared) > 10000
    assert a.roles["unk"][1] == old.unk_id and old.tokens[old.unk_id] == "[UNK]"
    assert a.roles["pad"] == (new.specials["pad"], old.specials["pad"])
    # xlm-r "▁world" matches BERT "world" (a word start); "##s" matches xlm-r "s" (no ▁)
    assert a.shared[new.keys[(b"world", True)]] == old.tokens.index("world")
    assert a.shared[new.keys[(b"s", False)]] == old.tokens.index("##s")
    for i in a.new_only[::200]:
        pieces = a.decompositions[i]
        if old.unk_id in pieces:
            continue
        assert old.word_start[pieces[0]] == new.key(i)[1]
        assert all(not old.word_start[j] for j in pieces[1:])
        assert b"".join(old.token_bytes[j] for j in pieces) == new.key(i)[0]


def test_number_policies_of_families(require_asset):
    policy = {n: load_vocabulary(require_asset(n)) for n in ("gpt2", "llama3", "qwen3", "llama2")}
    report = {n: align_report(align(policy["gpt2"], v))["numbers"]["new"]["policy"]
              for n, v in policy.items()}
    assert report == {"gpt2": "none", "llama3": "groups-of-3", "qwen3": "single", "llama2": "single"}


def test_qwen3_against_xlmr_takes_seconds(require_asset):
    t0 = time.perf_counter()
    old, new = load_vocabulary(require_asset("xlm-r")), load_vocabulary(require_asset("qwen3"))
    a = align(old, new)
    report = align_report(a)
    elapsed = time.perf_counter() - t0
    assert report["counts"]["shared"] + report["counts"]["new_only"] == sum(
        1 for k in new.kinds if k in (Kind.NORMAL, Kind.BYTE))
    assert elapsed < 30, f"qwen3 vs xlm-r alignment took {elapsed:.1f} s"
