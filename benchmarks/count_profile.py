"""Pre-token counting alone (the first phase of `tokbench train`): wall and CPU seconds of `count_inputs`.

    python benchmarks/count_profile.py FILE [THREADS]

Run it under `perf record` to see where counting spends its time; compare two checkouts by running each with
its own PYTHONPATH (reports/benchmarks.md, "Packed-key counting").
"""
import sys
import time

from tokbench.bpe.train import count_inputs, new_counter


def main() -> None:
    path, threads = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1
    counter = new_counter("gpt2")
    t0, c0 = time.perf_counter(), time.process_time()
    count_inputs(path, counter, num_threads=threads, progress=False)
    print(f"wall {time.perf_counter() - t0:.2f} s, cpu {time.process_time() - c0:.2f} s, "
          f"{len(counter)} distinct pre-tokens, {counter.total()} in all")


if __name__ == "__main__":
    main()
