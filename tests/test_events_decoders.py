"""The compiled (numba) EVT 3.0 / EVT 2.0 / N-MNIST decoders equal the numpy ones: on the real
recordings, on random and corrupt record streams, and cut into blocks of any size (state carried
across block boundaries that split vector groups, time words and address groups)."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neurodeploy.events import read_events
from neurodeploy.events.formats import _base, evt2, evt3, nmnist
from neurodeploy.events.formats.prophesee_header import parse_prophesee_header
from neurodeploy.events.types import DropReport, concat_events
from neurodeploy.streaming import evt3_stdin_chunks

REF = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "events"
JIT = _base.jit_decoders()


@pytest.fixture
def use_jit():
    """Set ``_base.USE_JIT`` for one test and restore it afterwards."""
    prev = _base.USE_JIT

    def set_(on: bool | None):
        _base.USE_JIT = on

    yield set_
    _base.USE_JIT = prev


def test_compiled_decoders_are_used_by_default():
    if os.environ.get("NEURODEPLOY_JIT", "1") != "0":
        assert JIT is not None, "numba is a dependency: the compiled decoders must load"


def test_without_numba_the_numpy_decoders_run(monkeypatch):
    import neurodeploy.events.formats as formats_pkg

    monkeypatch.setitem(sys.modules, "numba", None)  # import numba -> ImportError
    monkeypatch.delitem(sys.modules, "neurodeploy.events.formats.decode_jit", raising=False)
    monkeypatch.delattr(formats_pkg, "decode_jit", raising=False)
    monkeypatch.setattr(_base.DECODERS, "_tried", False)
    monkeypatch.setattr(_base.DECODERS, "_module", None)
    monkeypatch.setattr(_base, "USE_JIT", None)
    assert _base.jit_decoders() is None
    rec = read_events(REF / "expelliarmus_evt3_sample.raw")
    assert len(rec.events) == 219_596
    assert rec.report.anomalies["evt3_time_low_backsteps"] == 9
    monkeypatch.setattr(_base.DECODERS, "_tried", False)
    monkeypatch.setattr(_base, "USE_JIT", True)
    with pytest.raises(ImportError):
        _base.jit_decoders()


def _words(name: str, dtype: str) -> np.ndarray:
    hdr = parse_prophesee_header(REF / name)
    return np.fromfile(REF / name, dtype=dtype, offset=hdr.data_offset)


def _decode_evt3(words, sizes, compiled: bool):
    """Decode ``words`` in consecutive blocks of the given sizes (the rest as one block)."""
    st_, rep, parts, i = evt3.Evt3State(), DropReport(), [], 0
    for n in [*sizes, len(words)]:
        block = words[i : i + n]
        i += len(block)
        if compiled:
            parts.append(evt3.decode_words_jit(block, st_, rep, JIT))
        else:
            parts.append(evt3.decode_words_numpy(block, st_, rep))
    return concat_events(parts), rep.as_dict(), vars(st_)


def _decode_evt2(words, sizes, compiled: bool):
    st_, rep, parts, i = evt2.Evt2State(), DropReport(), [], 0
    prev = _base.USE_JIT
    _base.USE_JIT = compiled
    try:
        for n in [*sizes, len(words)]:
            block = words[i : i + n]
            i += len(block)
            parts.append(evt2.decode_words(block, st_, rep))
    finally:
        _base.USE_JIT = prev
    return concat_events(parts), rep.as_dict(), vars(st_)


def _decode_nmnist(data: bytes, sizes, compiled: bool):
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, 5)
    blocks, i = [], 0
    for n in [*sizes, len(rec)]:
        blocks.append(rec[i : i + n])
        i += len(blocks[-1])
    blocks = [b for b in blocks if len(b)]
    rep = DropReport()
    if compiled:
        parts = list(nmnist.decode_blocks_jit(iter(blocks), rep, JIT))
    else:
        parts = list(nmnist.decode_blocks_numpy(iter(blocks), rep))
    return concat_events(parts), rep.as_dict()


def _same(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1:] == b[1:]


needs_jit = pytest.mark.skipif(JIT is None, reason="numba not installed or NEURODEPLOY_JIT=0")


@needs_jit
@pytest.mark.parametrize(
    "name",
    ["expelliarmus_evt3_sample.raw", "expelliarmus_evt2_sample.raw", "tonic_sample_nmnist.bin"],
)
def test_real_files_compiled_equals_numpy(use_jit, name):
    use_jit(True)
    fast = read_events(REF / name)
    use_jit(False)
    ref = read_events(REF / name)
    np.testing.assert_array_equal(fast.events, ref.events)
    assert fast.report.as_dict() == ref.report.as_dict()
    assert fast.sensor_size == ref.sensor_size


@needs_jit
@pytest.mark.parametrize("sizes", [[1] * 400 + [2, 3, 5, 7] * 200, [997] * 30, [4099] * 20])
def test_real_evt3_blocks_equal_whole(sizes):
    words = _words("expelliarmus_evt3_sample.raw", "<u2")
    whole = _decode_evt3(words, [], compiled=True)
    assert len(whole[0]) == 219_596 and whole[1]["anomalies"]["evt3_time_low_backsteps"] == 9
    _same(_decode_evt3(words, sizes, compiled=True), whole)
    _same(_decode_evt3(words[:40_000], sizes[:300], compiled=False),
          _decode_evt3(words[:40_000], [], compiled=True))


@needs_jit
def test_real_evt2_blocks_equal_whole():
    words = _words("expelliarmus_evt2_sample.raw", "<u4")
    whole = _decode_evt2(words, [], compiled=True)
    _same(_decode_evt2(words, [1, 2, 3] * 100 + [4097] * 40, compiled=True), whole)
    _same(_decode_evt2(words, [1, 5, 999] * 20, compiled=False), whole)


def test_evt3_stdin_chunks_odd_sizes_equal_file_read():
    path = REF / "expelliarmus_evt3_sample.raw"
    ref = read_events(path)
    rep = DropReport()
    got = concat_events(list(evt3_stdin_chunks(io.BytesIO(path.read_bytes()), 333, rep)))
    np.testing.assert_array_equal(got, ref.events)
    assert rep.anomalies == {"evt3_time_low_backsteps": 9}


# ---- random and corrupt streams -------------------------------------------------------------

# word types with weights: mostly events and state words, some triggers / unknown types
EVT3_TYPES = np.array([0, 2, 3, 4, 5, 6, 8, 10, 1, 7, 9, 14, 15])
EVT2_TYPES = np.array([0, 1, 8, 10, 2, 5, 14, 15])


def _random_evt3(seed: int, n: int, corrupt: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    weights = np.array([20, 40, 6, 6, 6, 8, 3, 1, 1, 1, 1, 1, 1], dtype=float)
    weights[7:] *= corrupt
    typ = rng.choice(EVT3_TYPES, size=n, p=weights / weights.sum())
    payload = rng.integers(0, 4096, n)
    # TIME_HIGH mostly small steps (with wraps), sometimes random jumps
    th = (np.cumsum(rng.integers(0, 3, n)) + 4000) % 4096
    jump = rng.random(n) < 0.1
    payload = np.where((typ == 8) & ~jump, th, payload)
    return ((typ << 12) | payload).astype("<u2")


def _random_evt2(seed: int, n: int, corrupt: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    weights = np.array([35, 35, 10, 2, 1, 1, 1, 1], dtype=float)
    weights[3:] *= corrupt
    typ = rng.choice(EVT2_TYPES, size=n, p=weights / weights.sum()).astype(np.int64)
    payload = rng.integers(0, 1 << 28, n)
    th = (np.cumsum(rng.integers(0, 2, n)) + (1 << 28) - 40) % (1 << 28)
    payload = np.where((typ == 8) & (rng.random(n) < 0.9), th, payload)
    return ((typ << 28) | payload).astype("<u4")


def _random_sizes(seed: int, n: int, small: bool) -> list[int]:
    rng = np.random.default_rng(seed + 1)
    hi = 8 if small else 300
    sizes = rng.integers(0, hi, n).tolist()  # zero-sized blocks too
    return sizes[: np.searchsorted(np.cumsum(sizes), n)]


@needs_jit
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(0, 3000),
    corrupt=st.sampled_from([0.0, 1.0, 20.0]),
    small=st.booleans(),
)
def test_random_evt3_streams(seed, n, corrupt, small):
    words = _random_evt3(seed, n, corrupt)
    whole = _decode_evt3(words, [], compiled=False)
    _same(_decode_evt3(words, [], compiled=True), whole)
    sizes = _random_sizes(seed, n, small)
    _same(_decode_evt3(words, sizes, compiled=True), whole)
    _same(_decode_evt3(words, sizes[:40], compiled=False), whole)


@needs_jit
@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(0, 3000),
    corrupt=st.sampled_from([0.0, 1.0, 20.0]),
    small=st.booleans(),
)
def test_random_evt2_streams(seed, n, corrupt, small):
    words = _random_evt2(seed, n, corrupt)
    whole = _decode_evt2(words, [], compiled=False)
    _same(_decode_evt2(words, [], compiled=True), whole)
    sizes = _random_sizes(seed, n, small)
    _same(_decode_evt2(words, sizes, compiled=True), whole)
    _same(_decode_evt2(words, sizes[:40], compiled=False), whole)


@needs_jit
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(0, 2000), small=st.booleans())
def test_random_nmnist_records(seed, n, small):
    rng = np.random.default_rng(seed)
    rec = rng.integers(0, 256, (n, 5), dtype=np.uint8)
    rec[rng.random(n) < 0.05, 1] = nmnist.MARKER_Y
    data = rec.tobytes()
    whole = _decode_nmnist(data, [], compiled=False)
    _same(_decode_nmnist(data, [], compiled=True), whole)
    _same(_decode_nmnist(data, _random_sizes(seed, n, small), compiled=True), whole)


@needs_jit
def test_time_high_wrap_threshold_edges():
    # EVT 3.0: a TIME_HIGH decrease by exactly 2048 is not a wrap, by 2049 it is
    th = [2048, 0, 2049, 0, 4095, 2047, 4095, 2046]
    words = []
    for v in th:
        words += [(8 << 12) | v, (6 << 12) | 5, 0x0003, (2 << 12) | 1]
    words = np.array(words, dtype="<u2")
    whole = _decode_evt3(words, [], compiled=False)
    assert whole[2]["wraps"] == 2
    _same(_decode_evt3(words, [], compiled=True), whole)
    _same(_decode_evt3(words, [1] * len(words), compiled=True), whole)
    # EVT 2.0: the same at half of the 28-bit range
    half = 1 << 27
    words = np.array(
        [(8 << 28) | v for v in (half, 0, half + 1, 0)] + [(1 << 28) | 5], dtype="<u4"
    )
    whole = _decode_evt2(words, [], compiled=False)
    assert whole[2]["wraps"] == 1
    _same(_decode_evt2(words, [], compiled=True), whole)
