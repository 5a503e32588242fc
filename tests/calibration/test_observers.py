"""Tests of the range observers: exact merges, degenerate data, per-channel ranges, numeric sanity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from onnxq.calibration._histogram import GrowableHistogram, kl_divergences, mse_range, required_k
from onnxq.calibration.observers import (
    OBSERVERS,
    EntropyObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    PercentileObserver,
    make_observer,
)
from onnxq.errors import CalibrationError, ConfigError

FAST = settings(max_examples=50, deadline=None)
HISTOGRAM_METHODS = ["percentile", "entropy", "mse"]
EXACT_METHODS = ["minmax", *HISTOGRAM_METHODS]

# float32 values over many scales, including the -3.4e38 of attention masks and subnormals
any_float32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
moderate = st.one_of(
    st.floats(-10.0, 10.0, width=32),
    st.floats(-2.0**66, 2.0**66, width=32),
    st.floats(-(2.0**-100), 2.0**-100, width=32),
    st.sampled_from([0.0, -3.4e38, 1e30, -1e30]),
)


def batches(elements: st.SearchStrategy[float]) -> st.SearchStrategy[list[np.ndarray]]:
    """2-6 float32 batches of 0-40 elements."""
    array = hnp.arrays(np.float32, st.integers(0, 40), elements=elements)
    return st.lists(array, min_size=2, max_size=6)


def _observe(method: str, arrays: list[np.ndarray], **options: object):
    obs = make_observer(method, **options)
    for a in arrays:
        obs.update(a)
    return obs


def _check_merge(method: str, arrays: list[np.ndarray], cut: int, **options: object) -> None:
    """Observers over two shards, merged, must equal one observer over everything."""
    if not any(a.size for a in arrays):
        arrays = [*arrays, np.zeros(1, np.float32)]
    single = _observe(method, arrays, **options)
    left, right = _observe(method, arrays[:cut], **options), _observe(method, arrays[cut:], **options)
    left.merge(right)
    assert left.compute_range() == single.compute_range()
    assert left.state_nbytes == single.state_nbytes


@FAST
@given(arrays=batches(any_float32), cut=st.integers(0, 6), method=st.sampled_from(EXACT_METHODS))
def test_merge_of_shards_equals_single_pass(arrays: list[np.ndarray], cut: int, method: str) -> None:
    _check_merge(method, arrays, cut)


@FAST
@given(arrays=batches(moderate), cut=st.integers(0, 6), method=st.sampled_from(HISTOGRAM_METHODS))
def test_histogram_merge_is_exact_with_mixed_scales(arrays: list[np.ndarray], cut: int, method: str) -> None:
    _check_merge(method, arrays, cut, bins=16)


@FAST
@given(arrays=batches(any_float32))
def test_minmax_is_exact_and_contains_the_data(arrays: list[np.ndarray]) -> None:
    data = np.concatenate(arrays)
    if data.size == 0:
        return
    r = _observe("minmax", arrays).compute_range()
    assert r.min == float(np.min(data)) and r.max == float(np.max(data))
    assert r.data_min == r.min and r.data_max == r.max and r.count == data.size
    assert r.samples == len(arrays)
    assert r.extreme == int(np.count_nonzero(np.abs(data) >= 1e30))


@FAST
@given(
    arrays=st.integers(1, 4).flatmap(
        lambda ndim: st.tuples(
            st.integers(0, ndim - 1),
            hnp.array_shapes(min_dims=ndim, max_dims=ndim, min_side=1, max_side=4),
        )
    ).flatmap(
        lambda spec: st.tuples(
            st.just(spec[0]),
            st.lists(hnp.arrays(np.float32, spec[1], elements=any_float32), min_size=1, max_size=3),
        )
    ),
    negative_axis=st.booleans(),
)
def test_per_channel_minmax_equals_numpy(arrays: tuple[int, list[np.ndarray]], negative_axis: bool) -> None:
    axis, data = arrays
    ndim = data[0].ndim
    obs = MinMaxObserver(per_channel_axis=axis - ndim if negative_axis else axis)
    for a in data:
        obs.update(a)
    r = obs.compute_range()
    stacked = np.concatenate(data, axis=(axis + 1) % ndim) if ndim > 1 else np.stack(data, axis=1)
    others = tuple(i for i in range(stacked.ndim) if i != axis)
    assert r.axis == axis
    assert r.channel_min == tuple(float(v) for v in np.min(stacked, axis=others))
    assert r.channel_max == tuple(float(v) for v in np.max(stacked, axis=others))
    assert r.min == float(stacked.min()) and r.max == float(stacked.max())


@pytest.mark.parametrize("method", list(OBSERVERS))
def test_per_channel_ranges_for_every_method(method: str) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 3, 40)).astype(np.float32) * np.array([1.0, 10.0, 100.0], np.float32)[:, None]
    obs = make_observer(method, per_channel_axis=1)
    obs.update(x)
    obs.update(x[:2])
    r = obs.compute_range()
    assert r.axis == 1 and len(r.channel_min) == 3
    assert r.min == min(r.channel_min) and r.max == max(r.channel_max)
    assert all(0.5 < hi < 500 for hi in r.channel_max)
    with pytest.raises(CalibrationError, match="does not match earlier updates"):
        obs.update(np.zeros((5, 4, 40), np.float32))


@FAST
@given(arrays=batches(moderate), bins=st.sampled_from([16, 64]))
def test_histogram_growth_keeps_counts_and_layout(arrays: list[np.ndarray], bins: int) -> None:
    hist = GrowableHistogram(bins)
    values = []
    for a in arrays:
        kept = a[np.abs(a) < 1e30]
        hist.add(kept)
        values.append(kept)
    data = np.concatenate(values).astype(np.float64)
    if data.size == 0:
        assert hist.is_empty
        return
    assert hist.k == required_k(float(data.min()), float(data.max()), 2 * bins)
    assert hist.counts.sum() == data.size and hist.counts.size <= 2 * bins
    assert hist.counts[0] > 0 and hist.counts[-1] > 0
    assert hist.origin % hist.width == 0
    # exact binning: floor(x / w), computed in float64 where float32 data cannot underflow
    index = np.floor(np.ldexp(data, -hist.k)).astype(np.int64) - hist.start
    assert np.array_equal(np.bincount(index, minlength=hist.counts.size), hist.counts)


@pytest.mark.parametrize("method", list(OBSERVERS))
@pytest.mark.parametrize(
    "data",
    [
        np.full(100, 3.5, np.float32),
        np.zeros(64, np.float32),
        np.array([-2.0], np.float32),
        np.array([1e-30, 2e-30, -1e-30], np.float32),
        np.array([1e-45, 0.0], np.float32),
        np.linspace(-1e20, 1e20, 1000, dtype=np.float32),
        np.concatenate([np.linspace(-1, 1, 101, dtype=np.float32), np.full(7, -3.4e38, np.float32)]),
        np.array([-3.4e38, -3.4e38], np.float32),
        np.array([np.nan, np.inf, -np.inf, 1.0, -1.0, np.nan], np.float32),
        np.array([np.nan, np.inf], np.float32),
        np.arange(12, dtype=np.int64),
        np.linspace(-1, 1, 50).astype(np.float16),
        np.zeros((0, 3), np.float32),
    ],
    ids=["const", "zeros", "single", "tiny", "subnormal", "huge", "mask", "all-mask", "nan-inf",
         "all-nonfinite", "int64", "float16", "empty"],
)
def test_degenerate_inputs_do_not_crash(method: str, data: np.ndarray) -> None:
    obs = make_observer(method)
    obs.update(data)
    obs.update(data)
    r = obs.compute_range()
    finite = data[np.isfinite(data)].astype(np.float64)
    assert r.count == 2 * data.size and r.samples == 2
    assert r.nonfinite == 2 * (data.size - finite.size)
    assert r.extreme == 2 * int(np.count_nonzero(np.abs(finite) >= 1e30))
    assert math.isfinite(r.min) and math.isfinite(r.max) and r.min <= r.max
    if finite.size:
        assert (r.data_min, r.data_max) == (finite.min(), finite.max())
        assert min(finite.min(), 0.0) <= r.min and r.max <= finite.max()
    else:
        assert (r.min, r.max) == (0.0, 0.0)
    if method == "minmax" and finite.size:
        assert (r.min, r.max) == (finite.min(), finite.max())
    if finite.size and finite.min() == finite.max() and method != "moving-average":
        assert r.max == finite.max()  # constant data keep their value


@pytest.mark.parametrize("method", HISTOGRAM_METHODS)
def test_histogram_methods_ignore_extreme_values(method: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(10_000).astype(np.float32)
    masked = np.concatenate([x, np.full(500, -3.4e38, np.float32)])
    r = _observe(method, [masked])
    rr = r.compute_range()
    assert rr.extreme == 500 and rr.data_min == np.float32(-3.4e38)
    assert rr == rr  # noqa: PLR0124  (dataclass equality with a histogram inside)
    plain = _observe(method, [x]).compute_range()
    assert (rr.min, rr.max) == (plain.min, plain.max)
    assert rr.histogram == plain.histogram


def test_percentile_on_standard_normal() -> None:
    x = np.random.default_rng(0).standard_normal(1_000_000).astype(np.float32)
    obs = PercentileObserver(percentile=99.99)
    for chunk in np.array_split(x, 4):
        obs.update(chunk)
    r = obs.compute_range()
    assert 3.7 <= r.max <= 3.9 and -3.9 <= r.min <= -3.7


def test_percentile_non_negative_data_starts_at_zero() -> None:
    x = np.random.default_rng(0).uniform(2.0, 3.0, 10_000)
    r = _observe("percentile", [x], percentile=99.0).compute_range()
    assert r.min == 0.0 and 2.95 < r.max < 3.0


def test_entropy_clips_heavy_tails() -> None:
    rng = np.random.default_rng(1)
    heavy = np.concatenate([rng.standard_normal(200_000), rng.standard_t(2, 400) * 5]).astype(np.float32)
    obs = EntropyObserver()
    obs.update(heavy)
    r = obs.compute_range()
    assert r.max < 0.5 * r.data_max and r.min > 0.5 * r.data_min
    assert r.max > 3.0


def test_entropy_threshold_below_max_on_laplace() -> None:
    x = np.random.default_rng(2).laplace(size=1_000_000).astype(np.float32)
    obs = EntropyObserver(target_dtype="int8")
    obs.update(x)
    r = obs.compute_range()
    assert 5.0 < r.max < 0.9 * r.data_max


def test_entropy_relu_output_is_not_dominated_by_zeros() -> None:
    x = np.maximum(np.random.default_rng(3).standard_normal(100_000), 0).astype(np.float32)
    r = _observe("entropy", [x], target_dtype="uint8").compute_range()
    assert r.min == 0.0 and r.max > 3.0


def _reference_kl(h: np.ndarray, nq: int) -> np.ndarray:
    """Loop implementation of TensorRT's divergence (without smoothing) for one histogram."""
    out = []
    for i in range(nq, h.size + 1):
        sliced = h[:i].astype(float)
        p = sliced.copy()
        p[-1] += h[i:].sum()
        m = i // nq
        q = np.zeros(i)
        for j in range(nq):
            start, stop = j * m, (i if j == nq - 1 else (j + 1) * m)
            norm = np.count_nonzero(p[start:stop])
            if norm:
                q[start:stop] = sliced[start:stop].sum() / norm
        q[p == 0] = 0
        if sliced.sum() == 0 or ((p > 0) & (q == 0)).any():
            out.append(np.inf)
            continue
        pn, qn = p / p.sum(), q / q.sum()
        nz = pn > 0
        out.append(float(np.sum(pn[nz] * np.log(pn[nz] / qn[nz]))))
    return np.array(out)


