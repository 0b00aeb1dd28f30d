"""Screenshot a saved result's HTML report with headless Chromium (for the README).

    latentcause analyze --input INCIDENT --out /tmp/x
    python examples/render_screenshot.py /tmp/x --out examples/report.png

The report is re-rendered from the folder (report.json + posterior.nc, checked like
``latentcause report``) and photographed at 1200 px wide; ``--height`` sets how much of the
page the picture shows.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import tempfile
from pathlib import Path

from latentcause.reports import load_result, render_html

CHROMIUM = Path("/usr/bin/chromium")

log = logging.getLogger("render_screenshot")


def screenshot(html_file: Path, png: Path, width: int = 1200, height: int = 2400) -> Path:
    """Photograph ``html_file`` into ``png`` with headless Chromium, no network, no profile."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", f"--screenshot={png.absolute()}",
             html_file.absolute().as_uri()],
            check=True, capture_output=True, timeout=120,
        )
    return png


def main() -> None:
    """Render the report of a result folder and photograph it."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("result", type=Path, help="a folder written by latentcause analyze --out")
    ap.add_argument("--out", type=Path, default=Path("examples/report.png"))
    ap.add_argument("--height", type=int, default=2400, help="page height shown, in px")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    saved = load_result(args.result)
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(render_html(saved.report, saved.idata), encoding="utf-8")
        screenshot(page, args.out, height=args.height)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
