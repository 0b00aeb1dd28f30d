"""The command line on bad input, and end to end on the bundled example.

Bad input must give exit status 2, exactly one stderr line ``latentcause: error: ...``, no
traceback, and nothing in ``--out``. These runs fail while loading, before any model is
compiled, so they are cheap and go through the installed entry point. Input that is merely
untidy (unsorted or duplicated timestamps, an empty series beside good ones) is repaired with a
warning; those cases are checked on the loading layer, without running an analysis.

The end-to-end run of ``examples/catalogue-memory-leak`` is the one expensive test of the
default tier: one analysis, shared by the tests that read its report.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, SHARED

from latentcause.connectors.files import read_input
from latentcause.errors import WindowError
from latentcause.loading import load_observations

LATENTCAUSE = Path(sys.executable).with_name("latentcause")
EXAMPLE = ROOT / "examples" / "catalogue-memory-leak"
CHECK_REPORT = SHARED / "tools" / "check_report.py"

T0 = 1_700_000_000
N = 60
STEP = 5


def _frame(n: int = N, seed: int = 0) -> pd.DataFrame:
    """Return a small, valid wide table: two varying series of one component."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "time": T0 + STEP * np.arange(n),
        "carts_cpu": rng.normal(1.0, 0.1, n),
        "carts_lat_p99": rng.normal(0.2, 0.01, n),
    })


def _write(folder: Path, name: str, frame: pd.DataFrame) -> Path:
    path = folder / name
    frame.to_csv(path, index=False)
    return path


def _no_time(folder: Path) -> list[str]:
    return ["--input", str(_write(folder, "m.csv", _frame().drop(columns="time")))]


def _no_signal(folder: Path) -> list[str]:
    frame = pd.DataFrame({"time": T0 + STEP * np.arange(N), "foo": np.arange(N), "bar_x": 1.0})
    return ["--input", str(_write(folder, "m.csv", frame))]


def _too_short(folder: Path) -> list[str]:
    return ["--input", str(_write(folder, "m.csv", _frame(n=5)))]


def _gaps_only(folder: Path) -> list[str]:
    frame = _frame()
    frame.loc[5:, ["carts_cpu", "carts_lat_p99"]] = np.nan  # 60 rows, 5 with values
    return ["--input", str(_write(folder, "m.csv", frame))]


def _all_nan(folder: Path) -> list[str]:
    frame = _frame().assign(carts_cpu=np.nan, carts_lat_p99=np.nan)
    return ["--input", str(_write(folder, "m.csv", frame))]


def _constant(folder: Path) -> list[str]:
    frame = _frame().assign(carts_cpu=1.0, carts_lat_p99=0.2)
    return ["--input", str(_write(folder, "m.csv", frame))]


def _onset_outside(folder: Path) -> list[str]:
    return ["--input", str(_write(folder, "m.csv", _frame())), "--onset", str(T0 - 3600)]


def _missing(folder: Path) -> list[str]:
    return ["--input", str(folder / "absent.csv")]


def _unreadable(folder: Path) -> list[str]:
    path = folder / "m.csv"
    path.write_text('time,carts_cpu\n1,2,3\n"unterminated\n')
    return ["--input", str(path)]


