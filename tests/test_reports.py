"""Reports: content, escaping, atomic writing, re-rendering, provenance checks, attach."""

from __future__ import annotations

import copy
import json
import os
import stat
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from report_fixtures import make_result

from latentcause.errors import ArtifactError, InputError
from latentcause.reports import (
    BEGIN,
    END,
    attach_block,
    attach_report,
    load_posterior,
    load_result,
    render_html,
    render_markdown,
    save_posterior,
    summary_lines,
    write_outputs,
)
from latentcause.reports import _write as write_module

CHECK_REPORT = Path("/work/shared/tools/check_report.py")
LATENTCAUSE = Path(sys.executable).with_name("latentcause")
HOSTILE = "<script>alert(1)</script>"
HOSTILE_QUERY = 'rate(http_requests_total{pod="<img src=x onerror=alert(2)>|*_x_*"}[1m])'
ODD = "a|b*c_d`e$f$ [x](y) #1"
ADDITIONS = ("summary", "trigger", "latent_condition", "components", "call_graph", "timing_s")


@pytest.fixture(scope="module")
def result():
    return make_result(seed=1)


@pytest.fixture(scope="module")
def hostile():
    return make_result(
        seed=2, components=(ODD, HOSTILE, "ca\x1b[31mrts"), root=HOSTILE,
        queries=(HOSTILE_QUERY, "normal.csv"),
    )