@FAST
@given(h=hnp.arrays(np.int64, st.integers(8, 40), elements=st.integers(0, 6)), nq=st.integers(2, 7))
def test_vectorized_kl_matches_loop_reference(h: np.ndarray, nq: int) -> None:
    candidates, kl = kl_divergences(h.astype(np.float64), nq)
    ref = _reference_kl(h, nq)
    assert candidates.tolist() == list(range(nq, h.size + 1))
    assert np.array_equal(np.isinf(kl), np.isinf(ref))
    finite = np.isfinite(ref)
    assert np.allclose(kl[finite], ref[finite], rtol=1e-9, atol=1e-12)


def test_mse_clips_heavy_tails_but_not_uniform_data() -> None:
    rng = np.random.default_rng(4)
    heavy = rng.laplace(size=200_000).astype(np.float32)  # many moderately large values: worth clipping
    for symmetric, dtype in [(False, "uint8"), (True, "int8")]:
        r = _observe("mse", [heavy], symmetric=symmetric, target_dtype=dtype).compute_range()
        assert 5.0 < r.max < 0.9 * r.data_max and -5.0 > r.min > 0.9 * r.data_min
        u = _observe("mse", [rng.uniform(-1, 1, 100_000)], symmetric=symmetric, target_dtype=dtype).compute_range()
        assert u.max >= 0.98 * u.data_max and u.min <= 0.98 * u.data_min


