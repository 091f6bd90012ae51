"""Delphes *.pkl.bz2 reader and the delphes_pf builder: round trip, bad files, unsafe pickles."""

from __future__ import annotations

import bz2
import hashlib
import os
import pickle

import numpy as np
import pytest
import tensorflow as tf

from mlpf_tf.configbase import ConfigError
from mlpf_tf.data import datasets, schema
from mlpf_tf.data.config import DataConfig
from mlpf_tf.data.delphes_reader import (
    DelphesFileError,
    complete_ycand,
    read_delphes_file,
    strip_ycand,
    write_delphes_file,
)

try:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:  # already initialised by another test module
    pass


def make_event(rng: np.random.Generator, n: int) -> schema.Event:
    """A schema-valid random event; ycand massless-consistent so completion restores it."""
    X = np.zeros((n, schema.NUM_FEATURES), np.float32)
    X[:, schema.F_TYPE] = rng.integers(1, 3, n)
    X[:, 1:10] = rng.normal(size=(n, 9))
    y = np.zeros((n, schema.NUM_TARGETS), np.float32)
    y[:, schema.T_CLS] = rng.integers(0, schema.NUM_CLASSES, n)
    y[:, schema.T_ETA] = rng.uniform(-2.5, 2.5, n)
    y[:, schema.T_PT] = rng.uniform(0.5, 20, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    y[:, schema.T_SIN_PHI], y[:, schema.T_COS_PHI] = np.sin(phi), np.cos(phi)
    y[:, schema.T_E] = y[:, schema.T_PT] * np.cosh(y[:, schema.T_ETA])
    y[y[:, schema.T_CLS] == 0] = 0
    ycand = y.copy()
    ycand[:, schema.T_PT] *= 1.01
    ycand[:, schema.T_E] = ycand[:, schema.T_PT] * np.cosh(ycand[:, schema.T_ETA])
    return schema.Event(X, y, ycand)


def x_key(X: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(X, np.float32).tobytes()).hexdigest()


def write_manual_dir(directory, rng, n_files=(2, 1), events_per_file=4):
    """ttbar and qcd files in the reference naming; returns {file name: events}."""
    written = {}
    n_ttbar, n_qcd = n_files
    names = [f"tev14_pythia8_ttbar_{i}_0.pkl.bz2" for i in range(n_ttbar)]
    names += [f"tev14_pythia8_qcd_{i}_0.pkl.bz2" for i in range(n_qcd)]
    for name in names:
        events = [make_event(rng, int(rng.integers(3, 12))) for _ in range(events_per_file)]
        write_delphes_file(os.path.join(directory, name), events)
        written[name] = events
    return written


@pytest.fixture
def sample_file(tmp_path):
    rng = np.random.default_rng(1)
    events = [make_event(rng, n) for n in (5, 9, 3)]
    path = tmp_path / "tev14_pythia8_ttbar_0_0.pkl.bz2"
    write_delphes_file(path, events)
    return path, events


# -- reader ---------------------------------------------------------------------------------

def test_reader_round_trip_restores_events(sample_file):
    path, events = sample_file
    raw = read_delphes_file(path, complete=False)
    got = read_delphes_file(path)
    assert len(got) == 3
    for g, r, e in zip(got, raw, events):
        np.testing.assert_array_equal(g.X, e.X)
        np.testing.assert_array_equal(g.ygen, e.ygen)
        np.testing.assert_array_equal(r.ycand, strip_ycand(e.ycand))  # stored as the reference
        np.testing.assert_array_equal(g.ycand, complete_ycand(r.ycand))
        np.testing.assert_allclose(g.ycand, e.ycand, rtol=1e-5, atol=1e-5)
        assert g.X.dtype == g.ygen.dtype == g.ycand.dtype == np.float32


def test_complete_ycand_derives_pt_and_energy_from_eta():
    eta = 1.0
    ycand = np.array([
        [schema.CLS_PHOTON, 0, 0.0, eta, 0, 1, 10.0],          # neutral: only E
        [schema.CLS_CH_HAD, 1, 4.0, eta, 0, 1, 0.0],            # charged: only pT
        [schema.CLS_N_HAD, 0, 3.0, eta, 0, 1, 99.0],            # both given: kept
        [schema.CLS_NONE, 0, 0.0, 0.0, 0, 0, 0.0],              # no candidate
    ], np.float32)
    out = complete_ycand(ycand)
    np.testing.assert_allclose(out[0, schema.T_PT], 10.0 / np.cosh(1.0), rtol=1e-6)
    np.testing.assert_allclose(out[1, schema.T_E], 4.0 * np.cosh(1.0), rtol=1e-6)
    np.testing.assert_array_equal(out[2], ycand[2])
    np.testing.assert_array_equal(out[3], 0)


def test_reader_accepts_every_pickle_protocol_and_float64(tmp_path, sample_file):
    _, events = sample_file
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"p{protocol}.pkl.bz2"
        data = {"X": [e.X.astype(np.float64) for e in events], "ygen": [e.ygen for e in events],
                "ycand": [e.ycand for e in events]}
        with bz2.open(path, "wb") as fh:
            pickle.dump(data, fh, protocol=protocol)
        got = read_delphes_file(path)
        np.testing.assert_array_equal(got[1].X, events[1].X)
        assert got[1].X.dtype == np.float32


def test_truncated_file_names_the_file(sample_file):
    path, _ = sample_file
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DelphesFileError, match=rf"^{path}: truncated file"):
        read_delphes_file(path)


