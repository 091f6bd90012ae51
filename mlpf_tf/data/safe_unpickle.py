"""A guarded unpickler for files that should hold only numeric numpy arrays in dicts and lists.

Why: a pickle is a program. Even with every foreign global refused, the numpy globals that
rebuild arrays can be called with hostile arguments: ``numpy.ndarray((10**8, 12), float,
buffer, 0, (0, 0))`` makes a zero-stride array that a later ``astype`` turns into gigabytes,
a shape of ``2**70`` raises OverflowError, a bz2 stream of a few hundred bytes can declare
terabytes. This module therefore

* runs the pure-Python unpickler with an allow-list of opcodes (no object construction other
  than through the wrappers below, no persistent ids, no extension registry) and a cap on the
  number of opcodes executed, which bounds the stack, the memo and every list;
* resolves globals only to wrappers that accept exactly the call shapes numpy's own pickles
  use: ``_reconstruct(ndarray, (0,), b'b')`` followed by the array state ``(1, shape, dtype,
  False, raw bytes)``, ``_frombuffer(buffer, dtype, shape, 'C')`` and ``dtype(code, False,
  True)`` with the state ``(3, byteorder, None, None, None, -1, -1, 0)``. ``numpy.ndarray``
  itself resolves to a token that cannot be called. Arrays are float or int, at most 2-d,
  C-contiguous, built by ``numpy.frombuffer`` from raw bytes whose length must equal
  shape x itemsize (computed with Python integers, so no overflow), with at most
  ``max_elements`` rows;
* reads the (bz2-decompressed) stream through a reader that refuses any request beyond
  ``max_decompressed_bytes`` in total and any single bytes/str object beyond the largest array
  ``max_elements`` allows, before the bytes are read or allocated;
* caps every list at ``max_list_length`` entries and every dict at ``max_dict_keys``.

Every refusal is a :class:`pickle.UnpicklingError` with a one-line message; callers add the
file name. Stubs (:class:`_ArrayState`) returned by ``_reconstruct`` are replaced by their
arrays after loading, by :func:`resolve_arrays`.
"""

from __future__ import annotations

import dataclasses
import io
import math
import pickle
import struct

import numpy as np

_MAX_NDIM = 2
# Array dtypes accepted: float and (un)signed int codes as numpy pickles them.
_DTYPE_CODES = frozenset({"f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8"})
_BYTEORDERS = frozenset({"<", ">", "|", "="})


@dataclasses.dataclass(frozen=True)
class PickleLimits:
    """Caps applied while unpickling (see the module docstring)."""

    max_elements: int = 50_000          # rows of one array (elements of one event)
    max_columns: int = 64               # columns of one array
    max_list_length: int = 1_000        # entries of one list (events of one file)
    max_dict_keys: int = 8
    max_decompressed_bytes: int = 256 << 20

    @property
    def max_object_bytes(self) -> int:
        """Largest bytes/str object: one float64 array at the caps, latin-1 text doubled."""
        return 2 * self.max_elements * self.max_columns * 8 + 1024

    @property
    def max_opcodes(self) -> int:
        """About 40 opcodes rebuild one array (protocol 0); a list entry holds a few arrays."""
        return 1_000 + 200 * self.max_list_length


class Refused(pickle.UnpicklingError):
    """The stream breaks a rule of the guarded unpickler."""


class _Budget:
    """Bytes of large bytes/str objects read but not yet turned into an array.

    In numpy's pickles an array's raw data is consumed right after it is read, so data piling
    up unused (a decompression bomb made of many large strings) is refused early.
    """

    SMALL = 4096  # objects below this size are not counted

    def __init__(self, limits: PickleLimits):
        self.limits = limits
        self.pending = 0
        self.cap = 2 * limits.max_object_bytes

    def add(self, n: int) -> None:
        if n >= self.SMALL:
            self.pending += n
            if self.pending > self.cap:
                raise Refused(f"more than {self.cap} bytes of data not used by any array "
                              "(decompression bomb?)")

    def consume(self, n: int) -> None:
        if n >= self.SMALL:
            self.pending = max(0, self.pending - n)


