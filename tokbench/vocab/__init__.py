"""The vocabulary alignment core: Vocabulary, loaders, align()."""
from tokbench.vocab.align import Alignment, align
from tokbench.vocab.load import load_vocabulary
from tokbench.vocab.numbers import NumberPolicy, number_policy
from tokbench.vocab.report import align_report, inspect_report
from tokbench.vocab.vocabulary import Kind, Style, Vocabulary

__all__ = ["Alignment", "Kind", "NumberPolicy", "Style", "Vocabulary", "align", "align_report",
           "inspect_report", "load_vocabulary", "number_policy"]
