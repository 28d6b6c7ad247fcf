"""The training envelope of a checkpoint: the acquisition conditions its training pairs covered.

A pair far outside them (imagery much coarser than anything trained on, epochs seen from very
different angles) gets a visible caution in ``sitewatch detect``'s output (:mod:`detect.caution`);
the score is not changed.

Where the envelope comes from (:func:`training_envelope`):

* ``meta.json["envelope"]`` when the trainer recorded it (:func:`envelope_from_train_config`
  at save time);
* otherwise, for checkpoints written before it existed (the bundled ``models/default``, whose
  weights and meta stay as shipped), derived the same way from the ``train_config`` the
  checkpoint records.

Both come from the synthetic generator's settings of every ``synth:N`` dataset in the training
data (``synth.gsd_m``, ``synth.after_gsd_m``, ``synth.resolution_change``, ``synth.off_nadir``
and ``synth.max_off_nadir_deg``: the ranges the generator draws from) and, for a fine-tuned
model, the envelope of the model it started from (``train_config["from"]``). Real labelled
folders in the training data are not measured (their scenes' GSD and view angles are not kept
with the cut pairs): they are listed in ``unmeasured``, and a bound is only known when some
synthetic data set it. None = unknown: no caution is raised from an unknown bound.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

log = logging.getLogger(__name__)

#: the synthetic generator's defaults for settings a recorded ``synth`` section may lack
#: (``tiles.synth.config.SynthConfig``; models must not import tiles' generator).
_SYNTH_DEFAULTS = {"gsd_m": 0.5, "after_gsd_m": None, "resolution_change": 0.0, "off_nadir": 0.4, "max_off_nadir_deg": 30.0}
#: how far a native resolution reaches above the rendered one at ``resolution_change`` = 1
#: (``tiles.synth.nuisance``: native = gsd_m + 0.7 m * strength * u**0.7)
_RESOLUTION_CHANGE_SPAN_M = 0.7
#: the smallest share of the strongest off-nadir angle an epoch draws (``rng.uniform(0.1, 1)``),
#: so two epochs of one region differ by at most ``(1 - 0.1)`` of it
_OFF_NADIR_MIN_SHARE = 0.1


@dataclass(frozen=True)
class TrainingEnvelope:
    """Acquisition conditions covered by a model's training pairs.

    Attributes:
        gsd_min_m, gsd_max_m: the finest and coarsest native resolution of a training epoch,
            metres per pixel (None = unknown).
        off_nadir_difference_max_deg: the largest off-nadir angle difference between the two
            epochs of a training pair, degrees (None = unknown).
        source: where it was found: ``meta.json`` (recorded by the trainer) or ``train_config``
            (derived from the recorded training settings).
        unmeasured: training data whose conditions are not in the bounds (real folders, a
            starting model whose envelope is unknown).
    """

    gsd_min_m: float | None = None
    gsd_max_m: float | None = None
    off_nadir_difference_max_deg: float | None = None
    source: str = "train_config"
    unmeasured: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        """Whether any bound is known."""
        return self.gsd_max_m is not None or self.off_nadir_difference_max_deg is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict for ``meta.json["envelope"]`` (numbers rounded to 4 decimals)."""
        def r(v: float | None) -> float | None:
            return None if v is None else round(float(v), 4)

        return {
            "gsd_min_m": r(self.gsd_min_m),
            "gsd_max_m": r(self.gsd_max_m),
            "off_nadir_difference_max_deg": r(self.off_nadir_difference_max_deg),
            "unmeasured": list(self.unmeasured),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "meta.json") -> "TrainingEnvelope":
        """Read back :meth:`to_dict`; a missing or non-numeric bound is unknown (None)."""
        def number(key: str) -> float | None:
            v = data.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                return None
            return float(v)

        unmeasured = data.get("unmeasured") or ()
        return cls(
            gsd_min_m=number("gsd_min_m"),
            gsd_max_m=number("gsd_max_m"),
            off_nadir_difference_max_deg=number("off_nadir_difference_max_deg"),
            source=source,
            unmeasured=tuple(str(u) for u in unmeasured) if isinstance(unmeasured, (list, tuple)) else (),
        )

    def union(self, other: "TrainingEnvelope") -> "TrainingEnvelope":
        """Both envelopes together (a bound stays unknown only when both lack it)."""
        def lo(a: float | None, b: float | None) -> float | None:
            return b if a is None else (a if b is None else min(a, b))

        def hi(a: float | None, b: float | None) -> float | None:
            return b if a is None else (a if b is None else max(a, b))

        return TrainingEnvelope(
            gsd_min_m=lo(self.gsd_min_m, other.gsd_min_m),
            gsd_max_m=hi(self.gsd_max_m, other.gsd_max_m),
            off_nadir_difference_max_deg=hi(self.off_nadir_difference_max_deg, other.off_nadir_difference_max_deg),
            source=self.source,
            unmeasured=tuple(dict.fromkeys(self.unmeasured + other.unmeasured)),
        )


def synth_envelope(synth: Mapping[str, Any]) -> TrainingEnvelope:
    """The conditions the synthetic generator draws from with these settings (a ``synth``
    config section as recorded in ``train_config``)."""
    s = {**_SYNTH_DEFAULTS, **{k: v for k, v in synth.items() if v is not None}}
    gsd = float(s["gsd_m"])
    after = float(s["after_gsd_m"]) if s.get("after_gsd_m") else gsd  # 0 / None = same as before
    coarse = max(gsd, after) + _RESOLUTION_CHANGE_SPAN_M * max(float(s["resolution_change"]), 0.0)
    strongest = max(float(s["off_nadir"]), 0.0) * float(s["max_off_nadir_deg"])
    return TrainingEnvelope(
        gsd_min_m=min(gsd, after),
        gsd_max_m=coarse,
        off_nadir_difference_max_deg=strongest * (1.0 - _OFF_NADIR_MIN_SHARE),
    )


def envelope_from_train_config(
    train_config: Mapping[str, Any], *, start_envelope: Callable[[str], "TrainingEnvelope | None"] | None = None
) -> TrainingEnvelope:
    """The envelope of a training run from its effective config (``meta.json["train_config"]``).

    Args:
        train_config: the recorded config: ``data`` (or ``train.data``) lists the DATASET
            arguments, ``synth`` the generator settings, ``from`` the starting model.
        start_envelope: ``from`` value -> that model's envelope (None when it cannot be read);
            None = the starting model is not looked up (listed in ``unmeasured``).

    Returns:
        The union over the ``synth:N`` datasets and the starting model; everything else is
        listed in ``unmeasured``.
    """
    data = train_config.get("data") or (train_config.get("train") or {}).get("data") or ()
    specs = [str(d) for d in data] if isinstance(data, (list, tuple)) else []
    synth = train_config.get("synth") or {}
    env = TrainingEnvelope(source="train_config")
    unmeasured: list[str] = []
    for spec in specs:
        if spec.startswith("synth:"):
            env = env.union(synth_envelope(synth if isinstance(synth, Mapping) else {}))
        else:
            unmeasured.append(spec)
    start = train_config.get("from")
    if start:
        found = start_envelope(str(start)) if start_envelope is not None else None
        if found is None:
            unmeasured.append(f"from:{start}")
        else:
            env = env.union(found)
    return TrainingEnvelope(
        gsd_min_m=env.gsd_min_m,
        gsd_max_m=env.gsd_max_m,
        off_nadir_difference_max_deg=env.off_nadir_difference_max_deg,
        source="train_config",
        unmeasured=tuple(dict.fromkeys(env.unmeasured + tuple(unmeasured))),
    )
