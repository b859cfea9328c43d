"""`tokbench surgery`: post-hoc vocabulary surgery on a trained causal LM (issue 11)."""
