"""Hostile ``*.pkl.bz2`` files for the Delphes reader, and a benchmark of refusing them.

    python -m benchmark.hostile_files [--keep_dir DIR]

Writes :data:`CASES` (zero-stride arrays, huge shapes, bz2 bombs, object dtypes, overlong
lists, foreign globals, truncated streams, wrong nesting, ...) into a temporary directory
(or ``--keep_dir``), reads each with :func:`mlpf_tf.data.delphes_reader.read_delphes_file`
and prints, per file, the seconds taken and the one-line error, then the process's peak
resident set size (``ru_maxrss``) before and after refusing them all. It exits 1 if a file is
accepted, an error is not a one-line DelphesFileError naming the file, or a refusal takes
more than 1 s. The files are written byte by byte (pickle opcodes) so they are exactly the
attacks named, whatever numpy's own pickler would produce. ``run()`` is the
``mlpf-hostile-files`` entry point.
"""

from __future__ import annotations

import argparse
import bz2
import os
import pickle
import resource
import sys
import tempfile
import time

import numpy as np

from mlpf_tf.data.delphes_reader import DelphesFileError, read_delphes_file

MAX_SECONDS = 1.0

_MA = b"numpy.core.multiarray"


def _v(value) -> bytes:
    """Opcodes pushing ``value`` (protocol 3, without PROTO/STOP)."""
    return pickle.dumps(value, protocol=3)[2:-1]


def _global(module: bytes, name: bytes) -> bytes:
    return b"c" + module + b"\n" + name + b"\n"


def _dtype(code: str, state=(3, "<", None, None, None, -1, -1, 0)) -> bytes:
    return _global(b"numpy", b"dtype") + _v((code, False, True)) + b"R" + _v(state) + b"b"


def _reconstruct(shape, code: str, raw, fortran=False, cls=_global(b"numpy", b"ndarray")
                 ) -> bytes:
    return (_global(_MA, b"_reconstruct") + b"(" + cls + _v((0,)) + _v(b"b") + b"tR"
            + b"(" + _v(1) + _v(shape) + _dtype(code) + _v(fortran) + _v(raw) + b"tb")


def _frombuffer(raw: bytes, code: str, shape, order: str = "C") -> bytes:
    return (_global(b"numpy.core.numeric", b"_frombuffer") + b"(" + _v(raw) + _dtype(code)
            + _v(shape) + _v(order) + b"tR")


def _ndarray_call(shape, code: str, buf: bytes, strides) -> bytes:
    return (_global(b"numpy", b"ndarray") + b"(" + _v(shape) + _dtype(code) + _v(buf) + _v(0)
            + _v(strides) + b"tR")


def _file(x_entry: bytes, proto: int = 3) -> bytes:
    """A dict {"X": [x_entry], "ygen": [], "ycand": []} around the opcodes ``x_entry``."""
    return (b"\x80" + bytes([proto]) + b"}" + _v("X") + b"]" + x_entry + b"as"
            + _v("ygen") + b"]" + _valid_array(width=7) + b"as"
            + _v("ycand") + b"]" + _valid_array(width=7) + b"as.")


def _valid_array(n: int = 3, width: int = 12, fill: float = 1.0) -> bytes:
    a = np.full((n, width), fill, np.float64)
    a[:, 0] = 1
    return _reconstruct(a.shape, "f8", a.tobytes())


def _valid_file_bytes() -> bytes:
    rows = lambda w: [np.ones((3, w)) for _ in range(2)]  # noqa: E731
    return pickle.dumps({"X": rows(12), "ygen": [np.zeros((3, 7))] * 2,
                         "ycand": [np.zeros((3, 7))] * 2}, protocol=4)


def _stream_bomb(chunk: int = 8 << 20, count: int = 10) -> bytes:
    """Many large byte strings (compresses about 10000:1): pushed but never used."""
    comp = bz2.BZ2Compressor(9)
    head = b"\x80\x03("
    zeros = b"\0" * chunk
    body = [comp.compress(head)]
    for _ in range(count):
        body.append(comp.compress(b"B" + len(zeros).to_bytes(4, "little")))
        body.append(comp.compress(zeros))
    body.append(comp.compress(b"l."))
    body.append(comp.flush())
    return b"".join(body)


def _nested(depth: int) -> bytes:
    return b"\x80\x03" + b"]" * depth + b"a" * (depth - 1) + b"."


