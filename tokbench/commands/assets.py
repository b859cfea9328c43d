"""`tokbench assets ...` (implemented by the assets layer)."""
import click


@click.group()
def assets() -> None:
    """Register, list, locate and fetch tokenizers, corpora and models."""
