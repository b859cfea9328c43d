"""`tokbench vocab ...`: inspect and align vocabularies."""
import click


@click.group()
def vocab() -> None:
    """Inspect a vocabulary or align two of them."""
