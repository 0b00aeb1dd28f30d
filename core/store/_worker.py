"""The unit of work of a reanalysis: one incident, run where the executor puts it.

``run_incident`` is a plain module-level function with string arguments, so it pickles for a
process pool and for Dask alike. The worker is handed the spec's *path*, never the data: it
reads the source itself (file or Prometheus), so a worker needs only latentcause installed and
access to the source. Where the result goes depends on the deployment:

- shared file system (the default): the worker writes the complete result into a staging
  folder ``results/.tmp-*`` of the store and returns its name; the coordinator commits it;
- ``return_artefacts=True``: the worker writes into a private temp folder and returns the
  files' bytes; the coordinator writes them into the store. Use this when workers do not see
  the store (they must still see file sources, or use Prometheus sources).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from latentcause.store._layout import staging_path, write_json_atomic
from latentcause.store._spec import load_spec, source_sha256
from latentcause.store._stamp import STAMP_NAME, current_identity, make_stamp, utc_now

__all__ = ["run_incident"]

log = logging.getLogger(__name__)


def run_incident(
    spec_path: str,
    result_root: str,
    seed: int,
    *,
    return_artefacts: bool = False,
) -> dict[str, Any]:
    """Analyse one stored incident and write its result, complete, beside the results.

    Parameters
    ----------
    spec_path
        The incident's ``incident.toml`` (as the worker sees it).
    result_root
        The incident's ``results/`` folder; the result is staged in a ``.tmp-*`` folder there.
    seed
        Random seed of the analysis (the spec's seed; the same seed gives the same report on
        any executor).
    return_artefacts
        Return the files' bytes instead of staging them in ``result_root``.

    Returns
    -------
    dict
        ``incident``, ``seed``, ``stamp`` (the stamp.json content) and either ``staged`` (the
        staging folder's name inside ``result_root``) or ``artefacts`` (file name -> bytes).
    """
    from latentcause import inference
    from latentcause.loading import load_observations
    from latentcause.reports import write_outputs

    started = utc_now()
    spec = load_spec(Path(spec_path))
    source_sha = source_sha256(spec)  # before reading: a change during the run shows next time
    obs = load_observations(**spec.load_kwargs())
    options: dict[str, Any] = {"seed": seed}
    if spec.draws is not None:
        options["draws"] = spec.draws
    result = inference.analyze(obs, **options)
    identity = current_identity()

    def write(out: Path) -> dict[str, Any]:
        write_outputs(result, out)
        stamp = make_stamp(spec, result.report, source_sha=source_sha, identity=identity,
                           started=started, finished=utc_now())
        stamp["seed"] = seed
        write_json_atomic(out / STAMP_NAME, stamp)
        return stamp

    if return_artefacts:
        with tempfile.TemporaryDirectory(prefix="latentcause-result-") as tmp:
            out = Path(tmp) / "result"
            stamp = write(out)
            artefacts = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}
        return {"incident": spec.id, "seed": seed, "stamp": stamp, "artefacts": artefacts}

    staged = staging_path(Path(result_root))
    try:
        stamp = write(staged)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    log.debug("%s: staged %s", spec.id, staged)
    return {"incident": spec.id, "seed": seed, "stamp": stamp, "staged": staged.name}
