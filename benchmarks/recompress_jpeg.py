"""Write a copy of an image-folder dataset with every image re-encoded as JPEG at a lower
quality (Pillow, 4:2:0 chroma), to measure how much compression costs a recipe.

    python benchmarks/recompress_jpeg.py ../shared/datasets/cifar10/train /tmp/q50/train --quality 50
    python benchmarks/bench_cifar10.py --data /tmp/q50/train epochs=8

The copy keeps the class folders and file names, so ``bench_cifar10.py`` draws the same
45,000 / 5,000 split from it. Write it outside the repository.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image


def recompress(source: Path, target: Path, quality: int) -> int:
    count = 0
    for path in sorted(source.glob("*/*")):
        if not path.is_file():
            continue
        out = target / path.parent.name / (path.stem + ".jpg")
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            image.convert("RGB").save(out, quality=quality, subsampling=2)
        count += 1
    return count


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="image folder: SOURCE/<class>/<image>")
    parser.add_argument("target", type=Path, help="where to write the copy")
    parser.add_argument("--quality", type=int, default=50, help="JPEG quality, 1-95")
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        parser.error(f"no such folder: {args.source}")
    if not 1 <= args.quality <= 95:
        parser.error(f"--quality must be in 1-95, got {args.quality}")
    print(f"{recompress(args.source, args.target, args.quality)} images written to {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