@pytest.fixture(scope="module")
def saved(result, tmp_path_factory):
    out = tmp_path_factory.mktemp("saved") / "result"
    write_outputs(result, out)
    return out


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run ``latentcause.cli.main`` in this process (the entry point's error mapping included)."""
    from latentcause.cli import main

    monkeypatch.setattr(sys, "argv", ["latentcause", *args])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _markdown_to_html(md: str) -> str:
    markdown_it = pytest.importorskip("markdown_it")
    # The commonmark preset passes raw HTML through, as GitHub-style renderers would
    # sanitise at best: the escaping must not rely on it.
    return markdown_it.MarkdownIt("commonmark").enable("table").render(md)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(html_text: str) -> _Tags:
    p = _Tags()
    p.feed(html_text)
    return p


# -- the fixture itself ----------------------------------------------------------------------


@pytest.mark.skipif(not CHECK_REPORT.exists(), reason="shared/tools/check_report.py absent")
@pytest.mark.parametrize("kind", ["plain", "ambiguous", "hostile"])
def test_fixture_reports_pass_the_contract_checker(kind, tmp_path):
    res = {"plain": make_result(), "ambiguous": make_result(ambiguous=True),
           "hostile": make_result(components=(HOSTILE, "b"), root=HOSTILE)}[kind]
    path = tmp_path / "report.json"
    path.write_text(json.dumps(res.report))
    run = subprocess.run([sys.executable, str(CHECK_REPORT), str(path)], capture_output=True,
                         text=True, check=False)
    assert run.returncode == 0, run.stdout
    assert run.stdout.strip() == "report ok"


# -- Markdown content ------------------------------------------------------------------------


def test_markdown_says_what_a_postmortem_needs(result):
    md = render_markdown(result.report)
    lines = md.splitlines()
    assert lines[0] == "## Root-cause analysis (latentcause)"
    assert lines[2].startswith("**Most probable cause: capacity loss in carts (p = 0.96)")
    for heading in ("Leading hypotheses", "Trigger and latent condition", "Ambiguity",
                    "Model adequacy", "Sampling diagnostics", "Provenance"):
        assert f"\n### {heading}\n" in md
    # onset median and interval as UTC times (fixture onset: 12:20 + 88 * 15 s)
    assert "2024-05-01 12:42:00 UTC (95 % interval 2024-05-01 12:41:30 – 12:42:45 UTC)" in md
    # trigger: what changed and by how much; latent condition: utilisation and headroom
    assert "| carts | `lat_p99` | ×4.6 (95 %: ×3.9 – ×5.4) | rose 4.6-fold |" in md
    assert "| carts | `rps` | ×1.01 (95 %: ×0.96 – ×1.06) | no clear change |" in md
    assert "Utilisation before the onset: 55 % (95 %: 51 – 59 %)" in md
    assert "Headroom (distance to saturation, share of capacity): 45 % (95 %: 41 – 49 %)" in md
    assert "Load could grow by ×1.82 (95 %: ×1.69 – ×1.96) before saturating" in md
    assert "Retry amplification" not in md  # null in this result
    assert "| 1 | carts | `capacity_loss` | 0.96 | yes | -1520.0 ± 0.4 |" in md
    assert "| sampled hypothesis | carts/capacity_loss |" in md
    assert "23 further hypotheses hold < 0.001 of the probability together." in md
    assert "To make the result firmer, collect:** carts/cpu_throttled." in md
    prov = result.report["provenance"]
    assert f"`{prov['data_sha256']}`" in md
    assert f"`{prov['model_config_sha256']}`" in md
    assert "Seed: `1`" in md
    assert "Window: 2024-05-01 12:20:00 – 13:00:00 UTC, one point every 15 s" in md
    assert "Warning" not in md


def test_markdown_of_an_ambiguous_result_names_the_split_and_what_to_collect():
    res = make_result(ambiguous=True)
    md = render_markdown(res.report)
    assert ("**Ambiguous between capacity loss in carts (p = 0.48), service slowdown in carts "
            "(p = 0.41) and capacity loss in front-end (p = 0.07).**") in md
    assert "The 95 % credible set holds 3 hypotheses" in md
    assert "What cannot be told apart:** Neither the component nor the mechanism" in md
    assert "**To tell them apart, collect:** carts/cpu_throttled." in md
    lines = summary_lines(res.report)
    assert lines[0].startswith("Ambiguous between capacity loss in carts")
    assert any("ambiguous: 3 hypotheses" in s and "carts/cpu_throttled" in s for s in lines)


def test_same_component_different_mechanisms_is_explained():
    res = make_result(ambiguous=True)
    report = copy.deepcopy(res.report)
    report["ambiguity"]["credible_set"] = report["ambiguity"]["credible_set"][:2]
    report["hypotheses"][1]["probability"] += report["hypotheses"][2]["probability"]
    report["hypotheses"][2]["probability"] = 0.0
    md = render_markdown(report)
    assert ("The evidence points to carts but not to one mechanism: capacity loss and service "
            "slowdown predict nearly the same changes") in md


def test_inadequate_fit_and_no_convergence_are_said_plainly():
    res = make_result(fits=False)
    report = copy.deepcopy(res.report)
    report["diagnostics"].update(converged=False, rhat_max=1.12, divergences=7)
    md = render_markdown(report)
    assert ("> **Warning:** No candidate reproduces the data well "
            "(worst series: carts/lat_p99)") in md
    assert "**Does not fit.**" in md and "posterior predictive p = 0.003" in md
    assert "> **Warning:** The sampler did not converge (R-hat up to 1.120" in md
    assert "7 divergent transitions" in md
    lines = summary_lines(report)
    assert any(s.startswith("warning: No candidate reproduces the data well") for s in lines)
    assert any(s.startswith("warning: The sampler did not converge") for s in lines)


def test_summary_lines(result):
    lines = summary_lines(result.report)
    assert lines[0].startswith("Most probable cause: capacity loss in carts (p = 0.96)")
    assert lines[1].split() == ["1.", "carts", "capacity_loss", "p", "=", "0.96"]
    assert len([s for s in lines if s.startswith("  ")]) == 5
    assert ("onset: 2024-05-01 12:42:00 UTC (95 %: 2024-05-01 12:41:30 – 12:42:45 UTC), "
            "inferred") in lines
    assert not any(s.startswith(("warning", "ambiguous")) for s in lines)


@pytest.mark.parametrize("how", ["missing", "null"])
def test_additions_may_be_missing_or_null(result, how):
    report = copy.deepcopy(result.report)
    for key in ADDITIONS:
        if how == "missing":
            report.pop(key)
        else:
            report[key] = None
    for key in ("source", "candidates"):
        report["onset"].pop(key) if how == "missing" else report["onset"].__setitem__(key, None)
    for h in report["hypotheses"]:
        h.pop("log_evidence") if how == "missing" else h.__setitem__("log_evidence", None)
    for k in ("p_value", "statistic", "worst_series", "description"):
        report["adequacy"].pop(k)
    report["ambiguity"]["discriminating_signals"] = ["carts:cpu_throttled"]
    for k in ("sampler", "chains", "draws", "evidence_method"):
        report["diagnostics"][k] = None
    for k in ("model_config_sha256", "onset_source", "notes"):
        report["provenance"][k] = None
    md = render_markdown(report)
    assert "does not describe the trigger or the state before it" in md
    assert "log evidence" not in md
    assert "| carts:cpu\\_throttled |" not in md and "`carts:cpu_throttled`" in md
    html_text = render_html(report, None)
    assert "does not describe the trigger" in html_text
    assert html_text.count("<img ") == 1  # only the posterior bars: no idata, no candidates
    assert summary_lines(report)[0].startswith("Most probable cause")


@pytest.mark.parametrize("given", [
    {"median": 2.0, "interval_95": [1.6, 2.5]},  # a factor
    {"median": 0.5, "interval_95": [0.375, 0.6]},  # the retried share a: factor 1 / (1 - a)
])
def test_retry_amplification_is_reported_when_present(result, given):
    report = copy.deepcopy(result.report)
    report["latent_condition"]["amplification"] = given
    md = render_markdown(report)
    assert "Retry amplification (load with retries ÷ load without): ×2 (95 %: ×1.6 – ×2.5)" in md


# -- escaping ----------------------------------------------------------------------------------


def test_markdown_escapes_hostile_names_and_label_values(hostile):
    md = render_markdown(hostile.report)
    assert HOSTILE not in md  # the query, with its <img, stays inside a code span
    assert "\x1b" not in md
    rendered = _markdown_to_html(md)
    tags = _parse(rendered)
    assert {t for t, _ in tags.tags} <= {"h2", "h3", "p", "strong", "table", "thead", "tbody",
                                          "tr", "th", "td", "code", "ul", "li", "blockquote"}
    text = "".join(tags.text)
    assert HOSTILE in text  # shown as text, not run
    assert ODD in text
    assert "<a " not in rendered  # the [x](y) in the name made no link
    # GFM table structure survives the "|" in names: every hypothesis row has 6 cells
    body_rows = rendered.split("<tbody>")[1].split("</tbody>")[0].count("<tr>")
    cells = rendered.split("<tbody>")[1].split("</tbody>")[0].count("<td")
    assert cells == 6 * body_rows
    assert HOSTILE_QUERY in text  # the label value, verbatim, inside a code span


def test_html_escapes_hostile_names_and_label_values(hostile):
    page = render_html(hostile.report, hostile.idata)
    assert HOSTILE not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\x1b" not in page
    tags = _parse(page)
    names = {t for t, _ in tags.tags}
    assert "script" not in names and "link" not in names and "iframe" not in names
    for tag, attrs in tags.tags:
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
        if tag == "img":
            assert (attrs["src"] or "").startswith("data:image/png;base64,")
    text = "".join(tags.text)
    assert HOSTILE in text and HOSTILE_QUERY in text


def test_html_is_self_contained_and_has_every_plot(result):
    page = render_html(result.report, result.idata)
    assert "http://" not in page and "https://" not in page and "@import" not in page
    assert "Content-Security-Policy" in page and "@media print" in page
    for key in ("posterior", "onset", "series", "state"):
        assert f'<figure id="plot-{key}">' in page
    tags = _parse(page)
    imgs = [a for t, a in tags.tags if t == "img"]
    assert len(imgs) == 4 and all(a.get("alt") for a in imgs)
    assert "Whiskers: 90 % range" in page  # the evidence estimator's error is shown
    # the same words as the Markdown
    md = render_markdown(result.report)
    assert "Trigger and latent condition" in page and "Trigger and latent condition" in md
    assert "55 % (95 %: 51 – 59 %)" in page


def test_series_panels_follow_root_and_callers(result):
    from latentcause.reports._plots import MAX_SERIES_PANELS, render_plots

    plot = render_plots(result.report, result.idata)["series"]
    assert plot.alt.startswith(f"{MAX_SERIES_PANELS} panels")
    listed = plot.alt.split(": ", 1)[1]
    assert listed.startswith("carts/lat_p50, carts/lat_p99, carts/err")
    assert "front-end/lat_p50" in listed  # a caller of carts comes next
    assert "catalogue" not in listed  # neither root nor caller


# -- writing, re-rendering, provenance -----------------------------------------------------------


def test_write_outputs_writes_the_four_files(saved, result):
    assert sorted(p.name for p in saved.iterdir()) == [
        "posterior.nc", "report.html", "report.json", "report.md"]
    assert json.loads((saved / "report.json").read_text()) == result.report
    text = (saved / "report.json").read_text()
    assert text.startswith('{\n  "schema_version": "1",\n  "window"')  # contract order
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]