#: case -> (arguments written into a folder, words the error line must contain)
BAD_INPUT: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "missing file": (_missing, "no such file"),
    "unreadable csv": (_unreadable, "cannot be read"),
    "no time column": (_no_time, "no 'time' column"),
    "no known signal": (_no_signal, "no column names a known signal"),
    "window too short": (_too_short, "at least 12 are needed"),
    "values at too few times": (_gaps_only, "at least 12 are needed"),
    "all NaN": (_all_nan, "all NaN"),
    "constant": (_constant, "every series is constant"),
    "onset outside the window": (_onset_outside, "outside the data window"),
}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed ``latentcause`` with no stdin."""
    return subprocess.run([str(LATENTCAUSE), *args], cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, check=False, timeout=300)


def assert_one_error_line(done: subprocess.CompletedProcess[str], expected: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("latentcause: error: ")
    assert expected in lines[0]


# Each run starts a Python process (a few seconds): every case with a new --out, two with an
# --out folder that already exists.
CASES = [(case, False) for case in BAD_INPUT] + [("constant", True),
                                                  ("onset outside the window", True)]


@pytest.mark.parametrize(("case", "out_exists"), CASES,
                         ids=[f"{c}-{'existing' if e else 'new'}-out" for c, e in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_out_empty(
    case: str, out_exists: bool, tmp_path: Path
) -> None:
    make, expected = BAD_INPUT[case]
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "out"
    if out_exists:
        out.mkdir()
    done = run_cli("analyze", *make(data), "--out", str(out), cwd=tmp_path)
    assert_one_error_line(done, expected)
    assert done.stdout == ""
    if out_exists:
        assert list(out.iterdir()) == []
    else:
        assert not out.exists()


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_out_that_is_a_file_is_refused_before_loading(where: str, tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("keep me\n")
    out = target if where == "file" else target / "sub" / "out"
    good = _write(tmp_path, "m.csv", _frame())
    done = run_cli("analyze", "--input", str(good), "--out", str(out), cwd=tmp_path)
    assert_one_error_line(done, "is not a folder")
    assert target.read_text() == "keep me\n"


@pytest.mark.parametrize("value", ["0", "1.5"])
def test_a_prior_of_none_outside_0_to_1_is_refused_before_loading(value: str,
                                                                   tmp_path: Path) -> None:
    good = _write(tmp_path, "m.csv", _frame())
    out = tmp_path / "out"
    done = run_cli("analyze", "--input", str(good), "--p-none", value, "--out", str(out),
                   cwd=tmp_path)
    assert_one_error_line(done, f"--p-none {value}: must lie strictly between 0 and 1")
    assert not out.exists()


def test_neither_or_both_sources_is_one_line(tmp_path: Path) -> None:
    done = run_cli("analyze", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert_one_error_line(done, "give exactly one of --input PATH or --prometheus URL")
    assert not (tmp_path / "out").exists()


# Untidy but safe input: repaired with a warning, and loading goes on.


def test_unsorted_timestamps_are_sorted_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frame = _frame()
    path = _write(tmp_path, "m.csv", frame.sample(frac=1.0, random_state=3))
    with caplog.at_level(logging.WARNING, logger="latentcause"):
        obs = load_observations(input=path)
    assert "not sorted" in caplog.text
    assert obs.frame.index.is_monotonic_increasing
    np.testing.assert_allclose(obs.frame[("carts", "cpu")].to_numpy(), frame["carts_cpu"])


def test_duplicated_timestamps_are_merged_by_their_mean(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frame = _frame()
    again = frame.iloc[10:15].assign(carts_cpu=frame["carts_cpu"].iloc[10:15] + 1.0)
    path = _write(tmp_path, "m.csv", pd.concat([frame, again]))
    with caplog.at_level(logging.WARNING, logger="latentcause"):
        obs = read_input(path)
    assert "5 duplicated timestamps merged" in caplog.text
    assert obs.frame.index.is_unique and len(obs.frame) == N
    cpu = obs.frame[("carts", "cpu")]
    np.testing.assert_allclose(cpu.iloc[10:15], frame["carts_cpu"].iloc[10:15] + 0.5)
    np.testing.assert_allclose(cpu.iloc[:10], frame["carts_cpu"].iloc[:10])


def test_an_empty_series_beside_good_ones_is_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(tmp_path, "m.csv", _frame().assign(carts_mem=np.nan))
    with caplog.at_level(logging.WARNING, logger="latentcause"):
        obs = read_input(path)
    assert "dropped 1 series with no values" in caplog.text
    assert obs.signals("carts") == ["cpu", "lat_p99"]


def test_onset_inside_the_window_is_kept(tmp_path: Path) -> None:
    path = _write(tmp_path, "m.csv", _frame())
    obs = load_observations(input=path, onset=str(T0 + STEP * 30))
    assert obs.onset == T0 + STEP * 30 and obs.onset_source == "given"
    with pytest.raises(WindowError, match="outside the data window"):
        load_observations(input=path, onset=str(T0 + STEP * N))


# The bundled example.


def test_example_is_reproduced_by_its_script(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "examples" / "make_example.py"),
                    "--root", str(tmp_path)], check=True, capture_output=True, timeout=300)
    made = tmp_path / EXAMPLE.name
    names = sorted(p.name for p in EXAMPLE.iterdir())
    assert names == ["inject_time.txt", "metrics.csv", "truth.json"]
    assert sorted(p.name for p in made.iterdir()) == names
    for name in names:
        assert (made / name).read_bytes() == (EXAMPLE / name).read_bytes(), name


def _analyse_example(cwd: Path, *options: str) -> Path:
    """Analyse the bundled example into ``cwd/out`` with ``options`` added; the folder."""
    done = subprocess.run(
        [str(LATENTCAUSE), "analyze", "--input", str(EXAMPLE), "--out", "out",
         "--draws", "100", "--seed", "0", "--quiet", *options],
        cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return cwd / "out"


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Analyse the bundled example once (the expensive step of this module)."""
    return _analyse_example(tmp_path_factory.mktemp("example"))


def test_example_analysis_writes_the_four_files(example_run: Path) -> None:
    names = sorted(p.name for p in example_run.iterdir())
    assert names == ["posterior.nc", "report.html", "report.json", "report.md"]


def test_the_prior_of_none_given_is_the_one_used_and_recorded(example_run: Path,
                                                              tmp_path: Path) -> None:
    """--p-none reaches the engine and the report; the evidence does not depend on it."""
    default = json.loads((example_run / "report.json").read_text())
    assert default["provenance"]["prior_none"] == pytest.approx(1 / 7, abs=1e-6)
    given = json.loads((_analyse_example(tmp_path, "--p-none", "0.9") / "report.json").read_text())
    assert given["provenance"]["prior_none"] == 0.9
    evidence = {(h["component"], h["mechanism"]): h["log_evidence"]
                for h in default["hypotheses"]}
    assert evidence == {(h["component"], h["mechanism"]): h["log_evidence"]
                        for h in given["hypotheses"]}


@pytest.mark.skipif(not CHECK_REPORT.is_file(), reason="../shared/tools/check_report.py absent")
def test_example_report_passes_the_contract_checker(example_run: Path) -> None:
    done = subprocess.run([sys.executable, str(CHECK_REPORT), str(example_run / "report.json")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "report ok"


def test_example_truth_is_in_the_credible_set(example_run: Path) -> None:
    truth = json.loads((EXAMPLE / "truth.json").read_text())
    report = json.loads((example_run / "report.json").read_text())
    credible = {(h["component"], h["mechanism"]) for h in report["ambiguity"]["credible_set"]}
    leaders = [(h["component"], h["mechanism"], round(h["probability"], 3))
               for h in report["hypotheses"][:3]]
    assert (truth["component"], truth["mechanism"]) in credible, leaders