@FAST
@given(
    counts=hnp.arrays(np.int64, st.integers(1, 30), elements=st.integers(0, 50)),
    start=st.integers(-40, 10),
    symmetric=st.booleans(),
)
def test_mse_range_matches_brute_force(counts: np.ndarray, start: int, symmetric: bool) -> None:
    if counts.sum() == 0:
        counts[0] = 1
    width, levels, k = 0.25, 255, 16
    nz = np.flatnonzero(counts)
    lo, hi = (start + nz[0]) * width, (start + nz[-1] + 1) * width - 1e-9
    centres = (start + np.arange(counts.size) + 0.5) * width
    factors = np.arange(1, k + 1) / k
    if symmetric:
        t = max(abs(lo), abs(hi)) * factors
        pairs = [(-v, v) for v in t]
    else:
        lows = lo * factors if lo < 0 else [0.0]
        highs = hi * factors if hi > 0 else [0.0]
        pairs = [(a, b) for a in lows for b in highs]
    errors = []
    for a, b in pairs:
        inside = (centres >= a) & (centres <= b)
        clip = np.where(centres < a, a - centres, np.where(centres > b, centres - b, 0.0))
        errors.append(np.sum(counts * clip**2) + counts[inside].sum() * ((b - a) / levels) ** 2 / 12)
    errors = np.array(errors)
    best = errors.min()
    tied = [p for p, e in zip(pairs, errors) if e <= best + 1e-9 * abs(best)]
    a, b = max(tied, key=lambda p: p[1] - p[0])
    rmin, rmax = mse_range(counts, start * width, width, lo, hi, levels, symmetric, k)
    expect_min = 0.0 if lo >= 0 else min(max(a, lo), hi)
    assert rmin == pytest.approx(expect_min, abs=1e-9)
    assert rmax == pytest.approx(max(expect_min, min(max(b, lo), hi)), abs=1e-9)