def test_rerender_from_saved_files_equals_the_original(saved):
    again = load_result(saved)
    assert render_markdown(again.report, again.idata) == (saved / "report.md").read_text()
    assert render_html(again.report, again.idata) == (saved / "report.html").read_text()


def test_report_command_reproduces_the_files(saved, tmp_path, monkeypatch, capsys):
    for fmt, name in (("md", "report.md"), ("json", "report.json")):
        code, out, err = _cli(monkeypatch, capsys, "report", str(saved), "--format", fmt)
        assert code == 0, err
        assert out == (saved / name).read_text()
    out_file = tmp_path / "again.html"
    code, out, err = _cli(monkeypatch, capsys, "report", str(saved), "--format", "html",
                          "--out", str(out_file))
    assert code == 0 and out == "", err
    assert out_file.read_bytes() == (saved / "report.html").read_bytes()


def _copy(saved: Path, dest: Path) -> Path:
    dest.mkdir()
    for p in saved.iterdir():
        (dest / p.name).write_bytes(p.read_bytes())
    return dest


@pytest.mark.parametrize("field", ["data_sha256", "model_config_sha256", "version", "seed",
                                   "model_version"])
def test_a_posterior_from_another_run_is_refused(saved, tmp_path, field):
    d = _copy(saved, tmp_path / "r")
    report = json.loads((d / "report.json").read_text())
    report["provenance"][field] = 99 if field == "seed" else "0" * 64
    (d / "report.json").write_text(json.dumps(report, indent=2))
    with pytest.raises(ArtifactError, match="does not belong to its report.json"):
        load_result(d)


