"""``sitewatch demo``: a synthetic scene, a detection run with the bundled model, and a check
of the ranking against the scene's known truth. Needs no data and no network.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from detect.agreement import precision_at_k, roc_auc
from detect.runfolder import ScoreRow, read_scores
from detect.run import RunSummary, run_detect
from detect.config import DetectConfig
from tiles.config import TilesConfig
from tiles.types import damage_to_label

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced.

    Attributes:
        scene_dir: the generated labelled dataset (``sites.csv``, ``before/``, ``after/``).
        summary: the detection run's summary (``summary.run_dir`` is the run folder).
        auc: ROC AUC of the scores against the truth (positives: major-damage, destroyed).
        precision_at_k: fraction of truly damaged sites among the top ``k`` ranked sites.
        k: the ``k`` used (the number of truly damaged assessed sites, at most 50).
        positives, negatives: labelled assessed sites of each class.
        top_rows: the first rows of ``scores.csv`` (with the truth in ``damage``).
        scene_reused: an existing scene of the same size and seed was reused (else generated).
    """

    scene_dir: Path
    summary: RunSummary
    auc: float
    precision_at_k: float
    k: int
    positives: int
    negatives: int
    top_rows: tuple[ScoreRow, ...]
    scene_reused: bool = False


def run_demo(
    out: str | Path,
    *,
    sites: int = 300,
    seed: int = 0,
    model: str | Path = "default",
    tiles: TilesConfig | None = None,
    detect: DetectConfig | None = None,
    progress: bool | None = None,
    top: int = 10,
) -> DemoResult:
    """Generate a synthetic scene into ``out/scene``, detect into ``out/run`` and score the ranking.

    Args:
        out: the demo folder. An existing scene is reused only when its ``synth.yaml`` holds
            the same settings (sites, seed, ...); otherwise it is generated again. The run is
            overwritten.
        sites: sites in the synthetic scene.
        seed: the scene's random seed.
        model: a model folder or ``"default"``.
        tiles, detect: the tiles and detect settings (defaults when None).
        progress: show progress bars (None: automatic).
        top: rows of the ranked list to return for printing.
    """
    from tiles.synth import generate_dataset
    from tiles.synth.config import SynthConfig

    out = Path(out)
    scene = out / "scene"
    run_dir = out / "run"
    synth_cfg = replace(SynthConfig(), sites=sites, seed=seed)
    reused = _same_scene(scene, synth_cfg)
    if not reused:
        stale = (scene / "sites.csv").is_file()
        log.info(
            "%s a synthetic scene with %d sites (seed %d) in %s",
            "regenerating (different settings)" if stale else "generating", sites, seed, scene,
        )
        generate_dataset(scene, synth_cfg, progress=progress, overwrite=stale)
    else:
        log.info("reusing the synthetic scene in %s (same sites and seed)", scene)
    summary = run_detect(
        scene / "sites.csv",
        [scene / "before"],
        [scene / "after"],
        run_dir,
        tiles=tiles,
        detect=detect,
        model=model,
        overwrite=True,
        progress=progress,
    )
    rows = read_scores(summary.scores_csv)
    ranked = [r for r in rows if r.ok and damage_to_label(r.damage) is not None]
    labels = [damage_to_label(r.damage) or 0 for r in ranked]
    scores = [float(r.score) for r in ranked]  # type: ignore[arg-type]
    positives = sum(labels)
    k = max(1, min(50, positives))
    return DemoResult(
        scene_dir=scene,
        summary=summary,
        auc=roc_auc(labels, scores),
        precision_at_k=precision_at_k(labels, k),
        k=k,
        positives=positives,
        negatives=len(labels) - positives,
        top_rows=tuple(rows[:top]),
        scene_reused=reused,
    )


def _same_scene(scene: Path, synth_cfg: object) -> bool:
    """Whether ``scene`` holds a finished synthetic dataset generated with ``synth_cfg``."""
    import yaml

    from sitewatch.config import config_to_dict

    recorded = scene / "synth.yaml"
    if not (scene / "sites.csv").is_file() or not recorded.is_file():
        return False
    try:
        data = yaml.safe_load(recorded.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and data.get("synth") == config_to_dict(synth_cfg)
