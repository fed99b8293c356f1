"""Write zoo/README.md, the table of every zoo entry, from the entries themselves (never by hand).

    python scripts/zoo_readme.py           # (re)write zoo/README.md
    python scripts/zoo_readme.py --check   # exit 1 if the committed zoo/README.md is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmv_zoo.catalog.listing import zoo_readme
from mmv_zoo.entry import ZOO_DIR

README = ZOO_DIR / "README.md"
HOW = "regenerate it with `make zoo-readme` (python scripts/zoo_readme.py)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if zoo/README.md is stale")
    parser.add_argument("--out", type=Path, default=README, help="file to write (default: zoo/README.md)")
    args = parser.parse_args(argv)
    text = zoo_readme()
    if args.check:
        current = args.out.read_text() if args.out.is_file() else ""
        if current != text:
            sys.stderr.write(f"{args.out}: stale (the entries changed); {HOW}\n")
            return 1
        return 0
    args.out.write_text(text)
    sys.stdout.write(f"wrote {args.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