def test_report_command_refuses_a_mismatch_with_one_line(saved, tmp_path, monkeypatch, capsys):
    d = _copy(saved, tmp_path / "r")
    report = json.loads((d / "report.json").read_text())
    report["provenance"]["data_sha256"] = "f" * 64
    (d / "report.json").write_text(json.dumps(report))
    code, out, err = _cli(monkeypatch, capsys, "report", str(d))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("latentcause: error: posterior.nc does not belong")
    assert "data_sha256" in err


def test_installed_entry_point_exits_2_with_one_line(tmp_path):
    run = subprocess.run([str(LATENTCAUSE), "report", str(tmp_path / "absent")],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr == f"latentcause: error: {tmp_path / 'absent'}: no such result folder\n"


def test_another_model_version_is_refused(result, tmp_path):
    idata = copy.deepcopy(result.idata)
    idata.attrs["model_version"] = "mechanisms-0.0-old"
    save_posterior(idata, tmp_path / "posterior.nc")
    with pytest.raises(ArtifactError, match="model version mechanisms-0.0-old"):
        load_posterior(tmp_path / "posterior.nc", result.report)


def test_a_posterior_without_provenance_is_not_saved_nor_loaded(result, tmp_path):
    idata = copy.deepcopy(result.idata)
    del idata.attrs["data_sha256"]
    with pytest.raises(ArtifactError, match="data_sha256"):
        save_posterior(idata, tmp_path / "posterior.nc")
    idata.to_netcdf(str(tmp_path / "posterior.nc"))
    with pytest.raises(ArtifactError, match="lacks the attribute data_sha256"):
        load_posterior(tmp_path / "posterior.nc", result.report)


def test_unreadable_or_foreign_files_are_refused(saved, tmp_path):
    d = _copy(saved, tmp_path / "r")
    (d / "posterior.nc").write_bytes(b"not a netcdf file")
    with pytest.raises(ArtifactError, match="not a readable posterior"):
        load_result(d)
    (d / "report.json").write_text('{"schema_version": "2"}')
    with pytest.raises(ArtifactError, match="schema_version '2'"):
        load_result(d)
    (d / "report.json").write_text("{")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_result(d)
    with pytest.raises(InputError, match="no such result folder"):
        load_result(tmp_path / "absent")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_failing_render_leaves_a_new_folder_absent(result, tmp_path, monkeypatch):
    def broken(report, idata=None):
        raise RuntimeError("render failed")

    monkeypatch.setattr(write_module, "render_html", broken)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="render failed"):
        write_outputs(result, out)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_render_keeps_the_previous_files(saved, tmp_path, monkeypatch):
    out = _copy(saved, tmp_path / "out")
    before = _snapshot(out)

    def broken(report, idata=None):
        raise RuntimeError("render failed")

    monkeypatch.setattr(write_module, "render_html", broken)
    with pytest.raises(RuntimeError):
        write_outputs(make_result(seed=5), out)
    assert _snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_real_serialisation_failure_writes_nothing(result, saved, tmp_path):
    out = _copy(saved, tmp_path / "out")
    before = _snapshot(out)
    bad = make_result(seed=6)
    bad.report["diagnostics"]["rhat_max"] = float("nan")
    with pytest.raises(ArtifactError, match="non-finite"):
        write_outputs(bad, out)
    broken_idata = make_result(seed=7)
    del broken_idata.idata.attrs["config_sha256"]
    with pytest.raises(ArtifactError, match="config_sha256"):
        write_outputs(broken_idata, out)
    assert _snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_rewriting_replaces_and_drops_a_stale_posterior(saved, tmp_path):
    out = _copy(saved, tmp_path / "out")
    new = make_result(seed=8, with_idata=False)
    files = write_outputs(new, out)
    assert [p.name for p in files] == ["report.md", "report.html", "report.json"]
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]
    again = load_result(out)
    assert again.idata is None and again.report == new.report