def test_corrupt_bytes_name_the_file(sample_file):
    path, _ = sample_file
    data = bytearray(path.read_bytes())
    data[20:60] = bytes(range(40))
    path.write_bytes(bytes(data))
    with pytest.raises(DelphesFileError, match=rf"^{path}: corrupt file"):
        read_delphes_file(path)


def test_plain_pickle_without_bz2_is_corrupt(tmp_path):
    path = tmp_path / "plain.pkl.bz2"
    path.write_bytes(pickle.dumps({"X": [], "ygen": [], "ycand": []}))
    with pytest.raises(DelphesFileError, match=rf"^{path}: corrupt file.*Invalid data stream"):
        read_delphes_file(path)


def test_missing_file(tmp_path):
    with pytest.raises(DelphesFileError, match=r"nope.pkl.bz2: no such file"):
        read_delphes_file(tmp_path / "nope.pkl.bz2")


def _dump(path, obj):
    with bz2.open(path, "wb") as fh:
        pickle.dump(obj, fh)


@pytest.mark.parametrize("obj, message", [
    ([1, 2], r"expected a dict with keys \['X', 'ygen', 'ycand'\], got list"),
    ({"X": [], "ygen": []}, r"expected exactly the keys \['X', 'ygen', 'ycand'\], got \['X', "
                            r"'ygen'\]"),
    ({"X": (), "ygen": [], "ycand": []}, r"'X' is tuple, expected a list of arrays"),
    ({"X": [np.zeros((1, 12))], "ygen": [], "ycand": []},
     r"event counts differ between keys: \{'X': 1, 'ygen': 0, 'ycand': 0\}"),
])
def test_wrong_structure_is_refused(tmp_path, obj, message):
    path = tmp_path / "bad.pkl.bz2"
    _dump(path, obj)
    with pytest.raises(DelphesFileError, match=rf"^{path}: {message}"):
        read_delphes_file(path)


def test_bad_event_names_file_and_index(tmp_path):
    rng = np.random.default_rng(2)
    events = [make_event(rng, 4), make_event(rng, 4)]
    data = {"X": [e.X for e in events], "ygen": [e.ygen for e in events],
            "ycand": [e.ycand for e in events]}
    data["ygen"][1] = np.zeros((4, 6), np.float32)
    path = tmp_path / "bad.pkl.bz2"
    _dump(path, data)
    with pytest.raises(DelphesFileError,
                       match=rf"^{path}: event 1: ygen has shape \(4, 6\), expected "
                             r"\(elements, 7\)"):
        read_delphes_file(path)
    data["ygen"][1] = ["not", "an", "array"]
    _dump(path, data)
    with pytest.raises(DelphesFileError, match=rf"^{path}: event 1: ygen is list"):
        read_delphes_file(path)


class _Exploit:
    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def test_malicious_pickle_is_refused_and_does_not_run(tmp_path):
    sentinel = tmp_path / "SENTINEL"
    path = tmp_path / "tev14_pythia8_ttbar_0_0.pkl.bz2"
    _dump(path, {"X": [_Exploit(sentinel)], "ygen": [], "ycand": []})
    with pytest.raises(DelphesFileError,
                       match=rf"^{path}: refused or invalid pickle: refused global "
                             r"(posix|nt)\.system"):
        read_delphes_file(path)
    assert not sentinel.exists()
    # The same payload through the builder: refused as well, nothing runs.
    cfg = DataConfig(dataset="delphes_pf", config="default", data_dir=str(tmp_path / "tfds"),
                     manual_dir=str(tmp_path))
    with pytest.raises(DelphesFileError, match="refused global"):
        datasets.prepare_dataset(cfg)
    assert not sentinel.exists()


def test_other_globals_are_refused(tmp_path):
    path = tmp_path / "g.pkl.bz2"
    _dump(path, {"X": [bytearray(b"x")], "ygen": [], "ycand": []})  # builtins.bytearray
    with pytest.raises(DelphesFileError, match=r"refused global builtins\.bytearray"):
        read_delphes_file(path)


# -- the delphes_pf TFDS builder --------------------------------------------------------------

def _as_numpy(ds):
    return [{k: v for k, v in ex.items()} for ex in ds.as_numpy_iterator()]


