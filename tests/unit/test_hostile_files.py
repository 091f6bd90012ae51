"""The Delphes reader refuses hostile files with one line naming the file; caps and manifest."""

from __future__ import annotations

import bz2
import pickle

import numpy as np
import pytest

from benchmark import hostile_files
from mlpf_tf.data.delphes_reader import (
    DEFAULT_LIMITS,
    DelphesFileError,
    file_sha256,
    read_delphes_file,
    read_manifest,
    write_delphes_file,
)
from mlpf_tf.data.safe_unpickle import PickleLimits
from mlpf_tf.data.schema import Event

# What each case must be refused for (a fragment of its one-line error).
EXPECTED = {
    "zero_stride": "numpy.ndarray may not be called",
    "huge_shape_1e8": "100000000 rows exceed the cap of 50000 elements per event",
    "shape_2_70": "1180591620717411303424 rows exceed the cap",
    "shape_2_70_frombuffer": "1180591620717411303424 rows exceed the cap",
    "wide_shape": "1099511627776 columns exceed the cap of 12",
    "size_mismatch": "needs 96000 bytes, the data has 96",
    "bomb_declared_bytes": "a bytes object of 1099511627776 bytes exceeds the cap",
    "bomb_frame": "a frame of 1099511627776 bytes exceeds the cap",
    "bomb_stream": "bytes of data not used by any array",
    "object_dtype": "refused numpy.dtype('O', False, True): only float and int dtypes",
    "void_dtype": "refused numpy.dtype('V96', False, True)",
    "list_as_data": "array data is list, expected bytes",
    "overlong_list_appends": "values on the pickle stack",
    "overlong_list_append": "a list longer than 1000 entries (events per file cap)",
    "foreign_global_system": "refused global os.system",
    "foreign_global_eval": "refused global builtins.eval",
    "numpy_other_global": "refused global numpy.core.multiarray.scalar",
    "newobj_opcode": r"pickle opcode b'\x81' is not allowed",
    "reconstruct_other_class": "expected (numpy.ndarray, (0,), b'b')",
    "fortran_order": "only C-contiguous arrays are accepted",
    "truncated_stream": "truncated file",
    "truncated_pickle": "pickle exhausted before end of frame",
    "nested_lists": "event 0: X is list, expected a numpy array",
    "deep_nesting": "values on the pickle stack",
    "huge_text_int": "Exceeds the limit (4300 digits)",
    "not_bz2": "Invalid data stream",
}


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hostile")
    return hostile_files.write_cases(str(directory))


def test_every_case_has_an_expected_error():
    assert set(EXPECTED) == set(hostile_files.CASES)
    assert len(hostile_files.CASES) >= 20


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_file_is_refused_in_one_line_naming_it(hostile_dir, name):
    path = hostile_dir[name]
    with pytest.raises(DelphesFileError) as info:
        read_delphes_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message and len(message) < 400
    assert EXPECTED[name] in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def _events(n_events=2, n=3):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n_events):
        X = rng.normal(size=(n, 12)).astype(np.float32)
        X[:, 0] = 1
        out.append(Event(X, np.zeros((n, 7), np.float32), np.zeros((n, 7), np.float32)))
    return out


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("dtype", ["<f8", ">f8", "<f4", "<i8", "|u1"])
def test_numpy_pickles_of_every_protocol_and_numeric_dtype_are_read(tmp_path, protocol, dtype):
    events = _events()
    data = {"X": [e.X.astype(dtype) for e in events], "ygen": [e.ygen for e in events],
            "ycand": [e.ycand for e in events]}
    path = tmp_path / "ok.pkl.bz2"
    with bz2.open(path, "wb") as fh:
        pickle.dump(data, fh, protocol=protocol)
    got = read_delphes_file(path)
    np.testing.assert_array_equal(got[1].X, events[1].X.astype(dtype).astype(np.float32))
    assert got[1].X.flags.c_contiguous and got[1].X.dtype == np.float32


