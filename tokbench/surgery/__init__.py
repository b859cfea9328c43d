"""`tokbench surgery`: mergekit-style post-hoc vocabulary surgery from a YAML recipe (see core.run)."""
from tokbench.surgery.core import plan, run
from tokbench.surgery.recipe import Recipe, load_recipe, parse_recipe

__all__ = ["Recipe", "load_recipe", "parse_recipe", "plan", "run"]