def test_tfds_round_trip_equals_written_arrays(tmp_path):
    rng = np.random.default_rng(3)
    manual = tmp_path / "manual"
    written = write_manual_dir(manual, rng, n_files=(2, 1), events_per_file=4)
    cfg = DataConfig(dataset="delphes_pf", config="default", data_dir=str(tmp_path / "tfds"),
                     manual_dir=str(manual))
    expected_files = {"train": ["tev14_pythia8_ttbar_0_0.pkl.bz2"],
                      "validation": ["tev14_pythia8_ttbar_1_0.pkl.bz2"],
                      "test": ["tev14_pythia8_qcd_0_0.pkl.bz2"]}
    for split, files in expected_files.items():
        got = _as_numpy(datasets.load_split(cfg, split))
        expected = [e for f in files for e in written[f]]
        assert datasets.num_examples(cfg, split) == len(expected) == len(got) == 4
        by_key = {x_key(e.X): e for e in expected}
        assert sorted(by_key) == sorted(x_key(g["X"]) for g in got)
        for g in got:
            e = by_key[x_key(g["X"])]
            np.testing.assert_array_equal(g["X"], e.X)
            np.testing.assert_array_equal(g["ygen"], e.ygen)
            np.testing.assert_array_equal(g["ycand"], complete_ycand(strip_ycand(e.ycand)))
            assert g["X"].dtype == np.float32 and g["ycand"].shape == e.ycand.shape


def test_missing_manual_directory_names_it(tmp_path):
    missing = tmp_path / "no_such_manual"
    cfg = DataConfig(dataset="delphes_pf", config="default", data_dir=str(tmp_path / "tfds"),
                     manual_dir=str(missing))
    with pytest.raises(DelphesFileError,
                       match=rf"^delphes_pf: manual directory {missing} does not exist"):
        datasets.load_split(cfg, "train")


def test_manual_directory_without_matching_files_names_it(tmp_path):
    (tmp_path / "other.pkl.bz2").write_bytes(b"")
    cfg = DataConfig(dataset="delphes_pf", config="default", data_dir=str(tmp_path / "tfds"),
                     manual_dir=str(tmp_path))
    with pytest.raises(DelphesFileError, match=rf"no \*\.pkl\.bz2 files with "
                       rf"'tev14_pythia8_ttbar' or 'qcd' in their name in manual directory "
                       rf"{tmp_path} \(1 \.pkl\.bz2 files\)"):
        datasets.prepare_dataset(cfg)


def test_corrupt_file_inside_build_names_the_file(tmp_path):
    rng = np.random.default_rng(4)
    written = write_manual_dir(tmp_path, rng, n_files=(1, 0), events_per_file=2)
    path = tmp_path / next(iter(written))
    path.write_bytes(path.read_bytes()[:-30])
    cfg = DataConfig(dataset="delphes_pf", config="default", data_dir=str(tmp_path / "tfds"),
                     manual_dir=str(tmp_path))
    with pytest.raises(DelphesFileError, match=rf"^{path}: truncated file"):
        datasets.prepare_dataset(cfg)


def test_unknown_dataset_name_is_a_config_error(tmp_path):
    cfg = DataConfig(dataset="cms_pf", data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"^--data\.dataset='cms_pf': must be one of "
                                          r"synthetic_pf, delphes_pf$"):
        datasets.load_split(cfg, "train")


def test_unknown_config_name_is_a_config_error(tmp_path):
    cfg = DataConfig(dataset="delphes_pf", config="ttbar", data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"^--data\.config='ttbar': unknown delphes_pf config; "
                                          r"known: default$"):
        datasets.load_split(cfg, "train")


def test_unknown_split_is_named(tmp_path):
    rng = np.random.default_rng(5)
    write_manual_dir(tmp_path, rng, n_files=(1, 0), events_per_file=2)
    cfg = DataConfig(dataset="delphes_pf", config="default", data_dir=str(tmp_path / "tfds"),
                     manual_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"^unknown split 'dev'; known: train, validation, test$"):
        datasets.load_split(cfg, "dev")
    with pytest.raises(ValueError, match=r"delphes_pf/default in .* has no split 'test' "
                                         r"\(available: train\)"):
        datasets.load_split(cfg, "test")


@pytest.mark.parametrize("n_ttbar, n_validation", [(2, 1), (5, 1), (10, 2), (100, 20),
                                                   (250, 50), (500, 50)])
def test_validation_holds_out_ttbar_files_up_to_5000_events(tmp_path, n_ttbar, n_validation):
    from mlpf_tf.data.tfds_delphes import split_files

    for i in range(n_ttbar):
        (tmp_path / f"tev14_pythia8_ttbar_{i:03d}_0.pkl.bz2").write_bytes(b"")
    (tmp_path / "tev14_pythia8_qcd_0_0.pkl.bz2").write_bytes(b"")
    splits = split_files(str(tmp_path))
    names = sorted(f"tev14_pythia8_ttbar_{i:03d}_0.pkl.bz2" for i in range(n_ttbar))
    assert [os.path.basename(p) for p in splits["validation"]] == names[-n_validation:]
    assert [os.path.basename(p) for p in splits["train"]] == names[:-n_validation]
    assert len(splits["test"]) == 1