class CappedReader(io.RawIOBase):
    """A read-only view of ``raw`` that refuses to deliver more than ``limit`` bytes in total."""

    def __init__(self, raw, limit: int, object_limit: int):
        super().__init__()
        self._raw, self._left, self._object_limit = raw, limit, object_limit
        self.limit = limit

    def readable(self) -> bool:
        return True

    def _take(self, n: int) -> None:
        if n > self._left:
            raise Refused(f"decompressed data would exceed the cap of {self.limit} bytes "
                          f"(--max_decompressed_bytes)")
        self._left -= n

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            raise Refused("unbounded read refused")
        self._take(n)
        data = self._raw.read(n)
        self._left += n - len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        cap = min(self._left, self._object_limit)
        line = self._raw.readline(cap + 1)
        if len(line) > cap:
            raise Refused(f"text line longer than {cap} bytes")
        self._left -= len(line)
        return line


class _NdarrayToken:
    """What ``numpy.ndarray`` resolves to: usable only as _reconstruct's first argument."""

    def __call__(self, *args, **kwargs):
        raise Refused("numpy.ndarray may not be called directly")

    def __reduce__(self):  # never pickled back
        raise TypeError("not picklable")


_NDARRAY = _NdarrayToken()


class _DtypeStub:
    """``numpy.dtype(code, False, True)`` whose byte order arrives later by BUILD."""

    def __init__(self, code: str):
        self.code = code
        self.dtype: np.dtype | None = None

    def __setstate__(self, state) -> None:
        if (type(state) is not tuple or len(state) != 8 or state[0] != 3
                or state[1] not in _BYTEORDERS or state[2:] != (None, None, None, -1, -1, 0)):
            raise Refused(f"unexpected dtype state {_short(state)}")
        if self.dtype is not None:
            raise Refused("dtype state set twice")
        order = state[1]
        self.dtype = np.dtype(self.code).newbyteorder(order if order != "|" else "=")

    def resolve(self) -> np.dtype:
        if self.dtype is None:
            raise Refused(f"dtype {self.code!r} used before its state was set")
        return self.dtype


def _make_dtype(*args, **kwargs) -> _DtypeStub:
    if (kwargs or len(args) != 3 or type(args[0]) is not str or args[0] not in _DTYPE_CODES
            or args[1] is not False or args[2] is not True):
        raise Refused(f"refused numpy.dtype{_short(args)}: only float and int dtypes")
    return _DtypeStub(args[0])


class _ArrayState:
    """The empty array ``_reconstruct`` makes; its BUILD state becomes the real array."""

    def __init__(self, budget: _Budget):
        self._budget = budget
        self.array: np.ndarray | None = None

    def __setstate__(self, state) -> None:
        if self.array is not None:
            raise Refused("array state set twice")
        if type(state) is not tuple or len(state) != 5 or state[0] != 1:
            raise Refused(f"unexpected array state {_short(state)}")
        _, shape, dtype, is_fortran, raw = state
        if is_fortran is not False:
            raise Refused("only C-contiguous arrays are accepted (Fortran order given)")
        self.array = _checked_array(raw, dtype, shape, self._budget)


def _make_reconstruct(budget: _Budget):
    def _reconstruct(*args, **kwargs) -> _ArrayState:
        if (kwargs or len(args) != 3 or args[0] is not _NDARRAY or type(args[1]) is not tuple
                or args[1] != (0,) or type(args[1][0]) is not int
                or type(args[2]) is not bytes or args[2] != b"b"):
            what = ", ".join("numpy.ndarray" if a is _NDARRAY else _short(a, 30) for a in args)
            raise Refused(f"refused _reconstruct({what}): expected (numpy.ndarray, (0,), b'b')")
        return _ArrayState(budget)
    return _reconstruct


def _make_frombuffer(budget: _Budget):
    def _frombuffer(*args, **kwargs) -> np.ndarray:
        if kwargs or len(args) != 4:
            raise Refused(f"refused _frombuffer with {len(args)} arguments")
        buf, dtype, shape, order = args
        if order != "C":
            raise Refused(f"only C-contiguous arrays are accepted (order {order!r})")
        return _checked_array(buf, dtype, shape, budget)
    return _frombuffer


