"""Row initialisers for tokens a model has never seen, shared by every capability that changes a vocabulary
(transplant, surgery, dynamic merging). Nothing here imports a capability.

The interface::

    from tokbench.embeddings import NewTokens, RowStats, make_rows, METHODS

    req = NewTokens(ids=[...], decompositions=[[base ids], ...], token_bytes=[b"..", ...])
    req = NewTokens.from_alignment(al)             # or: the new-only tokens of an Alignment
    res = make_rows("subword", base_rows, req, seed=0)
    res.rows        # (len(req), d) float32, in request order
    res.records     # one dict per row: method, id, bytes (hex), norm_capped, and how it was made
    res.params, res.held_out, res.norm_capped      # chosen parameters, held-out scores, rows shrunk

Methods (METHODS):

- subword: mean of the decomposition's base rows (mean row when a token has no pieces).
- mean, zero, random: the reference mean row, zeros, or per-dimension mean + std * N(0, 1) (default_rng(seed)).
- omp: sparse code of each token's vector over anchor vectors in another space, applied to the anchors'
  base rows (`space=donor_space(donor_rows, new->donor id)` or `table_space(vecs, id->row)`;
  `anchors=(keys in the space, base ids)`), k / ridge chosen by held-out reconstruction, shrunk, capped and
  blended with the subword mean.
- tokenadapt: length- and similarity-weighted pieces mixed with FAISS top-k neighbours in an `AuxSpace`
  (`aux_space(base_vocab, new_vocab, ids)`, an auxiliary sentence embedder).
- copy: the row of another token (`sources=[base id, ...]`).
- position_mean: weighted mean of the pieces' rows by position (`weights=`: n -> weights, default n..1;
  dynamic merging's constituents). For "OMP over the model's own table", pass
  `space=table_space(np.concatenate([base_rows, query_vectors]), id -> row)`: the base rows are the space.
- norm_mean: the pieces' mean (weights as position_mean, default equal) rescaled to `scale` x their mean norm
  (a mean of rows pointing different ways is shorter than a real row; `geometric(r)`: weights r**i).

Statistics: `RowStats.of(base_rows, reference)` gives the mean, std and norm cap (median norm) of the reference
rows (default every row); pass `stats=` to share one across calls. `cap=True` caps any method's rows at the
typical reference norm (omp and tokenadapt always cap). `NewTokens.subword_only` forces the decomposition
mean for chosen ids. `assemble(size, fill, parts)` builds a full table from copied and new rows.
Refinement: `refine_rows(teacher_dir, student_dir, new_ids, text, seconds=.., steps=..)` optimises only the
new rows of an edited model folder against the model before the edit (tokbench/embeddings/refine.py; text may
be a mapping domain -> text, none of whose held-out slices may get worse); returns `Refined(rows, head_rows,
record)`.
Numerics are those transplant has always used: same operations in the same order, same seeds.
"""
from tokbench.embeddings.aux import DEFAULT_AUX, AuxEmbedder, AuxSpace, aux_space, token_texts
from tokbench.embeddings.baselines import baseline_rows, fill_row
from tokbench.embeddings.copy import assemble, copy_rows
from tokbench.embeddings.make import METHODS, make_rows
from tokbench.embeddings.norms import cap_mask, cap_norms
from tokbench.embeddings.omp import (SpaceLookup, apply_codes, batch_omp, candidate_ks, centred_cosine, choose_omp,
                                     donor_space, omp_rows, table_space)
from tokbench.embeddings.refine import LOSSES as REFINE_LOSSES, Refined, check_refine_args, refine_rows
from tokbench.embeddings.request import NewRows, NewTokens, RowStats
from tokbench.embeddings.subword import geometric, linear_decay, norm_mean_rows, position_mean_rows, subword_rows
from tokbench.embeddings.tokenadapt import tokenadapt_rows

__all__ = ["DEFAULT_AUX", "METHODS", "REFINE_LOSSES", "Refined", "check_refine_args", "refine_rows", "AuxEmbedder", "AuxSpace", "NewRows", "NewTokens", "RowStats", "SpaceLookup",
           "apply_codes", "assemble", "aux_space", "baseline_rows", "batch_omp", "candidate_ks", "cap_mask",
           "cap_norms", "centred_cosine", "choose_omp", "copy_rows", "donor_space", "fill_row", "geometric",
           "linear_decay", "make_rows", "norm_mean_rows", "omp_rows", "position_mean_rows", "subword_rows",
           "table_space", "token_texts", "tokenadapt_rows"]
