"""List the cells a configuration asks for, with their paths: the grid as Snakemake sees it.

    python scripts/cells.py                                  # counts per kind
    python scripts/cells.py dip                              # every DIP cell's folder
    python scripts/cells.py sample start=dip t0=100 mode=full --file metrics.csv
    python scripts/cells.py --left-out                       # starts no model can serve

Any printed path (with a file name) is a Snakemake target that builds that one cell.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dipddpm import grid
from dipddpm.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", nargs="?", choices=sorted(grid.KINDS), help="cell kind")
    parser.add_argument("filters", nargs="*", metavar="AXIS=VALUE", help="keep matching cells")
    parser.add_argument("--config", default=ROOT / "config" / "config.yaml", type=Path)
    parser.add_argument("--file", default="", help="append this file name to each folder")
    parser.add_argument(
        "--left-out", action="store_true", help="list the starts left out of the grid, and why"
    )
    args = parser.parse_intermixed_args()
    config = load_config(args.config, ROOT / "workflow" / "schemas" / "config.schema.yaml")
    if args.left_out:
        for row in grid.left_out_cells(config):
            print(", ".join(f"{k}={v}" for k, v in row.items()))
        return
    cells = grid.cells(config)
    if args.kind is None:
        for kind, found in cells.items():
            print(f"{kind:12s} {len(found):6d}")
        return
    wanted = dict(f.split("=", 1) for f in args.filters)
    unknown = sorted(set(wanted) - set(grid.KINDS[args.kind].axes))
    if unknown:
        parser.error(
            f"{args.kind} cells have no axes {unknown}; axes: {grid.KINDS[args.kind].axes}"
        )
    for cell in cells.get(args.kind, []):
        if all(cell[k] == grid.canonical(v) for k, v in wanted.items()):
            print(grid.KINDS[args.kind].path(cell, args.file or None))


if __name__ == "__main__":
    main()
