"""Command groups of the CLI, one module each. Add a group here to expose it."""
from tokbench.commands.assets import assets
from tokbench.commands.vocab import vocab

COMMANDS = [assets, vocab]
