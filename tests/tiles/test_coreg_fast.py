"""The faster co-registration and normalisation pieces give the same numbers as the slow ones."""

import numpy as np
import pytest
from skimage.registration import phase_cross_correlation

from tiles.coreg import _FullValid, _refine_subpixel, _shifted_correlation, estimate_shift, phase_peak, shift_bilinear
from tiles.radiometry import match_histograms_masked
from tiles.resample import _pillow_mapped, _resample_inside, resample_affine


@pytest.mark.parametrize("seed", range(6))
def test_phase_peak_is_skimage_integer_peak(seed):
    rng = np.random.default_rng(seed)
    base = rng.random((140, 140)).astype(np.float32)
    dy, dx = (int(v) for v in rng.integers(-5, 6, 2))
    ref = base[6:134, 6:134]
    mov = base[6 - dy : 134 - dy, 6 - dx : 134 - dx]
    window = np.outer(np.hanning(128), np.hanning(128)).astype(np.float32)
    fb, fa = (ref - ref.mean()) * window, (mov - mov.mean()) * window
    expected, _, _ = phase_cross_correlation(fb, fa, upsample_factor=1, normalization="phase")
    got = phase_peak(fb, fa)
    assert got == (float(expected[0]), float(expected[1]))
    assert got == (float(-dy), float(-dx))  # and it is the true shift (registers moving onto reference)