@FAST
@given(arrays=batches(st.floats(-100, 100, width=32)), cut=st.integers(1, 5))
def test_moving_average_merge_lies_within_shard_envelope(arrays: list[np.ndarray], cut: int) -> None:
    arrays = [a for a in arrays if a.size] or [np.zeros(1, np.float32)]
    left, right = _observe("moving-average", arrays[:cut]), _observe("moving-average", arrays[cut:])
    ranges = [o.compute_range() for o in (left, right) if o.samples and o.compute_range().count]
    left.merge(right)
    merged = left.compute_range()
    assert min(r.min for r in ranges) <= merged.min <= max(r.min for r in ranges)
    assert min(r.max for r in ranges) <= merged.max <= max(r.max for r in ranges)


def test_moving_average_follows_the_ema_formula() -> None:
    obs = MovingAverageMinMaxObserver(averaging_constant=0.5)
    for lo, hi in [(-1.0, 1.0), (-3.0, 5.0), (0.0, 1.0)]:
        obs.update(np.array([lo, hi], np.float32))
    r = obs.compute_range()
    assert (r.min, r.max) == (-1.0, 2.0)  # -1 -> -2 -> -1 ; 1 -> 3 -> 2
    assert (r.data_min, r.data_max) == (-3.0, 5.0)


def test_reset_and_errors() -> None:
    obs = MinMaxObserver()
    with pytest.raises(CalibrationError, match="before any update"):
        obs.compute_range()
    obs.update(np.ones(3))
    obs.reset()
    assert obs.samples == 0 and obs.state_nbytes == 0
    with pytest.raises(CalibrationError, match="cannot merge"):
        PercentileObserver(percentile=99.0).merge(PercentileObserver(percentile=99.9))
    with pytest.raises(CalibrationError, match="cannot merge"):
        MinMaxObserver().merge(MSEObserver())
    with pytest.raises(CalibrationError, match="dtype"):
        obs.update(np.array(["a"]))
    with pytest.raises(CalibrationError, match="out of range"):
        MinMaxObserver(per_channel_axis=2).update(np.zeros(3))


def test_make_observer_validates_method_and_options() -> None:
    assert set(OBSERVERS) == {"minmax", "moving-average", "percentile", "entropy", "mse"}
    assert isinstance(make_observer("entropy", target_dtype="uint8", bins=64), EntropyObserver)
    with pytest.raises(ConfigError, match="unknown calibration method 'kl'.*minmax, moving-average"):
        make_observer("kl")
    with pytest.raises(ConfigError, match="unknown option.*percentil.*valid: percentile, bins"):
        make_observer("percentile", percentil=99.0)
    for method, options in [
        ("percentile", {"percentile": 50}),
        ("percentile", {"percentile": 100.5}),
        ("entropy", {"target_dtype": "int4"}),
        ("entropy", {"num_quantized_bins": 1}),
        ("mse", {"num_candidates": 0}),
        ("minmax", {"per_channel_axis": 1.5}),
        ("moving-average", {"averaging_constant": 0.0}),
        ("percentile", {"bins": 3}),
    ]:
        with pytest.raises(ConfigError):
            make_observer(method, **options)


@pytest.mark.parametrize("method", list(OBSERVERS))
def test_state_is_bounded(method: str) -> None:
    obs = make_observer(method, bins=256) if method in HISTOGRAM_METHODS else make_observer(method)
    rng = np.random.default_rng(5)
    for scale in (1e-3, 1.0, 1e3, 1e6):
        obs.update(rng.standard_normal(1000) * scale)
    assert 0 < obs.state_nbytes <= 512 * 8 + 1000
    r = obs.compute_range()
    if method in HISTOGRAM_METHODS:
        assert r.histogram is not None and r.histogram.total == 4000 and r.histogram.counts.size <= 512
