"""A SentencePiece BPE .model (Mistral v3: byte fallback, identity normaliser, dummy prefix) as a tokenizer.json
folder transformers loads, checked id for id against the sentencepiece library on the matrix's held-out texts.

    python benchmarks/convert_sentencepiece_bpe.py MODEL OUT_DIR

Needs the `sentencepiece` package (not a tokbench dependency; the matrix run used a throwaway venv on the
PYTHONPATH). Merges are ordered by the score of the merged piece, as SentencePiece's BPE encoder applies them.
The control pieces (<unk>, <s>, </s>) become added tokens, as in Hugging Face's own Mistral files, so a literal
"<unk>" in text is matched as the token there; the check therefore compares texts with "<unk>" spelled "<UNK>".
"""
import shutil
import sys

import sentencepiece
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
from transformers import PreTrainedTokenizerFast


def convert(model: str) -> tuple[Tokenizer, sentencepiece.SentencePieceProcessor]:
    sp = sentencepiece.SentencePieceProcessor(model_file=model)
    n = sp.get_piece_size()
    vocab = {sp.id_to_piece(i): i for i in range(n)}
    merges = []
    for piece, i in vocab.items():
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or len(piece) < 2:
            continue
        for k in range(1, len(piece)):
            a, b = piece[:k], piece[k:]
            if a in vocab and b in vocab:
                merges.append((-sp.get_score(i), i, vocab[a], vocab[b], a, b))
    merges.sort()
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[(a, b) for *_, a, b in merges], byte_fallback=True,
                              unk_token=sp.id_to_piece(sp.unk_id()), fuse_unk=True))
    tk.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tk.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    tk.add_special_tokens([AddedToken(sp.id_to_piece(i), special=True, normalized=False) for i in range(n)
                           if sp.is_control(i) or sp.is_unknown(i)])
    return tk, sp


def check(tk: Tokenizer, sp) -> int:
    from tokbench.eval import load_eval_text
    from tokbench.surgery.ops import read_corpus

    texts = [load_eval_text("wikitext2-test", 20_000)[0], load_eval_text("gsm8k-test", 20_000)[0],
             "\n".join(read_corpus("code-python", None, "80%:100%", None, "held-out code"))[:20_000],
             "Hello world  12345 d\u00e9j\u00e0 \U0001f642\n  def f(x):\n\treturn x"]
    for t in texts:
        t = t.replace("<unk>", "<UNK>")
        a, b = tk.encode(t, add_special_tokens=False).ids, sp.encode(t)
        if a != b or tk.decode(a) != sp.decode(b):
            j = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            sys.exit(f"differs from sentencepiece at token {j}: {a[j:j + 4]} vs {b[j:j + 4]}")
    return len(texts)


def main() -> None:
    model, out = sys.argv[1], sys.argv[2]
    tk, sp = convert(model)
    n = check(tk, sp)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=sp.id_to_piece(sp.bos_id()),
                                  eos_token=sp.id_to_piece(sp.eos_id()), unk_token=sp.id_to_piece(sp.unk_id()))
    shutil.rmtree(out, ignore_errors=True)
    tok.save_pretrained(out)
    print(f"{out}: {sp.get_piece_size():,} pieces, identical to sentencepiece on {n} texts")


if __name__ == "__main__":
    main()