def test_phase_peak_refuses_nan():
    a = np.zeros((32, 32), np.float32)
    a[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        phase_peak(a, np.ones((32, 32), np.float32))


def _per_band_reference(after, before, mask, levels=1024):
    """The per-band loop the vectorised matching replaced (kept here as the specification)."""
    n = int(mask.sum())
    top = levels - 1
    grid = np.linspace(0.0, 1.0, levels)
    out = np.empty_like(after)
    for b in range(after.shape[0]):
        qa = np.rint(np.clip(after[b], 0.0, 1.0) * top).astype(np.intp)
        qb = np.rint(np.clip(before[b][mask], 0.0, 1.0) * top).astype(np.intp)
        cdf_a = np.cumsum(np.bincount(qa[mask], minlength=levels)) / n
        cdf_b = np.cumsum(np.bincount(qb, minlength=levels)) / n
        ca = cdf_a - 0.5 * np.diff(cdf_a, prepend=0.0)
        cb = cdf_b - 0.5 * np.diff(cdf_b, prepend=0.0)
        keep = np.diff(cb, prepend=-1.0) > 0
        out[b] = np.interp(ca, cb[keep], grid[keep]).astype(np.float32)[qa]
    return out


@pytest.mark.parametrize("seed", range(6))
def test_histogram_matching_bit_identical_to_per_band_loop(seed):
    rng = np.random.default_rng(seed)
    before = rng.beta(2, 5, (3, 64, 64)).astype(np.float32)
    after = np.clip(before * 0.7 + 0.1 + rng.normal(0, 0.05, before.shape), 0, 1).astype(np.float32)
    # a partial mask (the spare-bin path) and a full one (no masking at all)
    mask = rng.random((64, 64)) > 0.2 if seed % 2 else np.ones((64, 64), bool)
    got = match_histograms_masked(after, before, mask)
    assert got.dtype == np.float32 and got.shape == after.shape
    assert got.tobytes() == _per_band_reference(after, before, mask).tobytes()
    # and it did match: the after band means move towards before's
    assert abs(got[0][mask].mean() - before[0][mask].mean()) < abs(after[0][mask].mean() - before[0][mask].mean())


def _textured_pair(seed, shift=(0.6, -1.3)):
    """A smooth random texture and the same moved by a sub-pixel ``shift`` (rows, cols), 3 bands."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    big = ndimage.gaussian_filter(rng.random((3, 160, 160)), (0, 2, 2)).astype(np.float32)
    moved = ndimage.shift(big, (0, *shift), order=1)
    return big[:, 16:144, 16:144], moved[:, 16:144, 16:144]


@pytest.mark.parametrize("seed", range(4))
def test_full_valid_refinement_is_the_masked_one_bit_for_bit(seed):
    """The slicing/caching path for all-valid chips gives the boolean-mask path's exact floats."""
    before, after = _textured_pair(seed)
    gb, ga = before.mean(axis=0), after.mean(axis=0)
    ones = np.ones(gb.shape, bool)
    grad = np.gradient(gb.astype(np.float64))
    fast = _FullValid(gb, ga)
    # vb_all=False: the boolean-mask gathers of the general path (the code before the fast path)
    masked = dict(vb_all=False, va_all=True)
    for start in ((0.0, 0.0), (-1.0, 1.0), (2.0, -3.0)):
        slow = _refine_subpixel(gb, ga, ones, ones, grad, *start, **masked)
        assert fast.refine(*start) == slow
        assert fast.correlation(*slow) == _shifted_correlation(gb, ga, ones, ones, *slow, **masked)
        assert _refine_subpixel(gb, ga, ones, ones, grad, *start) == slow  # flags looked up: same
    assert fast.correlation(0.4, -0.7) == _shifted_correlation(gb, ga, ones, ones, 0.4, -0.7, **masked)
    # and the estimate finds the shift (moving after by -shift registers it)
    est = estimate_shift(before, after, ones, ones)
    assert abs(est.dy + 0.6) < 0.15 and abs(est.dx - 1.3) < 0.15 and est.confidence > 0.9


def _public_pillow(native, affine, out_px, order):
    """Pillow's public frombuffer/transform/tobytes path (the specification of the mapped one)."""
    from PIL import Image

    a, b = affine[1, 1], affine[1, 0]
    c = affine[1, 2] + 0.5 - 0.5 * (a + b)
    d, e = affine[0, 1], affine[0, 0]
    f = affine[0, 2] + 0.5 - 0.5 * (d + e)
    method = Image.Resampling.BILINEAR if order == 1 else Image.Resampling.NEAREST
    out = np.empty((native.shape[0], out_px, out_px), np.float32)
    h, w = native.shape[1:]
    for band in range(native.shape[0]):
        img = Image.frombuffer("F", (w, h), np.ascontiguousarray(native[band]), "raw", "F", 0, 1)
        moved = img.transform((out_px, out_px), Image.Transform.AFFINE, (a, b, c, d, e, f), resample=method)
        out[band] = np.frombuffer(moved.tobytes(), np.float32).reshape(out_px, out_px)
    return np.clip(out, 0.0, 1.0)


@pytest.mark.parametrize("order", [0, 1])
def test_mapped_pillow_resampling_is_the_public_path_bit_for_bit(order):
    assert _pillow_mapped()  # this Pillow supports it (else the public path is used: still correct)
    rng = np.random.default_rng(order)
    for k in range(8):
        native = rng.random((3, 150, 160), dtype=np.float32)
        angle = 0.0 if k % 2 else rng.uniform(-0.1, 0.1)
        scale = rng.uniform(0.8, 1.1)
        affine = np.array([
            [scale * np.cos(angle), -scale * np.sin(angle), 10.0 + rng.uniform(0, 3)],
            [scale * np.sin(angle), scale * np.cos(angle), 12.0 + rng.uniform(0, 3)],
        ])
        got = _resample_inside(native, affine, 100, order)
        assert got.tobytes() == _public_pillow(native, affine, 100, order).tobytes()
        image, valid = resample_affine(native, np.ones((150, 160), np.float32), affine, 100, order=order)
        assert valid.all() and image.tobytes() == got.tobytes()


def test_mapped_resampling_also_runs_on_a_pillow_with_the_older_transform2_name(monkeypatch):
    """Pillow (>= 10.0 is allowed) called the C-level method ``transform2`` before renaming it
    ``transform``: there the mapped path is used too (not silently the slower copying path)."""
    from PIL import Image

    real_map_buffer = Image.core.map_buffer

    class OlderCore:  # a core image that only has the older name
        def __init__(self, core):
            self._core = core

        def transform2(self, box, src, *args):
            return self._core.transform(box, src._core if isinstance(src, OlderCore) else src, *args)

    def map_buffer(*args):
        return OlderCore(real_map_buffer(*args))

    monkeypatch.setattr(Image.core, "map_buffer", map_buffer)
    _pillow_mapped.cache_clear()
    try:
        assert _pillow_mapped() == "transform2"
        rng = np.random.default_rng(3)
        native = rng.random((2, 60, 70), dtype=np.float32)
        affine = np.array([[0.9, 0.05, 5.5], [-0.04, 1.02, 6.25]])
        got = _resample_inside(native, affine, 40, 1)
        assert got.tobytes() == _public_pillow(native, affine, 40, 1).tobytes()
    finally:
        _pillow_mapped.cache_clear()


def test_full_valid_path_with_negative_zeros_is_the_masked_one_bit_for_bit():
    """The moved after starts from its first tap (not from zeros): a -0.0 in the grey after
    (a float raster's negative zero with nearest resampling) still gives the masked path's floats."""
    before, after = _textured_pair(5)
    gb, ga = before.mean(axis=0), after.mean(axis=0)
    ga[10:40, 20:60] = -0.0
    gb[70:90, 5:30] = -0.0
    ones = np.ones(gb.shape, bool)
    grad = np.gradient(gb.astype(np.float64))
    fast = _FullValid(gb, ga)
    masked = dict(vb_all=False, va_all=True)
    for start in ((0.0, 0.0), (1.0, -2.0)):
        slow = _refine_subpixel(gb, ga, ones, ones, grad, *start, **masked)
        assert fast.refine(*start) == slow
        assert fast.correlation(*slow) == _shifted_correlation(gb, ga, ones, ones, *slow, **masked)
    for dy, dx in ((0.0, 0.0), (-1.0, 2.0), (0.25, 0.5)):
        assert fast.correlation(dy, dx) == _shifted_correlation(gb, ga, ones, ones, dy, dx, **masked)
        # the moved after itself, zero signs included, is shift_bilinear's (taps summed onto zeros)
        taps = fast._taps(dy, dx)
        r0, r1, c0, c1 = rect = fast._tap_rect(taps)
        moved, _ = shift_bilinear(ga, ones, dy, dx)
        assert fast._moved(taps, rect).tobytes() == np.ascontiguousarray(moved[r0:r1, c0:c1]).tobytes()


@pytest.mark.parametrize("partial", [False, True])
def test_given_band_means_and_cloud_mean_change_nothing(partial):
    """The cutter takes each chip's band mean once and hands it to co-registration and the
    cloud test: the same estimate and the same mask as when each takes its own."""
    from tiles.config import TilesConfig
    from tiles.quality import band_range, cloud_like

    before, after = _textured_pair(2)
    rng = np.random.default_rng(9)
    vb = rng.random(before.shape[1:]) > 0.1 if partial else np.ones(before.shape[1:], bool)
    va = np.ones(before.shape[1:], bool)
    means = (before.mean(axis=0), after.mean(axis=0))
    assert estimate_shift(before, after, vb, va, band_means=means) == estimate_shift(before, after, vb, va)
    bright = np.clip(before * 0.2 + 0.78, 0, 1).astype(np.float32)  # bright grey: the texture test runs
    cfg = TilesConfig()
    expected = cloud_like(bright, vb, cfg)
    assert expected.any()
    got = cloud_like(bright, vb, cfg, lo_hi=band_range(bright), mean=bright.mean(axis=0))
    assert got.tobytes() == expected.tobytes()


def test_steps_are_numpy_diff_with_prepend():
    from tiles.radiometry import _steps

    rng = np.random.default_rng(4)
    x = np.cumsum(rng.random((3, 1024)), axis=1) / 700.0
    for first in (0.0, -1.0):
        assert _steps(x, first).tobytes() == np.diff(x, axis=1, prepend=first).tobytes()