def test_caps_are_configurable(tmp_path):
    path = tmp_path / "f.pkl.bz2"
    write_delphes_file(path, _events(n_events=3, n=5))
    assert len(read_delphes_file(path)) == 3
    with pytest.raises(DelphesFileError, match=r"5 rows exceed the cap of 4 elements"):
        read_delphes_file(path, limits=PickleLimits(max_elements=4, max_columns=12))
    with pytest.raises(DelphesFileError, match=r"a list longer than 2 entries"):
        read_delphes_file(path, limits=PickleLimits(max_list_length=2, max_columns=12))
    with pytest.raises(DelphesFileError, match=r"exceeds the cap of 100 decompressed bytes"):
        read_delphes_file(path, limits=PickleLimits(max_decompressed_bytes=100, max_columns=12))
    assert DEFAULT_LIMITS.max_elements >= 6400 and DEFAULT_LIMITS.max_list_length >= 100


def test_manifest_is_checked_before_unpickling(tmp_path):
    good = tmp_path / "tev14_pythia8_ttbar_0_0.pkl.bz2"
    write_delphes_file(good, _events())
    bomb = tmp_path / "tev14_pythia8_ttbar_1_0.pkl.bz2"
    bomb.write_bytes(bz2.compress(hostile_files.CASES["foreign_global_system"][1]))
    manifest_path = tmp_path / "SHA256SUMS"
    manifest_path.write_text(f"# made by sha256sum\n{file_sha256(str(good))}  {good.name}\n"
                             f"{'0' * 64} *{bomb.name}\n")
    manifest = read_manifest(manifest_path)
    assert manifest == {good.name: file_sha256(str(good)), bomb.name: "0" * 64}
    assert len(read_delphes_file(good, manifest=manifest)) == 2
    with pytest.raises(DelphesFileError, match=rf"^{bomb}: SHA-256 [0-9a-f]{{64}} differs "
                                               r"from the manifest's 0{64}; refused$"):
        read_delphes_file(bomb, manifest=manifest)
    other = tmp_path / "unlisted.pkl.bz2"
    other.write_bytes(good.read_bytes())
    with pytest.raises(DelphesFileError, match=rf"^{other}: not listed in the checksum "
                                               "manifest; refused$"):
        read_delphes_file(other, manifest=manifest)
    manifest_path.write_text("not a checksum line\n")
    with pytest.raises(DelphesFileError, match=rf"^{manifest_path}: line 1: expected"):
        read_manifest(manifest_path)


def test_benchmark_cli_prints_figures_and_succeeds(capsys):
    assert hostile_files.main([]) == 0
    out = capsys.readouterr().out
    assert f"files: {len(hostile_files.CASES)}  refused correctly: {len(hostile_files.CASES)}" \
        in out
    assert "peak RSS:" in out


def test_builder_checks_a_manifest_in_the_manual_directory(tmp_path):
    from mlpf_tf.data import datasets
    from mlpf_tf.data.config import DataConfig

    manual = tmp_path / "manual"
    manual.mkdir()
    good = manual / "tev14_pythia8_ttbar_0_0.pkl.bz2"
    write_delphes_file(good, _events())
    bad = manual / "tev14_pythia8_qcd_0_0.pkl.bz2"
    write_delphes_file(bad, _events())
    (manual / "SHA256SUMS").write_text(f"{file_sha256(str(good))}  {good.name}\n")
    cfg = DataConfig(dataset="delphes_pf", config="default", data_dir=str(tmp_path / "tfds"),
                     manual_dir=str(manual))
    with pytest.raises(DelphesFileError, match=rf"^{bad}: not listed in the checksum manifest"):
        datasets.prepare_dataset(cfg)


def test_error_text_of_a_huge_state_stays_short(tmp_path):
    # an array state whose tuple holds 8 MB of bytes and a 500-digit integer
    bad_state = hostile_files._global(b"numpy.core.multiarray", b"_reconstruct") + b"(" + \
        hostile_files._global(b"numpy", b"ndarray") + hostile_files._v((0,)) + \
        hostile_files._v(b"b") + b"tR" + hostile_files._v((2, 10**500, b"\0" * (8 << 20))) + b"b"
    path = tmp_path / "state.pkl.bz2"
    path.write_bytes(bz2.compress(hostile_files._file(bad_state)))
    with pytest.raises(DelphesFileError, match=r"unexpected array state \(2, <int of \d+ bits>, "
                                               r"<bytes of length 8388608>\)") as info:
        read_delphes_file(path)
    assert len(str(info.value)) < 400
