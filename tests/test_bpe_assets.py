"""tokbench.bpe.BPE takes asset names as well as paths, and says what to do when neither exists."""
import pytest

from tokbench.bpe import BPE
from tokbench.errors import TokbenchError


@pytest.mark.parametrize("name,ids", [("gpt2", [15496, 995]), ("llama3", [9906, 1917]),
                                      ("qwen3", [9707, 1879]), ("smollm2", [19556, 905])])
def test_asset_names(name, ids, require_asset):
    require_asset(name)
    assert BPE.from_file(name).encode("Hello world") == ids  # the data README's reference ids


def test_unknown_name_names_the_fix():
    with pytest.raises(TokbenchError, match="tokbench assets import"):
        BPE.from_file("no-such-tokenizer-anywhere")