#: name -> (what it attacks, raw pickle bytes or a callable giving the *compressed* bytes)
CASES: dict[str, tuple[str, object]] = {
    "zero_stride": ("numpy.ndarray((10**8, 12), f8, 8-byte buffer, strides (0, 0))",
                    _file(_ndarray_call((10**8, 12), "f8", b"\0" * 8, (0, 0)))),
    "huge_shape_1e8": ("array state with shape (10**8, 12) and 8 bytes of data",
                       _file(_reconstruct((10**8, 12), "f8", b"\0" * 8))),
    "shape_2_70": ("array state with shape (2**70, 12)",
                   _file(_reconstruct((2**70, 12), "f8", b""))),
    "shape_2_70_frombuffer": ("protocol-5 _frombuffer with shape (2**70, 12)",
                              _file(_frombuffer(b"\0" * 8, "f8", (2**70, 12)), proto=5)),
    "wide_shape": ("array state with shape (1, 2**40)",
                   _file(_reconstruct((1, 2**40), "f8", b""))),
    "size_mismatch": ("shape (1000, 12) with 96 bytes of data",
                      _file(_reconstruct((1000, 12), "f8", b"\0" * 96))),
    "bomb_declared_bytes": ("BINBYTES8 declaring 2**40 bytes",
                            b"\x80\x04\x8e" + (2**40).to_bytes(8, "little") + b"\0" * 4096),
    "bomb_frame": ("FRAME declaring 2**40 bytes",
                   b"\x80\x04\x95" + (2**40).to_bytes(8, "little") + b"\0" * 4096),
    "bomb_stream": ("80 MB of zero byte strings in a 7 kB bz2 file", _stream_bomb),
    "object_dtype": ("dtype 'O' with a list of Python objects as data",
                     _file(_reconstruct((1, 12), "O", [0] * 12))),
    "void_dtype": ("dtype 'V96' (raw bytes)", _file(_reconstruct((1, 1), "V96", b"\0" * 96))),
    "list_as_data": ("float dtype whose data is a list instead of bytes",
                     _file(_reconstruct((1, 12), "f8", [0] * 12))),
    "overlong_list_appends": ("a list of 10**7 entries (one APPENDS)",
                              b"\x80\x03](" + b"N" * 10**7 + b"e."),
    "overlong_list_append": ("a list of 5000 events appended one by one",
                             b"\x80\x03]" + b"Na" * 5000 + b"."),
    "foreign_global_system": ("os.system('true') by GLOBAL + REDUCE",
                              b"\x80\x03" + _global(b"os", b"system") + _v(("true",)) + b"R."),
    "foreign_global_eval": ("builtins.eval by STACK_GLOBAL",
                            b"\x80\x04" + _v("builtins") + _v("eval") + b"\x93"
                            + _v(("1",)) + b"R."),
    "numpy_other_global": ("numpy.core.multiarray.scalar (not an array rebuilder)",
                           _file(_global(_MA, b"scalar") + _v((1,)) + b"R")),
    "newobj_opcode": ("NEWOBJ on numpy.ndarray",
                      _file(_global(b"numpy", b"ndarray") + _v(((10**8, 12),)) + b"\x81")),
    "reconstruct_other_class": ("_reconstruct(numpy.dtype, (0,), b'b')",
                                _file(_reconstruct((1, 12), "f8", b"\0" * 96,
                                                   cls=_global(b"numpy", b"dtype")))),
    "fortran_order": ("protocol-5 _frombuffer in Fortran order",
                      _file(_frombuffer(b"\0" * 96, "f8", (1, 12), "F"), proto=5)),
    "truncated_stream": ("a valid file cut in half (bz2 stream ends early)",
                         lambda: bz2.compress(_valid_file_bytes())[:-200]),
    "truncated_pickle": ("a complete bz2 stream of a pickle without its end",
                         _valid_file_bytes()[:-40]),
    "nested_lists": ("X holds a list of lists of arrays",
                     _file(b"]" + _valid_array() + b"a")),
    "deep_nesting": ("50000 nested lists", _nested(50_000)),
    "huge_text_int": ("protocol-0 LONG with 5 million digits",
                      b"L" + b"9" * 5_000_000 + b"L\n."),
    "not_bz2": ("a plain (uncompressed) pickle", lambda: _valid_file_bytes()),
}


def write_cases(directory: str) -> dict[str, str]:
    """Write every case as ``<name>.pkl.bz2`` into ``directory``; returns {name: path}."""
    os.makedirs(directory, exist_ok=True)
    paths = {}
    for name, (_, payload) in CASES.items():
        data = payload() if callable(payload) else bz2.compress(payload, 9)
        path = os.path.join(directory, f"{name}.pkl.bz2")
        with open(path, "wb") as fh:
            fh.write(data)
        paths[name] = path
    return paths


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def refuse(path: str) -> tuple[float, str | None]:
    """(seconds, error line or None if the file was accepted) of reading ``path``."""
    start = time.perf_counter()
    try:
        read_delphes_file(path)
    except DelphesFileError as exc:
        return time.perf_counter() - start, str(exc)
    return time.perf_counter() - start, None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep_dir", default="", help="write the files here and keep them")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.keep_dir or tmp
        paths = write_cases(directory)
        rss_before = peak_rss_mb()
        failures, times = [], []
        print(f"{'file':<24} {'seconds':>8}  error")
        for name, path in paths.items():
            seconds, error = refuse(path)
            times.append(seconds)
            ok = (error is not None and error.startswith(f"{path}: ") and "\n" not in error
                  and seconds < MAX_SECONDS)
            if not ok:
                failures.append(name)
            shown = "ACCEPTED" if error is None else error[len(directory) + 1:]
            print(f"{name:<24} {seconds:8.3f}  {shown}")
        rss_after = peak_rss_mb()
    print(f"files: {len(paths)}  refused correctly: {len(paths) - len(failures)}  "
          f"max seconds: {max(times):.3f}  mean seconds: {sum(times) / len(times):.3f}")
    print(f"peak RSS: {rss_before:.0f} MB before reading, {rss_after:.0f} MB after refusing "
          "all files")
    if failures:
        print(f"FAILED: {', '.join(failures)}")
    return 1 if failures else 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
