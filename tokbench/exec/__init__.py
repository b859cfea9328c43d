"""Map / reduce over shards for every count (DESIGN.md, layer `exec/`): shards cut at document
boundaries (shards.py), the executors inline / process / ray (executors.py), and counting into
hash-partitioned Rust count tables (count.py). The capabilities and bpe/ call this; it imports none
of them."""
from tokbench.exec.count import DEFAULT_PARTITIONS, CountTask, TableSpec, run_count
from tokbench.exec.executors import ENGINES, Executor, make_executor
from tokbench.exec.shards import Shard, plan_shards

__all__ = ["DEFAULT_PARTITIONS", "ENGINES", "CountTask", "Executor", "Shard", "TableSpec", "make_executor",
           "plan_shards", "run_count"]