def _make_encode(budget: _Budget):
    def _encode(*args, **kwargs) -> bytes:
        """``codecs.encode`` limited to the latin-1 text -> bytes step of protocols 0-2."""
        if (kwargs or len(args) != 2 or type(args[0]) is not str
                or args[1] not in ("latin1", "latin-1")):
            raise Refused(f"refused _codecs.encode{_short(args)}")
        data = args[0].encode("latin1")
        budget.consume(len(args[0]))
        budget.add(len(data))
        return data
    return _encode


def _checked_array(raw, dtype, shape, budget: _Budget) -> np.ndarray:
    limits = budget.limits
    if type(raw) not in (bytes, bytearray):
        raise Refused(f"array data is {type(raw).__name__}, expected bytes")
    if not isinstance(dtype, _DtypeStub):
        raise Refused(f"array dtype is {type(dtype).__name__}, expected a float or int dtype")
    dt = dtype.resolve()
    if (type(shape) is not tuple or not 1 <= len(shape) <= _MAX_NDIM
            or not all(type(d) is int for d in shape)):
        raise Refused(f"array shape {_short(shape)} is not a tuple of 1 or 2 integers")
    if any(d < 0 for d in shape):
        raise Refused(f"array shape {shape} has a negative dimension")
    if shape[0] > limits.max_elements:
        raise Refused(f"array shape {_short(shape)}: {shape[0]} rows exceed the cap of "
                      f"{limits.max_elements} elements per event")
    if len(shape) == 2 and shape[1] > limits.max_columns:
        raise Refused(f"array shape {shape}: {shape[1]} columns exceed the cap of "
                      f"{limits.max_columns}")
    nbytes = math.prod(shape) * dt.itemsize  # Python ints: exact, no overflow
    if len(raw) != nbytes:
        raise Refused(f"array of shape {shape} and dtype {dt} needs {nbytes} bytes, the data "
                      f"has {len(raw)}")
    budget.consume(len(raw))
    return np.frombuffer(bytes(raw), dtype=dt).reshape(shape)


