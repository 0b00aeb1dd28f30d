"""Regenerate the bundled example incident with the project's own simulator.

    python examples/make_example.py            # writes examples/catalogue-memory-leak/

The example is generated, never hand-edited: ``latentcause simulate`` is deterministic (the
same seed gives byte-identical files), so rerunning this script reproduces the committed
``metrics.csv``, ``inject_time.txt`` and ``truth.json`` exactly.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: name -> simulator options. One clear case: catalogue's memory climbs (a leak) while
#: nothing else in the system changes. (A capacity_loss example was tried first: on it the
#: engine still confuses capacity_loss with traffic_surge and retry_storm, see the benchmark.)
#: Metrics only, no spans: the quick start shows the common case and stays small.
EXAMPLES = {
    "catalogue-memory-leak": [
        "--mechanism", "memory_leak", "--component", "catalogue",
        "--magnitude", "moderate", "--seed", "3", "--no-traces",
    ],
}


def latentcause_command() -> list[str]:
    """The ``latentcause`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "latentcause"
    if script.is_file():
        return [str(script)]
    found = shutil.which("latentcause")
    if found is None:
        sys.exit("make_example: no 'latentcause' command; run pip install -e . first")
    return [found]


def make(name: str, root: Path = HERE) -> Path:
    """Simulate the example ``name`` into ``root/name`` (replacing what is there)."""
    out = root / name
    if out.exists():
        shutil.rmtree(out)
    subprocess.run([*latentcause_command(), "simulate", *EXAMPLES[name], "--out", str(out)],
                   check=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="examples to make (default: all): " + ", ".join(EXAMPLES))
    parser.add_argument("--root", type=Path, default=HERE, help="where to write the folders")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in EXAMPLES]
    if unknown:
        parser.error(f"unknown example {unknown[0]!r}; known: {', '.join(EXAMPLES)}")
    for name in args.names or EXAMPLES:
        make(name, args.root)


if __name__ == "__main__":
    main()
