"""Every writer/reader pair round-trips exactly (random arrays via hypothesis, plus edge cases:
time-base wraps, overflow markers, vector packing, bottom-up formats)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neurodeploy.events import (
    EVENT_DTYPE,
    iter_chunks,
    make_events,
    read_events,
    write_aedat2,
    write_events,
    write_evt2,
    write_evt3,
    write_nmnist,
)

REF = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "events"

# format: (extension, max width, max height, needs sorted time, largest first t, largest gap)
FORMATS = {
    "evt3": (".raw", 2048, 2048, True, 2**40, 20_000_000),
    "evt2": (".raw", 2048, 2048, True, 2**40, 20_000_000),
    "dat": (".dat", 4096, 4096, True, 2**31, 20_000_000),
    "nmnist": (".bin", 240, 240, True, 2**22, 200_000),
    "es": (".es", 4096, 4096, True, 2**12, 20_000),
    "aedat2": (".aedat", 1024, 512, True, 2**31, 20_000_000),
    "aedat3": (".aedat", 4096, 4096, False, 2**40, 20_000_000),
    "aedat4": (".aedat4", 4096, 4096, False, 2**40, 20_000_000),
    "npy": (".npy", 65536, 65536, False, 2**40, 20_000_000),
    "npz": (".npz", 65536, 65536, False, 2**40, 20_000_000),
    "hdf5": (".h5", 65536, 65536, False, 2**40, 20_000_000),
}
# formats that store the sensor size (the others get it back from the user)
STORES_SIZE = {"evt3", "evt2", "dat", "es", "aedat2", "aedat3", "aedat4", "npz", "hdf5"}


@st.composite
def event_arrays(draw, fmt: str):
    _, max_w, max_h, sorted_time, t0_max, big_gap = FORMATS[fmt]
    n = draw(st.integers(0, 300))
    w = draw(st.integers(1, max_w))
    h = draw(st.integers(1, max_h))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # bursts of equal timestamps and occasional big gaps (time-base wraps)
    gaps = rng.choice([0, 0, 1, 3, 50, 5000, big_gap], size=n)
    t = draw(st.integers(0, t0_max)) + np.cumsum(gaps)
    if not sorted_time:
        t = rng.permutation(t)
    ev = make_events(rng.integers(0, w, n), rng.integers(0, h, n), t, rng.integers(0, 2, n))
    if fmt == "nmnist":
        ev = ev[ev["y"] != 240]  # y == 240 is N-MNIST's overflow marker
    return ev, (w, h)


def _roundtrip(tmp_path: Path, fmt: str, ev: np.ndarray, size) -> None:
    ext = FORMATS[fmt][0]
    path = tmp_path / f"rt_{fmt}{ext}"
    write_events(path, ev, size, format=fmt)
    user = None if fmt in STORES_SIZE else size
    rec = read_events(path, sensor_size=user)
    assert rec.format == fmt
    assert rec.sensor_size == (size[0], size[1], 2)
    assert rec.events.dtype == EVENT_DTYPE
    np.testing.assert_array_equal(rec.events, ev)
    assert rec.report.total_dropped == 0
    if len(ev):
        chunks = list(iter_chunks(path, chunk_events=37, sensor_size=size))
        np.testing.assert_array_equal(np.concatenate(chunks), ev)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_roundtrip(tmp_path, fmt, data):
    ev, size = data.draw(event_arrays(fmt))
    _roundtrip(tmp_path, fmt, ev, size)


def test_evt3_packs_vectors_and_decodes_them(tmp_path):
    # a dense row: runs of same-(t, y, p) events with increasing x become VECT_12 / VECT_8
    xs = np.concatenate([np.arange(100, 140), np.arange(150, 155), [300], np.arange(0, 24, 2)])
    n = len(xs)
    ev = make_events(xs, np.full(n, 7), np.full(n, 123_456), np.ones(n))
    path = write_evt3(tmp_path / "vec.raw", ev, (640, 480))
    words = np.frombuffer(path.read_bytes().split(b"% end\n", 1)[1], dtype="<u2")
    types = set((words >> 12).tolist())
    assert {3, 4, 5, 2} <= types  # VECT_BASE_X, VECT_12, VECT_8 and EVT_ADDR_X all used
    assert len(words) < n  # packing is smaller than one word per event
    np.testing.assert_array_equal(read_events(path).events, ev)


def test_evt3_24bit_time_base_wraps(tmp_path):
    t = np.array([0, 1, 16_777_215, 16_777_216, 40_000_000, 10**10], dtype=np.int64)
    ev = make_events(np.arange(6), np.zeros(6), t, np.zeros(6))
    rec = read_events(write_evt3(tmp_path / "wrap.raw", ev, (16, 16)))
    np.testing.assert_array_equal(rec.events["t"], t)


def test_evt2_time_high_wraps(tmp_path):
    t = np.array([5, 2**34 - 1, 2**34 + 7, 2**36], dtype=np.int64)  # past the 28+6-bit range
    ev = make_events([1, 2, 3, 4], [1, 2, 3, 4], t, [0, 1, 0, 1])
    rec = read_events(write_evt2(tmp_path / "wrap2.raw", ev, (8, 8)))
    np.testing.assert_array_equal(rec.events["t"], t)


def test_nmnist_overflow_markers(tmp_path):
    t = np.array([0, 8_000_000, 2**23 + 5, 3 * 2**23, 3 * 2**23 + 1], dtype=np.int64)
    ev = make_events([1, 2, 3, 4, 5], [1, 2, 3, 4, 33], t, [1, 0, 1, 0, 1])
    path = write_nmnist(tmp_path / "long.bin", ev)
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8).reshape(-1, 5)
    n_markers = int(np.count_nonzero(raw[:, 1] == 240))
    assert n_markers > 0
    rec = read_events(path)
    np.testing.assert_array_equal(rec.events, ev)
    assert rec.report.anomalies["overflow_markers"] == n_markers
    with pytest.raises(ValueError, match="240"):
        write_nmnist(tmp_path / "bad.bin", make_events([0], [240], [0], [1]))


def test_aedat2_dvs128_layout_and_origin(tmp_path):
    ev = make_events([0, 127, 5], [0, 127, 100], [1, 2, 3], [1, 0, 1])
    path = write_aedat2(tmp_path / "d.aedat", ev, (128, 128))
    text = path.read_bytes()
    assert b"DVS128" in text
    rec = read_events(path)
    assert rec.meta["layout"] == "dvs128"
    np.testing.assert_array_equal(rec.events, ev)
    # stored bottom-up: our row 0 is stored as row 127
    body = np.frombuffer(text.split(b"Header\r\n")[1], dtype=">u4").reshape(-1, 2)
    assert (int(body[0, 0]) >> 8) & 0x7F == 127


def test_aedat2_first_address_byte_looking_like_a_header_line(tmp_path):
    # DAVIS address y << 22: a stored row of 140 makes the first byte 0x23 ('#')
    ev = make_events([3, 4], [260 - 1 - 140, 7], [5, 6], [1, 0])
    path = write_aedat2(tmp_path / "hash.aedat", ev, (346, 260))
    body = path.read_bytes().split(b"Header\r\n", 1)[1]
    assert body[:1] == b"#"
    np.testing.assert_array_equal(read_events(path).events, ev)


def test_es_long_gaps_use_overflow_bytes(tmp_path):
    ev = make_events([0, 1, 2], [0, 1, 2], [0, 126, 10_000_127], [1, 0, 1])
    path = write_events(tmp_path / "g.es", ev, (4, 4))
    rec = read_events(path)
    np.testing.assert_array_equal(rec.events, ev)
    assert path.stat().st_size > 20 + 15 + 10_000_000 // 127 - 1


def test_columns_layouts_in_npz_and_hdf5(tmp_path):
    ev = make_events([3, 1], [2, 0], [10, 20], [0, 1])
    npz = tmp_path / "cols.npz"
    np.savez(npz, x=ev["x"].astype(np.int64), y=ev["y"], t=ev["t"], p=ev["p"].astype(bool),
             sensor_size=np.array([4, 3]))
    rec = read_events(npz)
    np.testing.assert_array_equal(rec.events, ev)
    assert rec.sensor_size == (4, 3, 2)
    h5 = tmp_path / "cols.h5"
    with h5py.File(h5, "w") as f:
        g = f.create_group("events")
        for k in "xytp":
            g[k] = ev[k]
        g.attrs["width"], g.attrs["height"] = 4, 3
    rec = read_events(h5)
    np.testing.assert_array_equal(rec.events, ev)
    assert rec.sensor_size == (4, 3, 2)


def test_compressed_npz_streams(tmp_path):
    rng = np.random.default_rng(1)
    n = 5000
    ev = make_events(
        rng.integers(0, 9, n), rng.integers(0, 9, n), np.arange(n), rng.integers(0, 2, n)
    )
    path = write_events(tmp_path / "c.npz", ev, (9, 9), compressed=True)
    chunks = list(iter_chunks(path, chunk_events=999))
    assert [len(c) for c in chunks] == [999] * 5 + [5]
    np.testing.assert_array_equal(np.concatenate(chunks), ev)


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("expelliarmus_evt3_sample.raw", "evt3"),
        ("expelliarmus_evt2_sample.raw", "evt2"),
        ("tonic_sample_ncars.dat", "dat"),
        ("tonic_sample.aedat4", "aedat4"),
        ("es_dvs.es", "es"),
    ],
)
def test_reference_files_rewrite_identically(tmp_path, name, fmt):
    rec = read_events(REF / name)
    out = write_events(tmp_path / f"copy{FORMATS[fmt][0]}", rec.events, rec.sensor_size,
                       format=fmt)
    again = read_events(out)
    np.testing.assert_array_equal(again.events, rec.events)
    assert again.sensor_size == rec.sensor_size
    if fmt in ("es",):
        assert out.read_bytes() == (REF / name).read_bytes()


def test_nmnist_writer_is_byte_identical_to_the_reference():
    rec = read_events(REF / "tonic_sample_nmnist.bin")
    from neurodeploy.events.formats.nmnist import encode

    assert encode(rec.events) == (REF / "tonic_sample_nmnist.bin").read_bytes()


def test_writer_rejects_what_the_format_cannot_hold(tmp_path):
    unsorted = make_events([0, 1], [0, 0], [5, 4], [0, 1])
    for fmt in ("evt3", "evt2", "dat", "nmnist", "es", "aedat2"):
        with pytest.raises(ValueError, match="non-decreasing"):
            write_events(tmp_path / f"u{FORMATS[fmt][0]}", unsorted, (4, 4), format=fmt)
    with pytest.raises(ValueError, match="2048"):
        write_evt3(tmp_path / "big.raw", make_events([3000], [0], [0], [0]), (4096, 10))
    with pytest.raises(ValueError, match="polarity"):
        write_evt3(tmp_path / "pol.raw", make_events([0], [0], [0], [2]), (4, 4))
    with pytest.raises(ValueError, match="format"):
        write_events(tmp_path / "x.unknown", unsorted, (4, 4))


def test_event_stream_truncated_tail_counted(tmp_path):
    ev = make_events([0, 1, 2], [0, 1, 2], [0, 300, 301], [1, 0, 1])
    path = write_events(tmp_path / "t.es", ev, (4, 4))
    cut = tmp_path / "cut.es"
    cut.write_bytes(path.read_bytes()[:-2])  # the last event loses 2 of its 5 bytes
    rec = read_events(cut)
    np.testing.assert_array_equal(rec.events, ev[:2])
    assert rec.report.dropped == {"corrupt_tail": 1}
    assert rec.report.anomalies == {"corrupt_tail_bytes": 3}
