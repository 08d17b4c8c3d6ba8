"""Readers against real recordings (exact values from shared/reference/events/README.md) and
against malformed input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neurodeploy.events import (
    EVENT_DTYPE,
    EventFileError,
    detect_format,
    iter_chunks,
    make_events,
    open_events,
    read_events,
    write_evt3,
)

REF = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "events"

# file, format, sensor (w, h), count, first (t, x, y, p), last (t, x, y, p), x range, y range, ON
EXPECTED = [
    (
        "tonic_sample.aedat4", "aedat4", (320, 240), 111_954,
        (1605537493718345, 154, 204, 0), (1605537494308262, 88, 237, 1),
        (0, 319), (0, 239), 55_023,
    ),
    (
        "tonic_sample_nmnist.bin", "nmnist", (34, 34), 4_325,
        (654, 7, 15, 1), (311175, 21, 14, 1), (0, 33), (0, 33), 2_145,
    ),
    (
        "tonic_sample_ncars.dat", "dat", (78, 42), 2_009,
        (0, 25, 8, 0), (99952, 75, 28, 1), (0, 77), (0, 41), 1_350,
    ),
    (
        "expelliarmus_evt2_sample.raw", "evt2", (640, 480), 539_481,
        (1317888, 237, 121, 1), (1367888, 210, 142, 1), (60, 599), (18, 475), 367_855,
    ),
    (
        "expelliarmus_evt3_sample.raw", "evt3", (1280, 720), 219_596,
        (11718656, 874, 200, 0), (11727457, 1218, 572, 1), (0, 1279), (0, 719), 115_532,
    ),
]

def test_reference_directory_present():
    assert REF.is_dir(), f"reference recordings expected at {REF} (shared/ beside the clone)"
    assert (REF / "README.md").is_file()


def _tuple(e) -> tuple[int, int, int, int]:
    return int(e["t"]), int(e["x"]), int(e["y"]), int(e["p"])


@pytest.mark.parametrize("row", EXPECTED, ids=[r[0] for r in EXPECTED])
def test_reference_recordings_exact(row):
    name, fmt, size, count, first, last, xr, yr, n_on = row
    rec = read_events(REF / name)
    ev = rec.events
    assert rec.format == fmt == detect_format(REF / name)
    assert ev.dtype == EVENT_DTYPE
    assert rec.sensor_size == (*size, 2)
    assert len(ev) == count
    assert _tuple(ev[0]) == first
    assert _tuple(ev[-1]) == last
    assert (int(ev["x"].min()), int(ev["x"].max())) == xr
    assert (int(ev["y"].min()), int(ev["y"].max())) == yr
    assert int(np.count_nonzero(ev["p"] == 1)) == n_on
    assert rec.report.n_read == rec.report.n_used == count
    assert rec.report.total_dropped == 0


def test_sensor_size_sources():
    assert read_events(REF / "tonic_sample.aedat4").size_source == "header"
    evt2 = read_events(REF / "expelliarmus_evt2_sample.raw")
    assert evt2.size_source == "plugin:hal_plugin_gen3_fx3"
    assert read_events(REF / "expelliarmus_evt3_sample.raw").size_source.startswith("plugin:")
    assert read_events(REF / "tonic_sample_nmnist.bin").size_source == "format"
    ncars = read_events(REF / "tonic_sample_ncars.dat")  # no geometry in the header
    assert ncars.size_source == "max_coordinate"
    user = read_events(REF / "tonic_sample_ncars.dat", sensor_size=(120, 100))
    assert user.sensor_size == (120, 100, 2) and user.size_source == "user"
    assert len(user.events) == 2009


def test_user_size_smaller_than_data_drops_and_counts():
    rec = read_events(REF / "tonic_sample_nmnist.bin", sensor_size=(20, 34))
    outside = 4325 - len(rec.events)
    assert outside > 0
    assert rec.report.dropped == {"out_of_sensor": outside}
    assert rec.report.n_read == 4325
    assert rec.events["x"].max() < 20


def test_evt3_time_low_backsteps_counted_and_literal():
    rec = read_events(REF / "expelliarmus_evt3_sample.raw")
    # TIME_LOW steps backwards 9 times without a TIME_HIGH change (e.g. 811 -> 800); the
    # literal decoding keeps the 8.80 ms span of the reference values
    assert rec.report.anomalies["evt3_time_low_backsteps"] == 9
    assert rec.duration_us == 11727457 - 11718656
    for order in ("drop", "clamp"):
        other = read_events(REF / "expelliarmus_evt3_sample.raw", time_order=order)
        assert np.all(np.diff(other.events["t"]) >= 0)
        assert other.report.n_read == 219_596


def test_event_stream_count_and_origin():
    rec = read_events(REF / "es_dvs.es")
    assert rec.format == "es"
    assert len(rec.events) == 473_225
    assert rec.sensor_size == (320, 240, 2)
    assert rec.events["y"].max() < 240 and rec.events["x"].max() < 320
    # the file starts with a row of ON events on stored row 239 (bottom-left origin) at t = 0,
    # which is row 0 once converted to our top-left origin
    assert _tuple(rec.events[0]) == (0, 0, 0, 1)
    assert np.all(np.diff(rec.events["t"]) >= 0)


def test_aedat2_header_only():
    rec = read_events(REF / "tonic_sample_aedat_header.aedat")
    assert rec.format == "aedat2"
    assert len(rec.events) == 0
    assert rec.sensor_size == (346, 260, 2)
    assert rec.meta["chip"] == "eu.seebetter.ini.chips.davis.Davis346red"


@pytest.mark.parametrize(
    "name",
    [
        "tonic_sample.aedat4",
        "tonic_sample_nmnist.bin",
        "tonic_sample_ncars.dat",
        "expelliarmus_evt2_sample.raw",
        "expelliarmus_evt3_sample.raw",
        "es_dvs.es",
    ],
)
def test_chunks_equal_whole_read(name):
    whole = read_events(REF / name)
    reader = open_events(REF / name, chunk_events=7_777, sensor_size=whole.sensor_size)
    chunks = list(reader)
    assert all(len(c) == 7_777 for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= 7_777
    assert np.array_equal(np.concatenate(chunks), whole.events)
    assert reader.report.as_dict() == whole.report.as_dict()


def test_streaming_without_height_for_bottom_up_format(tmp_path):
    # AEDAT 2.0 without chip/size lines: height unknown, rows stored bottom-up
    ev = make_events([1, 2], [3, 4], [10, 20], [1, 0])
    path = tmp_path / "x.aedat"
    body = np.zeros(2, dtype=[("a", ">u4"), ("t", ">u4")])
    body["a"] = (ev["y"].astype(np.uint32) << 22) | (ev["x"].astype(np.uint32) << 12)
    body["t"] = ev["t"]
    path.write_bytes(b"#!AER-DAT2.0\r\n" + body.tobytes())
    with pytest.raises(EventFileError, match="height is unknown"):
        list(iter_chunks(path))
    rec = read_events(path)  # infers the height from the largest row
    assert rec.size_source == "max_coordinate" and rec.sensor_size == (3, 5, 2)
    assert rec.events["y"].tolist() == [1, 0]
    assert rec.events["x"].tolist() == [1, 2]


def test_streaming_memory_is_bounded_per_chunk(tmp_path):
    rng = np.random.default_rng(0)
    n = 200_000
    ev = make_events(
        rng.integers(0, 640, n), rng.integers(0, 480, n), np.cumsum(rng.integers(0, 3, n)),
        rng.integers(0, 2, n),
    )
    path = write_evt3(tmp_path / "a.raw", ev, (640, 480))
    sizes = [len(c) for c in iter_chunks(path, chunk_events=10_000)]
    assert sum(sizes) == n and max(sizes) == 10_000


# ---------------------------------------------------------------------------------------------
# malformed input


def test_missing_file(tmp_path):
    with pytest.raises(EventFileError, match="no such file"):
        read_events(tmp_path / "nope.raw")


def test_unknown_format(tmp_path):
    p = tmp_path / "data.xyz"
    p.write_bytes(b"hello world")
    with pytest.raises(EventFileError, match="unknown event file format") as info:
        read_events(p)
    assert str(p) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_bad_magic_when_format_forced(tmp_path):
    p = tmp_path / "x.es"
    p.write_bytes(b"Not a stream at all")
    with pytest.raises(EventFileError, match="bad magic"):
        read_events(p, format="es")
    p4 = tmp_path / "x.aedat4"
    p4.write_bytes(b"#!AER-DAT4.0\r\n\x10\x00\x00\x00abc")
    with pytest.raises(EventFileError, match="IOHeader"):
        read_events(p4)


def test_event_stream_unsupported_type(tmp_path):
    p = tmp_path / "atis.es"
    p.write_bytes(b"Event Stream" + bytes([2, 0, 0, 2]) + b"\x40\x01\xf0\x00")
    with pytest.raises(EventFileError, match="type 'atis' is not supported"):
        read_events(p)


def test_truncated_header(tmp_path):
    p = tmp_path / "trunc.raw"
    p.write_bytes(b"% evt 3.0\n% geometry 640x48")
    with pytest.raises(EventFileError, match="truncated header"):
        read_events(p)
    a3 = tmp_path / "t.aedat"
    a3.write_bytes(b"#!AER-DAT3.1\r\n#Format: RAW\r\n")
    with pytest.raises(EventFileError, match="END-HEADER"):
        read_events(a3)


def test_dat_unsupported_event_size(tmp_path):
    p = tmp_path / "bad.dat"
    p.write_bytes(b"% Data file containing CD events\n% Version 2\n" + bytes([12, 16]) + b"\0" * 32)
    with pytest.raises(EventFileError, match="event size 16"):
        read_events(p)


def test_raw_without_version(tmp_path):
    p = tmp_path / "noversion.raw"
    p.write_bytes(b"% date today\n" + b"\0" * 8)
    with pytest.raises(EventFileError, match="format='evt2' or format='evt3'"):
        read_events(p)
    rec = read_events(p, format="evt3", sensor_size=(10, 10))
    assert len(rec.events) == 0  # only EVT_ADDR_Y words of row 0: no events


@pytest.mark.parametrize(
    ("name", "record"),
    [
        ("tonic_sample_nmnist.bin", 5),
        ("expelliarmus_evt2_sample.raw", 4),
        ("expelliarmus_evt3_sample.raw", 2),
        ("tonic_sample_ncars.dat", 8),
    ],
)
def test_corrupt_tail_is_counted_not_fatal(tmp_path, name, record):
    data = (REF / name).read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: len(data) - record - 1])  # lose one record and a byte of another
    whole = read_events(REF / name)
    rec = read_events(cut)
    assert rec.report.dropped.get("corrupt_tail") == 1
    assert rec.report.anomalies["corrupt_tail_bytes"] == record - 1
    assert rec.report.n_read == rec.report.n_used + rec.report.total_dropped
    assert len(rec.events) < len(whole.events)
    assert np.array_equal(rec.events, whole.events[: len(rec.events)])


def test_bad_polarity_dropped_and_counted(tmp_path):
    from neurodeploy.events.formats.dat import RECORD

    rec = np.zeros(4, dtype=RECORD)
    rec["ts"] = [1, 2, 3, 4]
    rec["data"] = [1 | (0 << 28), 2 | (1 << 28), 3 | (5 << 28), 4 | (1 << 28)]
    p = tmp_path / "pol.dat"
    p.write_bytes(b"% Version 2\n% Width 8\n% Height 8\n" + bytes([0, 8]) + rec.tobytes())
    out = read_events(p)
    assert out.events["x"].tolist() == [1, 2, 4]
    assert out.report.dropped == {"bad_polarity": 1}


def test_time_order_policies(tmp_path):
    ev = make_events([0, 1, 2, 3], [0, 0, 0, 0], [10, 30, 20, 40], [1, 1, 0, 0])
    p = tmp_path / "t.npy"
    np.save(p, ev)
    keep = read_events(p)
    assert keep.events["t"].tolist() == [10, 30, 20, 40]
    assert keep.report.anomalies == {"time_backwards_kept": 1}
    drop = read_events(p, time_order="drop")
    assert drop.events["t"].tolist() == [10, 30, 40]
    assert drop.report.dropped == {"time_backwards": 1}
    clamp = read_events(p, time_order="clamp")
    assert clamp.events["t"].tolist() == [10, 30, 30, 40]
    with pytest.raises(ValueError, match="time_order"):
        read_events(p, time_order="sort")


def test_foreign_array_fields_and_out_of_range(tmp_path):
    dt = np.dtype([("t", "<i8"), ("x", "<i4"), ("y", "<i4"), ("polarity", "?")])
    arr = np.array([(5, 1, 2, True), (6, -1, 2, False), (7, 70000, 1, True)], dtype=dt)
    p = tmp_path / "f.npy"
    np.save(p, arr)
    rec = read_events(p)
    assert rec.events.tolist() == [(1, 2, 5, 1)]
    assert rec.report.dropped == {"out_of_sensor": 2}
    assert rec.size_source == "max_coordinate"
    bad = tmp_path / "float.npy"
    np.save(bad, np.zeros(2, dtype=[("x", "f4"), ("y", "i4"), ("t", "i8"), ("p", "i1")]))
    with pytest.raises(EventFileError, match="must be integer"):
        read_events(bad)


def test_aedat30_bottom_up_and_aedat31_packets(tmp_path):
    from neurodeploy.events.formats.aedat3 import PACKET_HEADER, POLARITY_DTYPE

    rec = np.zeros(3, dtype=POLARITY_DTYPE)
    x, y, p = np.array([1, 2, 3]), np.array([0, 5, 127]), np.array([1, 0, 1])
    rec["data"] = (x << 17) | (y << 2) | (p << 1) | np.array([1, 1, 0])  # third: invalid mark
    rec["ts"] = [10, 20, 30]
    packet = PACKET_HEADER.pack(1, 1, 8, 4, 1, 3, 3, 2) + rec.tobytes()
    imu = PACKET_HEADER.pack(3, 1, 4, 0, 0, 2, 2, 2) + b"\0" * 8  # skipped, counted
    a30 = tmp_path / "old.aedat"
    a30.write_bytes(b"#!AER-DAT3.0\r\n#Source 1: DVS128\r\n" + imu + packet)
    out = read_events(a30)
    assert out.format == "aedat3" and out.sensor_size == (128, 128, 2)
    assert out.events["y"].tolist() == [127, 122]  # 3.0 is bottom-up: y = 127 - stored
    assert out.events["t"].tolist() == [(1 << 31) | 10, (1 << 31) | 20]
    assert out.report.dropped == {"invalid_mark": 1}
    assert out.report.anomalies == {"other_records": 2}
    a31 = tmp_path / "new.aedat"
    a31.write_bytes(b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"
                    + packet + packet[:40])  # a truncated second packet
    out = read_events(a31)
    assert out.events["y"].tolist() == [0, 5, 0]  # 3.1 is top-left; 1 whole event of packet 2
    assert out.report.dropped == {"invalid_mark": 1, "corrupt_tail": 1}