def _short(obj, limit: int = 80) -> str:
    """A one-line, bounded repr of a (possibly huge or hostile) value, built piece by piece."""
    text = " ".join(_bounded_repr(obj, depth=0).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _bounded_repr(obj, depth: int) -> str:
    if isinstance(obj, (bytes, bytearray, str)):
        return repr(obj) if len(obj) <= 40 else f"<{type(obj).__name__} of length {len(obj)}>"
    if type(obj) in (tuple, list):
        if depth > 2:
            return f"<{type(obj).__name__} of length {len(obj)}>"
        inner = ", ".join(_bounded_repr(x, depth + 1) for x in obj[:8])
        more = ", ..." if len(obj) > 8 else ("," if type(obj) is tuple and len(obj) == 1 else "")
        return ("({})" if type(obj) is tuple else "[{}]").format(inner + more)
    if type(obj) in (int, float, bool) or obj is None:
        text = repr(obj) if type(obj) is not int or obj.bit_length() < 200 else \
            f"<int of {obj.bit_length()} bits>"
        return text
    return f"<{type(obj).__name__}>"


# Opcodes the guarded unpickler executes; everything else is refused.
_ALLOWED_OPCODES = frozenset(
    ord(op) if isinstance(op, str) else op[0] for op in (
        pickle.PROTO, pickle.FRAME, pickle.STOP, pickle.MARK, pickle.POP, pickle.POP_MARK,
        pickle.EMPTY_DICT, pickle.DICT, pickle.EMPTY_LIST, pickle.LIST, pickle.EMPTY_TUPLE,
        pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3,
        pickle.APPEND, pickle.APPENDS, pickle.SETITEM, pickle.SETITEMS,
        pickle.NONE, pickle.NEWTRUE, pickle.NEWFALSE,
        pickle.INT, pickle.BININT, pickle.BININT1, pickle.BININT2, pickle.LONG, pickle.LONG1,
        pickle.UNICODE, pickle.BINUNICODE, pickle.SHORT_BINUNICODE, pickle.BINUNICODE8,
        pickle.BINBYTES, pickle.SHORT_BINBYTES, pickle.BINBYTES8, pickle.BYTEARRAY8,
        pickle.PUT, pickle.BINPUT, pickle.LONG_BINPUT, pickle.MEMOIZE,
        pickle.GET, pickle.BINGET, pickle.LONG_BINGET,
        pickle.GLOBAL, pickle.STACK_GLOBAL, pickle.REDUCE, pickle.BUILD))


class GuardedUnpickler(pickle._Unpickler):  # the Python implementation lets us wrap opcodes
    """Unpickles dicts, lists, tuples, scalars and float/int numpy arrays, nothing else."""

    def __init__(self, file: CappedReader, limits: PickleLimits = PickleLimits()):
        super().__init__(file)
        self._limits = limits
        self._opcodes_left = limits.max_opcodes
        # pickle batches list entries 1000 at a time onto the stack; a few more for nesting
        self._stack_cap = max(limits.max_list_length, 1000) + 64
        self._budget = _Budget(limits)
        reconstruct, frombuffer = _make_reconstruct(self._budget), _make_frombuffer(self._budget)
        self._globals = {}
        for package in ("numpy.core", "numpy._core"):
            self._globals[(f"{package}.multiarray", "_reconstruct")] = reconstruct
            self._globals[(f"{package}.numeric", "_frombuffer")] = frombuffer
        self._globals[("numpy", "ndarray")] = _NDARRAY
        self._globals[("numpy", "dtype")] = _make_dtype
        self._globals[("_codecs", "encode")] = _make_encode(self._budget)
        self._callables = frozenset(id(f) for f in self._globals.values())
        base = pickle._Unpickler.dispatch
        table = {}
        for code in range(256):
            handler = self._overrides().get(code) or base.get(code)
            table[code] = (self._counted(handler) if code in _ALLOWED_OPCODES and handler
                           else self._refuse_opcode(code))
        self.dispatch = table

    # -- dispatch helpers -----------------------------------------------------------------
    def _counted(self, handler):
        def run(unpickler):
            unpickler._opcodes_left -= 1
            if unpickler._opcodes_left < 0:
                raise Refused(f"more than {unpickler._limits.max_opcodes} pickle opcodes "
                              "(structure too large)")
            handler(unpickler)
            if len(unpickler.stack) > unpickler._stack_cap:
                raise Refused(f"more than {unpickler._stack_cap} values on the pickle stack "
                              "(structure too large)")
        return run

    @staticmethod
    def _refuse_opcode(code: int):
        def refuse(unpickler):
            raise Refused(f"pickle opcode {bytes([code])!r} is not allowed")
        return refuse

    def _overrides(self) -> dict:
        P = pickle
        return {P.FRAME[0]: GuardedUnpickler._load_frame,
                P.BINBYTES[0]: lambda u: u.append(u._read_sized("<I", bytes)),
                P.BINBYTES8[0]: lambda u: u.append(u._read_sized("<Q", bytes)),
                P.SHORT_BINBYTES[0]: lambda u: u.append(u._read_sized("<B", bytes)),
                P.BYTEARRAY8[0]: lambda u: u.append(u._read_sized("<Q", bytearray)),
                P.BINUNICODE[0]: lambda u: u.append(u._read_sized("<I", str)),
                P.BINUNICODE8[0]: lambda u: u.append(u._read_sized("<Q", str)),
                P.SHORT_BINUNICODE[0]: lambda u: u.append(u._read_sized("<B", str)),
                P.UNICODE[0]: GuardedUnpickler._load_text_unicode,
                P.APPEND[0]: GuardedUnpickler._load_append,
                P.LIST[0]: GuardedUnpickler._load_list,
                P.APPENDS[0]: GuardedUnpickler._load_appends,
                P.SETITEM[0]: GuardedUnpickler._load_setitem,
                P.SETITEMS[0]: GuardedUnpickler._load_setitems,
                P.REDUCE[0]: GuardedUnpickler._load_reduce,
                P.BUILD[0]: GuardedUnpickler._load_build}

    # -- sized reads: the length is checked before anything is read or allocated ----------
    def _read_sized(self, fmt: str, kind: type):
        (n,) = struct.unpack(fmt, self.read(struct.calcsize(fmt)))
        if n > self._limits.max_object_bytes:
            raise Refused(f"a {kind.__name__} object of {n} bytes exceeds the cap of "
                          f"{self._limits.max_object_bytes} bytes")
        data = self.read(n)
        if len(data) != n:
            raise EOFError("unexpected end of data")
        self._budget.add(n)
        if kind is str:
            return str(data, "utf-8", "surrogatepass")
        return bytearray(data) if kind is bytearray else data

    def _load_text_unicode(self):
        pickle._Unpickler.load_unicode(self)  # protocol 0: one line, capped by the reader
        self._budget.add(len(self.stack[-1]))

    def _load_frame(self):
        (n,) = struct.unpack("<Q", self.read(8))
        if n > self._limits.max_decompressed_bytes:
            raise Refused(f"a frame of {n} bytes exceeds the cap of "
                          f"{self._limits.max_decompressed_bytes} decompressed bytes")
        self._unframer.load_frame(n)

    # -- containers ------------------------------------------------------------------------
    def _check_list(self, obj, extra: int) -> None:
        if type(obj) is not list:
            raise Refused(f"append to a {type(obj).__name__}")
        if len(obj) + extra > self._limits.max_list_length:
            raise Refused(f"a list longer than {self._limits.max_list_length} entries "
                          "(events per file cap)")

    def _load_append(self):
        value = self.stack.pop()
        self._check_list(self.stack[-1], 1)
        self.stack[-1].append(value)

    def _load_list(self):
        items = self.pop_mark()
        self._check_list([], len(items))
        self.append(items)

    def _load_appends(self):
        items = self.pop_mark()
        self._check_list(self.stack[-1], len(items))
        self.stack[-1].extend(items)

    def _check_dict(self, obj, keys) -> None:
        if type(obj) is not dict:
            raise Refused(f"set item on a {type(obj).__name__}")
        if not all(type(k) is str for k in keys):
            raise Refused("dict keys must be strings")
        if len(obj) + len(keys) > self._limits.max_dict_keys:
            raise Refused(f"a dict with more than {self._limits.max_dict_keys} keys")

    def _load_setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        self._check_dict(self.stack[-1], [key])
        self.stack[-1][key] = value

    def _load_setitems(self):
        items = self.pop_mark()
        keys = items[0::2]
        self._check_dict(self.stack[-1], keys)
        for i in range(0, len(items) - 1, 2):
            self.stack[-1][items[i]] = items[i + 1]

    # -- calls -----------------------------------------------------------------------------
    def _load_reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        if func is _NDARRAY:
            raise Refused("numpy.ndarray may not be called (only rebuilt by _reconstruct)")
        if id(func) not in self._callables:
            raise Refused(f"call of a {type(func).__name__} refused")
        if type(args) is not tuple:
            raise Refused("call arguments are not a tuple")
        self.stack[-1] = func(*args)

    def _load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, (_ArrayState, _DtypeStub)):
            raise Refused(f"BUILD on a {type(inst).__name__} refused")
        inst.__setstate__(state)

    def find_class(self, module: str, name: str):
        try:
            return self._globals[(module, name)]
        except KeyError:
            raise Refused(f"refused global {module}.{name}: only numpy array reconstruction "
                          "is allowed") from None


def resolve_arrays(obj, depth: int = 0):
    """Replace every :class:`_ArrayState` in nested dicts/lists by its array."""
    if depth > 4:
        raise Refused("structure nested deeper than expected")
    if isinstance(obj, _ArrayState):
        if obj.array is None:
            raise Refused("an array without its data (missing BUILD)")
        return obj.array
    if isinstance(obj, (_DtypeStub, _NdarrayToken)):
        raise Refused(f"unexpected {type(obj).__name__.strip('_')} outside an array")
    if type(obj) is dict:
        return {k: resolve_arrays(v, depth + 1) for k, v in obj.items()}
    if type(obj) is list:
        return [resolve_arrays(v, depth + 1) for v in obj]
    return obj


def load(raw, limits: PickleLimits = PickleLimits()):
    """Unpickle from the binary stream ``raw`` under ``limits``; arrays resolved.

    Raises :class:`Refused`, :class:`pickle.UnpicklingError` or EOFError for a bad stream.
    """
    reader = CappedReader(raw, limits.max_decompressed_bytes, limits.max_object_bytes)
    obj = GuardedUnpickler(reader, limits).load()
    return resolve_arrays(obj)
