"""Settings of batch detection (defaults live here and nowhere else)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from sitewatch.errors import ConfigError

#: settings that change only how a run is presented or paced, never a score: a run folder may be
#: resumed with different values of these (see :func:`detect.run.run_fingerprint`).
#: ``spatial_order`` only reorders the batches (the journal's batch check names it when a journal
#: was planned with the other value, e.g. by a version before it existed, in input order).
PRESENTATION_KEYS = frozenset(
    {"chips_top_n", "report_max_sites", "prefetch_batches", "journal_fsync_every", "threads", "run_keys_dir", "cut_workers",
     "caution", "caution_gsd_factor", "caution_off_nadir_margin_deg", "spatial_order"}
)


@dataclass(frozen=True)
class DetectConfig:
    """How ``sitewatch detect`` runs.

    Attributes:
        batch_size: sites per scoring batch. Batches are also the unit of the resume journal and
            of Dask tasks, so the same batch is scored the same way on every path.
        operating_point: which threshold turns a score into ``flagged``: the name of one of the
            model's calibrated operating points (``"screening"``: high recall, for a first pass;
            ``"evidence"``: high precision) or a probability such as ``"0.7"``.
        chips_top_n: write before/after/heatmap chips for this many top-ranked sites; ``-1``
            writes them for every assessable site, ``0`` for none.
        report_max_sites: at most this many flagged sites are shown in ``report.html``.
        prefetch_batches: how many cut batches the reader thread may hold ahead of the model
            (bounds memory; I/O overlaps inference).
        journal_fsync_every: fsync the resume journal after this many batches.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        tta: average the model over flips (slower, slightly steadier).
        threads: torch threads for inference; 0 = all cores but one (the reader thread cuts
            the next batches on the spare core).
        score_decimals: decimals of ``score`` in ``scores.csv``; ranking uses the written value,
            so equal printed scores are ordered by ``site_id``.
        group_by_scene: order batches by the scenes that cover the sites so a worker keeps few
            rasters open (the Dask path always does this; local runs do too so both paths score
            identical batches).
        spatial_order: within a scene group, batch sites along a space-filling curve (256 m
            cells) instead of their input order, so neighbouring sites read the same raster
            blocks while GDAL has them cached (:func:`detect.pipeline.spatial_order`). Scores
            are the same either way; the batches differ, so a run is resumed with its own value.
        embeddings: write ``embeddings.npz`` (for the review app's quick re-rank).
        run_keys_dir: folder of the secret run keys that authenticate resume journals, kept
            outside run folders so that a hand-edited journal is refused (``detect.journal``);
            None = ``$SITEWATCH_CACHE/run-keys``, else ``~/.cache/sitewatch/run-keys``.
        parts: score facilities part by part (:mod:`detect.parts`): ``auto`` splits the
            *facilities* that are larger than one chip (a ``kind`` listed in
            ``tiles.parts.kind_radius_m``, or a footprint), ``on`` every site larger than one
            chip (also plain ``radius_m`` sites), ``off`` none (one window per site, as before).
        context: score a ring of chips around sites (``tiles.parts.context_*``) for
            ``context_damage`` and ``targeted``: ``auto`` around facilities, ``on`` around every
            site, ``off`` none.
        parts_aggregate: how a site's score is made from its assessed parts: ``max`` (the most
            damaged part; default) or ``noisy_or`` (``1 - prod(1 - p)``, which assumes independent
            parts and grows with their number).
        targeted_max_context_damage: a damaged (flagged) site is ``targeted`` when at most this
            share of its assessed context chips is flagged.
        context_min_assessed: fewer assessed context chips than this leave ``targeted`` empty
            (cannot tell).
        series_pair_span: with ``--series``, pairs of usable dates up to this many dates apart
            are scored (1: consecutive pairs only; 2 also skips one date, which lets the fit
            tell one bad date from a change). See :mod:`detect.series`.
        series_min_llr: a bracket needs the best change hypothesis to beat no change by this
            many nats.
        series_eps: the fit's predicted probability of a change-looking pair that does not
            straddle the change (``1 - eps`` for one that does).
        series_outlier_penalty: cost in nats of leaving one date out as an outlier.
        series_max_reference_tries: dates tried as the common reference (oldest first) when
            too few dates pass the quality gates against the first one.
        series_max_cloud_fraction: a date whose cloud-like fraction against the reference
            exceeds this while the neighbouring dates' do not (a passing cloud; rubble and dust
            look cloud-like too but persist) is left out of a series of three or more usable
            dates (stricter than ``tiles.max_cloud_fraction``: a partly clouded date looks like
            a change); None: the tiles setting alone.
        cut_workers: processes that cut pairs for the scorer on a local run (:mod:`detect.workers`);
            None = the cores the scorer does not use (at least 1); ``0`` = cut in a reader thread
            of this process instead. Never changes a score (batches are cut in plan order).
        backend: how the model runs: ``torch`` (every device, tta), or the network exported to
            ONNX and run on the CPU by ``onnx`` (ONNX Runtime) or ``openvino`` (OpenVINO; see
            :mod:`models.backends`; optional packages: ``pip install 'sitewatch[onnx]'``).
        caution: write the ``caution`` column: reasons an assessed pair lies outside the model's
            training envelope (:mod:`detect.caution`). A caution never changes a score, a rank
            or a flag.
        caution_gsd_factor: caution ``gsd_outside_training`` when an epoch's native GSD is
            coarser than the training envelope's coarsest times this, or finer than its finest
            over this; None = no GSD caution.
        caution_off_nadir_margin_deg: caution ``off_nadir_difference`` when the epochs'
            off-nadir angles (STAC ``view:off_nadir``) differ by more than the training
            envelope's largest difference plus this many degrees; None = no angle caution.
    """

    batch_size: int = 64
    operating_point: str = "screening"
    chips_top_n: int = 200
    report_max_sites: int = 200
    prefetch_batches: int = 4
    journal_fsync_every: int = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    tta: bool = False
    threads: int = 0
    score_decimals: int = 6
    group_by_scene: bool = True
    spatial_order: bool = True
    embeddings: bool = True
    run_keys_dir: str | None = None
    parts: Literal["auto", "on", "off"] = "auto"
    context: Literal["auto", "on", "off"] = "auto"
    parts_aggregate: Literal["max", "noisy_or"] = "max"
    targeted_max_context_damage: float = 0.25
    context_min_assessed: int = 4
    series_pair_span: int = 2
    series_min_llr: float = 1.0
    series_eps: float = 0.05
    series_outlier_penalty: float = 1.0
    series_max_reference_tries: int = 3
    series_max_cloud_fraction: float | None = 0.05
    cut_workers: int | None = 0
    backend: Literal["torch", "onnx", "openvino"] = "torch"
    caution: bool = True
    caution_gsd_factor: float | None = 1.5
    caution_off_nadir_margin_deg: float | None = 5.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.targeted_max_context_damage <= 1.0:
            raise ConfigError(
                f"detect.targeted_max_context_damage: must be between 0 and 1, got {self.targeted_max_context_damage:g}",
                setting="detect.targeted_max_context_damage",
            )
        if self.context_min_assessed < 1:
            raise ConfigError(
                f"detect.context_min_assessed: must be at least 1, got {self.context_min_assessed}",
                setting="detect.context_min_assessed",
            )
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.chips_top_n < -1:
            raise ValueError("chips_top_n must be -1 (all), 0 (none) or a positive count")
        if self.report_max_sites < 0:
            raise ValueError("report_max_sites must be 0 or more")
        if self.prefetch_batches < 1:
            raise ValueError("prefetch_batches must be at least 1")
        if self.journal_fsync_every < 1:
            raise ValueError("journal_fsync_every must be at least 1")
        if self.cut_workers is not None and self.cut_workers < 0:
            raise ConfigError(
                f"detect.cut_workers: must be null (the cores the scorer leaves), 0 (a reader thread) or a "
                f"count of processes, got {self.cut_workers}",
                setting="detect.cut_workers",
            )
        if self.backend not in ("torch", "onnx", "openvino"):
            raise ConfigError(
                f"detect.backend: must be torch, onnx or openvino, got {self.backend!r}", setting="detect.backend"
            )
        if self.caution_gsd_factor is not None and not (math.isfinite(self.caution_gsd_factor) and self.caution_gsd_factor >= 1.0):
            raise ConfigError(
                f"detect.caution_gsd_factor: must be null (no GSD caution) or a factor of at least 1, got {self.caution_gsd_factor:g}",
                setting="detect.caution_gsd_factor",
            )
        if self.caution_off_nadir_margin_deg is not None and not (
            math.isfinite(self.caution_off_nadir_margin_deg) and self.caution_off_nadir_margin_deg >= 0.0
        ):
            raise ConfigError(
                f"detect.caution_off_nadir_margin_deg: must be null (no angle caution) or 0 degrees or more, "
                f"got {self.caution_off_nadir_margin_deg:g}",
                setting="detect.caution_off_nadir_margin_deg",
            )
        if self.threads < 0:
            raise ValueError("threads must be 0 (all cores but one) or a positive count")
        if not 2 <= self.score_decimals <= 12:
            raise ValueError("score_decimals must be between 2 and 12")
        if not self.operating_point.strip():
            raise ValueError("operating_point must name an operating point or give a probability")

        if self.series_pair_span < 1:
            raise ConfigError(f"detect.series_pair_span: must be at least 1, got {self.series_pair_span}", setting="detect.series_pair_span")
        if not 0.0 < self.series_eps < 0.5:
            raise ConfigError(f"detect.series_eps: must be between 0 and 0.5, got {self.series_eps:g}", setting="detect.series_eps")
        if self.series_outlier_penalty < 0:
            raise ConfigError(
                f"detect.series_outlier_penalty: must not be negative (nats), got {self.series_outlier_penalty:g}",
                setting="detect.series_outlier_penalty",
            )
        if self.series_max_cloud_fraction is not None and not 0.0 <= self.series_max_cloud_fraction <= 1.0:
            raise ConfigError(
                f"detect.series_max_cloud_fraction: must be between 0 and 1, got {self.series_max_cloud_fraction:g}",
                setting="detect.series_max_cloud_fraction",
            )
        if self.series_max_reference_tries < 1:
            raise ConfigError(
                f"detect.series_max_reference_tries: must be at least 1, got {self.series_max_reference_tries}",
                setting="detect.series_max_reference_tries",
            )
