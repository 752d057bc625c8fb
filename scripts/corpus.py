"""The King James Bible as plain text: the corpus of hardwire's bundled models.

The text comes from Debian's ``bible-kjv`` package (public domain), whose ``bible`` program dumps
every verse as ``Book1:1 text``. We drop the verse labels and keep one verse per line, which leaves
4,137,850 characters drawn from 63 distinct ones (letters, punctuation, space and newline; no
digits). Nothing here depends on the clock, the locale or the network, so two machines with the
same package produce the same bytes.

Split: the fifteen books from Colossians to Revelation (5.0 % of the text) are held out; everything
before them is training text. Two small slices are committed under ``data/``:

- ``kjv-calibration.txt``: whole verses from evenly spaced places in the training text, used to
  calibrate static activation scales;
- ``kjv-heldout.txt``: whole verses from evenly spaced places in the held-out text, used by
  ``hardwire quality`` to compare the integer model with the float one.

Run ``python scripts/corpus.py`` to (re)write those two files.
"""

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["HELDOUT_FIRST_BOOK", "verses", "split", "alphabet", "slice_verses", "write_slices"]

BIBLE_RANGE = "Gen1:1-Rev22:21"
HELDOUT_FIRST_BOOK = "Col"
INSTALL_HINT = ("the `bible` program from Debian's bible-kjv package is missing: install it with "
                "`sudo apt-get install bible-kjv` (it provides /usr/bin/bible and "
                "/usr/lib/bible.data)")
_LABEL = re.compile(r"([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)")
_REPO = Path(__file__).resolve().parent.parent
DATA_DIR = _REPO / "data"
CALIBRATION_BYTES = 4096
HELDOUT_BYTES = 8192
SLICE_PIECES = 8


def verses():
    """Every verse in canonical order as ``(book, chapter, verse, text)``; labels stripped."""
    program = shutil.which("bible")
    if program is None:
        raise SystemExit(f"corpus: {INSTALL_HINT}")
    # -f turns pretty-printing off: one labelled verse per line, no wrapping.
    dump = subprocess.run([program, "-f", BIBLE_RANGE], check=True, capture_output=True,
                          env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"}).stdout.decode("ascii")
    result = []
    for number, line in enumerate(dump.splitlines(), 1):
        match = _LABEL.fullmatch(line)
        if match is None:
            raise SystemExit(f"corpus: line {number} of `bible -f {BIBLE_RANGE}` has no verse "
                             f"label: {line[:60]!r}")
        book, chapter, verse, text = match.groups()
        result.append((book, int(chapter), int(verse), text))
    if len(result) != 31102:
        raise SystemExit(f"corpus: expected 31102 verses from bible-kjv, found {len(result)}")
    return result


def split(all_verses=None):
    """``(train, heldout)`` texts: one verse per line, each line ending in a newline."""
    all_verses = verses() if all_verses is None else all_verses
    books = [v[0] for v in all_verses]
    cut = books.index(HELDOUT_FIRST_BOOK)
    train = "".join(v[3] + "\n" for v in all_verses[:cut])
    heldout = "".join(v[3] + "\n" for v in all_verses[cut:])
    return train, heldout


def alphabet(text):
    """The sorted distinct characters of ``text`` (the char-level vocabulary, id = index)."""
    return sorted(set(text))


def slice_verses(text, *, size, pieces=SLICE_PIECES):
    """About ``size`` characters of whole lines taken from ``pieces`` evenly spaced places."""
    lines = text.splitlines(keepends=True)
    per_piece = size // pieces
    out = []
    for k in range(pieces):
        i = k * len(lines) // pieces
        piece = ""
        while i < len(lines) and len(piece) + len(lines[i]) <= per_piece:
            piece += lines[i]
            i += 1
        out.append(piece)
    return "".join(out)


def write_slices(data_dir=DATA_DIR):
    """Write ``kjv-calibration.txt`` and ``kjv-heldout.txt`` into ``data_dir``; return the paths."""
    train, heldout = split()
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text, size in (("kjv-calibration.txt", train, CALIBRATION_BYTES),
                             ("kjv-heldout.txt", heldout, HELDOUT_BYTES)):
        path = data_dir / name
        path.write_bytes(slice_verses(text, size=size).encode("ascii"))
        paths.append(path)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--dump", type=Path, metavar="FILE",
                        help="also write the whole corpus (train then held-out) to FILE")
    args = parser.parse_args(argv)
    train, heldout = split()
    print(f"train {len(train):,} chars, held-out {len(heldout):,} chars, "
          f"{len(alphabet(train + heldout))} distinct characters")
    for path in write_slices(args.data_dir):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    if args.dump:
        args.dump.write_text(train + heldout, encoding="ascii")
        print(f"wrote {args.dump}")


if __name__ == "__main__":
    sys.exit(main())
