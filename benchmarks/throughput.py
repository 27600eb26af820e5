"""Measure train and inference throughput of the three models; same as `signver benchmark`.

    python benchmarks/throughput.py --accelerator cpu
    python benchmarks/throughput.py --accelerator gpu --precision bf16-mixed --compile
    python benchmarks/throughput.py --accelerator hpu --precision bf16-mixed   # inside Habana's container

Writes one JSON file of records under benchmarks/results/; then `python benchmarks/compare.py`.
"""

import sys

from signver_torch.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