def test_out_that_is_a_file_is_refused(result, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        write_outputs(result, f)


def test_numpy_values_in_a_report_are_written_as_json(tmp_path):
    res = make_result(seed=9, with_idata=False)
    res.report["diagnostics"]["divergences"] = np.int64(0)
    res.report["diagnostics"]["converged"] = np.bool_(True)
    write_outputs(res, tmp_path / "o")
    data = json.loads((tmp_path / "o" / "report.json").read_text())
    assert data["diagnostics"]["divergences"] == 0 and data["diagnostics"]["converged"] is True


# -- attach --------------------------------------------------------------------------------------

REPORT_MD = "## Root-cause analysis (latentcause)\n\nline one\n\n| a | b |\n"


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("final", [True, False])
def test_attach_is_idempotent_and_keeps_every_other_byte(newline, final):
    head = f"# Postmortem: checkout outage{newline}{newline}## Timeline{newline}- 12:40 page"
    doc = head + (newline if final else "")
    once = attach_block(doc, REPORT_MD)
    assert once.startswith(doc)
    assert once.endswith(END + (newline if final else ""))
    block = once[once.index(BEGIN):once.index(END) + len(END)]
    assert block == BEGIN + newline + REPORT_MD.rstrip("\n").replace("\n", newline) + newline + END
    if newline == "\r\n":
        assert once.count("\n") == once.count("\r\n")
    twice = attach_block(once, REPORT_MD)
    assert twice == once
    # a block in the middle of a document: replaced, the bytes around it untouched
    tail = f"{newline}## Actions{newline}- add cpu throttling alerts"
    middle = once + tail
    updated = attach_block(middle, "## Root-cause analysis (latentcause)\n\nnew text\n")
    start, end = middle.index(BEGIN), middle.index(END) + len(END)
    new_end = updated.index(END) + len(END)
    assert updated[:start] == middle[:start]
    assert updated[new_end:] == middle[end:]
    assert "new text" in updated and "line one" not in updated


def test_attach_file_round_trip_keeps_bytes_mode_and_backup(saved, tmp_path):
    pm = tmp_path / "pm.md"
    original = b"\xef\xbb\xbf# Postmortem\r\n\r\nLegacy byte \xe9 kept.\r\nno final newline"
    pm.write_bytes(original)
    os.chmod(pm, 0o640)
    backup = attach_report(pm, saved)
    first = pm.read_bytes()
    assert first.startswith(original + b"\r\n\r\n" + BEGIN.encode() + b"\r\n")
    assert first.endswith(END.encode())
    assert (saved / "report.md").read_bytes().replace(b"\n", b"\r\n").rstrip(b"\r\n") in first
    assert backup.read_bytes() == original
    assert stat.S_IMODE(pm.stat().st_mode) == 0o640
    attach_report(pm, saved / "report.md")
    assert pm.read_bytes() == first
    assert backup.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pm.md", "pm.md.bak"]


def test_attach_refuses_what_it_cannot_do_safely(saved, tmp_path):
    with pytest.raises(InputError, match="no such file"):
        attach_report(tmp_path / "absent.md", saved)
    pm = tmp_path / "pm.md"
    pm.write_text(f"# PM\n{BEGIN}\nold report, end marker deleted by hand\n")
    before = pm.read_bytes()
    with pytest.raises(InputError, match="found 1 and 0"):
        attach_report(pm, saved)
    assert pm.read_bytes() == before and not (tmp_path / "pm.md.bak").exists()
    pm.write_text(f"# PM\n{END}\n{BEGIN}\n")
    with pytest.raises(InputError, match="comes before"):
        attach_report(pm, saved)
    pm.write_text("# PM\n")
    with pytest.raises(InputError, match="no report.md"):
        attach_report(pm, tmp_path)


def test_attach_command(saved, tmp_path, monkeypatch, capsys):
    pm = tmp_path / "pm.md"
    pm.write_text("# PM\n")
    code, out, err = _cli(monkeypatch, capsys, "attach", "--postmortem", str(pm), "--report",
                          str(saved))
    assert code == 0, err
    assert out.startswith(f"attached {saved} to {pm}")
    assert pm.read_text().startswith("# PM\n\n" + BEGIN + "\n## Root-cause analysis")
    code, out, err = _cli(monkeypatch, capsys, "attach", "--postmortem", str(tmp_path / "x.md"),
                          "--report", str(saved))
    assert code == 2
    assert err == f"latentcause: error: --postmortem {tmp_path / 'x.md'}: no such file\n"
