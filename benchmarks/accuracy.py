"""Accuracy, calibration and speed of `latentcause analyze`, measured through the real CLI.

Runs the command line on (a) the sock-shop incidents of ``../shared/datasets/sockshop-rcd``
(ground truth in the folder names: ``cpu`` is capacity_loss, ``mem`` is memory_leak; the onset
is the boundary between normal.csv and anomalous.csv) and (b) a suite from
``latentcause simulate --suite N`` (truth.json per incident; each incident's spans are
passed as ``--traces`` when it has them, left out with ``--no-traces`` to measure a
system without tracing), then prints:

- component top-1 and top-3 accuracy, (component, mechanism) top-1 accuracy;
- expected calibration error (10 bins) and Brier score of the top probability;
- ambiguity recall on ambiguous-by-design cases and false-alarm rate on clear ones;
- adequacy rate (share of reports with ``adequacy.fits``);
- median and maximum wall time per incident.

Results go to a JSON Lines file, one line per incident, so an interrupted run resumes where
it stopped (``--fresh`` starts over). Usage::

    python benchmarks/accuracy.py --sockshop              # the 50 real incidents
    python benchmarks/accuracy.py --suite 100             # 100 simulated incidents
    python benchmarks/accuracy.py --sockshop --suite 100 --jobs 2
    python benchmarks/accuracy.py --sockshop --suite 100 --ranking-only   # minutes, not hours
    python benchmarks/accuracy.py --suite 100 --ranking-only --no-traces --results m.jsonl

``--ranking-only`` runs the evidence stage in this process (``inference.rank``, the first
half of ``analyze`` with the same seed): the same hypothesis probabilities, credible set
and ambiguity as the CLI, without NUTS, the adequacy check or report files. It is what model
changes are measured with; the full run is what the time, adequacy and convergence figures
come from.

Timing is wall time of the whole CLI process, compile cache included. ``--cold`` gives
every incident an empty compile directory of its own (and so an empty cache of compiled
roles): the first-run time a new user sees, per incident. With ``--jobs 1`` only, or the
runs share the two cores::

    python benchmarks/accuracy.py --sockshop --cold --match '*/1' --results cold.jsonl
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOCKSHOP = ROOT.parent / "shared" / "datasets" / "sockshop-rcd"
CLI = str(Path(sys.executable).parent / "latentcause")
FAULTS = {"cpu": "capacity_loss", "mem": "memory_leak"}


def sockshop_cases(root: Path) -> list[dict[str, Any]]:
    """One case per ``<service>-<fault>/<run>`` folder, truth from the folder name."""
    cases = []
    for folder in sorted(root.glob("*-*/*")):
        if not (folder / "anomalous.csv").exists():
            continue
        service, fault = folder.parent.name.rsplit("-", 1)
        truth = {"component": service, "mechanism": FAULTS[fault], "ambiguous": False,
                 "equivalent": [{"component": service, "mechanism": FAULTS[fault]}]}
        cases.append({"set": "sockshop", "id": f"{folder.parent.name}/{folder.name}",
                      "input": str(folder), "truth": truth})
    return cases


def suite_cases(n: int, seed: int, cache: Path) -> list[dict[str, Any]]:
    """Simulate (once, cached by size, seed and simulator) a balanced suite; list its incidents.

    The simulator's source is part of the key: a suite written before a change of the
    simulator (a new signal, say) would otherwise be measured as if it were current.
    """
    source = b"".join(p.read_bytes() for p in sorted((ROOT / "core" / "simulate").glob("*.py")))
    folder = cache / f"suite-{n}-seed{seed}-sim{hashlib.sha256(source).hexdigest()[:8]}"
    if not (folder / "suite.json").exists():
        t0 = time.perf_counter()
        subprocess.run([CLI, "simulate", "--suite", str(n), "--seed", str(seed),
                        "--out", str(folder)], check=True, capture_output=True, text=True)
        print(f"simulated {n} incidents in {time.perf_counter() - t0:.1f} s -> {folder}",
              file=sys.stderr)
    cases = []
    for truth_file in sorted(folder.glob("*/truth.json")):
        truth = json.loads(truth_file.read_text())
        spans = truth_file.parent / "traces.json.gz"
        cases.append({"set": "simulated", "id": truth_file.parent.name,
                      "input": str(truth_file.parent), "truth": truth,
                      "traces": str(spans) if spans.exists() else None})
    return cases


def run_case(case: dict[str, Any], seed: int, extra: list[str], cold: bool = False,
             ) -> dict[str, Any]:
    """Run the CLI on one case and summarise the report against the truth.

    ``cold``: in an empty compile directory, deleted afterwards.
    """
    with tempfile.TemporaryDirectory(prefix="lc-bench-") as tmp:
        out = Path(tmp) / "out"
        env = dict(os.environ)
        if cold:
            env["PYTENSOR_FLAGS"] = ",".join(
                [f for f in env.get("PYTENSOR_FLAGS", "").split(",")
                 if f and not f.startswith(("base_compiledir=", "compiledir="))]
                + [f"base_compiledir={Path(tmp) / 'compiledir'}"])
            env.pop("LATENTCAUSE_CACHE_DIR", None)
        t0 = time.perf_counter()
        traces = ["--traces", case["traces"]] if case.get("traces") else []
        proc = subprocess.run([CLI, "analyze", "--input", case["input"], "--out", str(out),
                               "--seed", str(seed), "--quiet", *traces, *extra],
                              capture_output=True, text=True, check=False, env=env)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            return {**case, "ok": False, "wall_s": wall,
                    "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
        report = json.loads((out / "report.json").read_text())
    return score(case, report, wall)


def rank_case(case: dict[str, Any], seed: int) -> dict[str, Any]:
    """The evidence stage in this process: the probabilities the CLI would report, fast.

    ``inference.rank`` is the first half of ``analyze`` with the same seed, so top-1,
    calibration and ambiguity come out as the CLI's; there is no NUTS, adequacy check or
    report, and the wall time is the ranking's alone (imports excluded; the first case
    also loads the compiled models).
    """
    from latentcause.errors import LatentCauseError
    from latentcause.inference import rank
    from latentcause.inference.ambiguity import credible_set, is_ambiguous
    from latentcause.loading import load_observations

    try:
        traces = Path(case["traces"]) if case.get("traces") else None
        ranking = rank(load_observations(input=Path(case["input"]), traces=traces), seed=seed)
    except LatentCauseError as exc:
        return {**case, "ok": False, "wall_s": 0.0, "error": str(exc)}
    post = ranking.posterior
    p = post.probability
    hyps = [{"component": post.hypotheses[i].component,
             "mechanism": post.hypotheses[i].mechanism, "probability": float(p[i])}
            for i in post.order()]
    report = {"hypotheses": hyps, "ambiguity": {
        "ambiguous": is_ambiguous(p),
        "credible_set": [hyps[j] for j in range(len(credible_set(p)))]}}
    return score(case, report, ranking.seconds)


def score(case: dict[str, Any], report: dict[str, Any], wall: float) -> dict[str, Any]:
    """One case's row: where the truth ranked in ``report`` (report.json's fields)."""
    truth = case["truth"]
    true_c = truth["component"] if truth["mechanism"] != "none" else None
    hyps = report["hypotheses"]
    ranked_components: list[str | None] = []
    for h in hyps:
        if h["component"] not in ranked_components:
            ranked_components.append(h["component"])
    equivalent = {(e["component"], e["mechanism"]) for e in truth.get("equivalent") or []}
    equivalent.add((true_c, truth["mechanism"]))
    top = hyps[0]
    return {
        **case, "ok": True, "wall_s": wall,
        "top": [top["component"], top["mechanism"]], "top_p": top["probability"],
        "p_leading": [h["probability"] for h in hyps[:3]],
        "component_rank": (ranked_components.index(true_c) + 1
                           if true_c in ranked_components else None),
        "top1_pair": (top["component"], top["mechanism"]) == (true_c, truth["mechanism"]),
        "top1_equivalent": (top["component"], top["mechanism"]) in equivalent,
        "ambiguous": report["ambiguity"]["ambiguous"],
        "credible_set_has_truth": any(
            (c["component"], c["mechanism"]) in equivalent
            for c in report["ambiguity"]["credible_set"]),
        "signals": [f"{d['component']}/{d['signal']}"
                    for d in report["ambiguity"].get("discriminating_signals", [])[:3]],
        "fits": report.get("adequacy", {}).get("fits"),
        "converged": report.get("diagnostics", {}).get("converged"),
        "timing_s": report.get("timing_s"),
    }


def calibration(rows: list[dict[str, Any]], key: str, bins: int = 10) -> tuple[float, float]:
    """Expected calibration error and Brier score of the top probability."""
    p = [r["top_p"] for r in rows]
    y = [1.0 if r[key] else 0.0 for r in rows]
    brier = statistics.fmean((a - b) ** 2 for a, b in zip(p, y, strict=True))
    ece = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, v in enumerate(p) if lo <= v < hi or (b == bins - 1 and v == 1.0)]
        if idx:
            conf = statistics.fmean(p[i] for i in idx)
            acc = statistics.fmean(y[i] for i in idx)
            ece += len(idx) / len(p) * abs(conf - acc)
    return ece, brier


def share(rows: list[dict[str, Any]], test: Any) -> str:
    """``k/n = x.xx`` for the rows passing ``test``."""
    if not rows:
        return "n/a"
    k = sum(1 for r in rows if test(r))
    return f"{k}/{len(rows)} = {k / len(rows):.2f}"


def summarise(name: str, rows: list[dict[str, Any]]) -> list[str]:
    """The benchmark's figures for one set of cases."""
    done = [r for r in rows if r["ok"]]
    failed = [r for r in rows if not r["ok"]]
    lines = [f"== {name}: {len(rows)} incidents, {len(failed)} failed to run"]
    if not done:
        return lines
    clear = [r for r in done if not r["truth"].get("ambiguous")]
    ambiguous = [r for r in done if r["truth"].get("ambiguous")]
    with_root = [r for r in done if r["truth"]["mechanism"] != "none"]
    lines += [
        f"component top-1          {share(with_root, lambda r: r['component_rank'] == 1)}",
        f"component top-3          {share(with_root, lambda r: (r['component_rank'] or 99) <= 3)}",
        f"(component, mech) top-1  {share(done, lambda r: r['top1_pair'])}",
        f"  on clear cases         {share(clear, lambda r: r['top1_pair'])}",
        f"truth in credible set    {share(done, lambda r: r['credible_set_has_truth'])}",
    ]
    ece, brier = calibration(clear or done, "top1_pair")
    lines.append(f"calibration (clear)      ECE {ece:.3f}, Brier {brier:.3f}")
    if ambiguous:
        lines.append(f"ambiguity recall         {share(ambiguous, lambda r: r['ambiguous'])}")
    lines.append(f"ambiguity false alarms   {share(clear, lambda r: r['ambiguous'])}")
    # A ranking-only run (benchmarks/ranking.py) has no NUTS and no adequacy check.
    if any(r.get("fits") is not None for r in done):
        lines += [
            f"adequacy (fits)          {share(done, lambda r: r['fits'])}",
            f"converged                {share(done, lambda r: r['converged'])}",
        ]
    walls = [r["wall_s"] for r in done]
    lines.append(f"wall time per incident   median {statistics.median(walls):.1f} s, "
                 f"max {max(walls):.1f} s")
    misses = [f"{r['id']}: got {r['top'][0]}/{r['top'][1]} p={r['top_p']:.2f}"
              for r in done if not r["top1_pair"]]
    if misses:
        lines.append("misses: " + "; ".join(misses[:25]))
    for r in failed:
        lines.append(f"failed: {r['id']}: {r['error']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sockshop", nargs="?", const=str(SOCKSHOP), default=None,
                    help="sock-shop dataset folder (default ../shared/datasets/sockshop-rcd)")
    ap.add_argument("--suite", type=int, default=0, help="simulated incidents to add")
    ap.add_argument("--suite-seed", type=int, default=2026)
    ap.add_argument("--seed", type=int, default=0, help="--seed passed to analyze")
    ap.add_argument("--jobs", type=int, default=1, help="CLI processes at once")
    ap.add_argument("--limit", type=int, default=0, help="at most this many per set")
    ap.add_argument("--match", default="*", help="only incidents whose id matches this glob")
    ap.add_argument("--results", type=Path, default=ROOT / ".cache" / "bench" / "accuracy.jsonl")
    ap.add_argument("--fresh", action="store_true", help="ignore earlier results")
    ap.add_argument("--ranking-only", action="store_true",
                    help="in this process, the evidence stage only (no NUTS, adequacy or "
                    "report files): the same probabilities as the CLI in a fraction of the time")
    ap.add_argument("--cold", action="store_true",
                    help="each incident with an empty compile directory (first-run time)")
    ap.add_argument("--no-traces", action="store_true",
                    help="leave the simulated incidents' spans out (metrics only)")
    ap.add_argument("extra", nargs="*", help="more options for analyze, after --")
    args = ap.parse_args(argv)
    if not args.sockshop and not args.suite:
        ap.error("give --sockshop and/or --suite N")
    if args.cold and args.ranking_only:
        ap.error("--cold times the CLI; it does not go with --ranking-only")
    cases: list[dict[str, Any]] = []
    if args.sockshop:
        found = sockshop_cases(Path(args.sockshop))
        cases += found[: args.limit] if args.limit else found
    if args.suite:
        found = suite_cases(args.suite, args.suite_seed, args.results.parent)
        if args.no_traces:
            found = [{**c, "traces": None} for c in found]
        cases += found[: args.limit] if args.limit else found
    cases = [c for c in cases if fnmatch.fnmatch(c["id"], args.match)]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    if args.fresh and args.results.exists():
        args.results.unlink()
    done: dict[tuple[str, str], dict[str, Any]] = {}
    if args.results.exists():
        for line in args.results.read_text().splitlines():
            row = json.loads(line)
            done[(row["set"], row["id"])] = row
    todo = [c for c in cases if (c["set"], c["id"]) not in done]
    print(f"{len(cases)} incidents, {len(todo)} to run, {args.jobs} at a time", file=sys.stderr)
    env_note = ("an empty compile directory per incident" if args.cold else
                os.environ.get("PYTENSOR_FLAGS", "(default PyTensor cache)"))
    print(f"PYTENSOR_FLAGS={env_note}", file=sys.stderr)
    with ExitStack() as stack, args.results.open("a") as sink:
        rows: Iterable[dict[str, Any]]
        if args.ranking_only:  # in this process, whose cores the ranking uses itself
            rows = (rank_case(c, args.seed) for c in todo)
        else:
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=args.jobs))
            rows = pool.map(lambda c: run_case(c, args.seed, args.extra, args.cold), todo)
        for i, row in enumerate(rows):
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            done[(row["set"], row["id"])] = row
            status = (f"top {row['top'][0]}/{row['top'][1]} p={row['top_p']:.2f}"
                      if row["ok"] else f"FAILED {row['error']}")
            print(f"[{i + 1}/{len(todo)}] {row['set']} {row['id']}: {status} "
                  f"({row['wall_s']:.0f} s)", file=sys.stderr)
    results = [done[(c["set"], c["id"])] for c in cases]
    for name in ("sockshop", "simulated"):
        subset = [r for r in results if r["set"] == name]
        if subset:
            print("\n".join(summarise(name, subset)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
