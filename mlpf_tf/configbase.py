"""Typed configuration sections: dataclasses with help text, validation and YAML/absl round trips.

Each part of the suite owns one section (``DataConfig``, ``ModelConfig``, ``TrainConfig``,
``SearchConfig``, ``LaunchConfig``); ``benchmark.config`` assembles them into one tree.
A section is a dataclass deriving from :class:`Section` whose fields carry their help text
(and optional choices / bounds) in ``metadata``::

    @dataclasses.dataclass
    class ModelConfig(Section):
        bin_size: int = param(64, "elements per LSH bin", low=1)
        activation: str = param("elu", "activation", choices=("elu", "relu"))

The order values are filled in is: defaults -> flagfile -> command-line flags (absl processes
``--flagfile`` in place, so flags after it win). Every field becomes an absl flag named
``--<section>.<field>``. ``validate()`` checks bounds and choices and then calls the section's
own ``check()`` for cross-field rules; errors name the flag and the value.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import typing
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the flag and the value."""


def param(default: Any, help: str, *, choices: tuple | None = None, low: float | None = None,
          high: float | None = None, default_factory: Any = None) -> Any:
    """A dataclass field with help text and optional choices / inclusive bounds."""
    meta = {"help": help, "choices": choices, "low": low, "high": high}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _flag(section: str, name: str) -> str:
    return f"--{section}.{name}" if section else f"--{name}"


class Section:
    """Mixin for configuration dataclasses."""

    #: name of the section in the tree and the flag prefix; set by subclasses.
    SECTION: typing.ClassVar[str] = ""

    def check(self) -> None:
        """Cross-field rules; subclasses override and raise via ``self.fail``."""

    def fail(self, name: str, message: str) -> typing.NoReturn:
        value = getattr(self, name)
        raise ConfigError(f"{_flag(self.SECTION, name)}={value!r}: {message}")

    def validate(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            meta = f.metadata
            expected = hints.get(f.name)
            if expected in (int, float) and (isinstance(value, bool)
                                             or not isinstance(value, (int, float))):
                self.fail(f.name, f"expected a number ({expected.__name__})")
            if expected is int and isinstance(value, float):
                if not value.is_integer():
                    self.fail(f.name, "expected an integer")
                object.__setattr__(self, f.name, int(value))
            if expected is bool and not isinstance(value, bool):
                self.fail(f.name, "expected true or false")
            if expected is str and not isinstance(value, str):
                self.fail(f.name, "expected a string")
            if meta.get("choices") is not None and value not in meta["choices"]:
                self.fail(f.name, f"must be one of {', '.join(map(str, meta['choices']))}")
            if meta.get("low") is not None and value < meta["low"]:
                self.fail(f.name, f"must be >= {meta['low']}")
            if meta.get("high") is not None and value > meta["high"]:
                self.fail(f.name, f"must be <= {meta['high']}")
        self.check()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, where: str = ""):
        """Build a section from a mapping; unknown keys are an error naming them."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - known)
        if unknown:
            place = f" in {where}" if where else ""
            raise ConfigError(
                f"unknown {cls.SECTION or 'config'} field(s){place}: {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}")
        hints = typing.get_type_hints(cls)
        for k, v in list(values.items()):
            if hints.get(k) is tuple and isinstance(v, list):
                values[k] = tuple(v)
        return cls(**values)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


def field_help(cls) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def define_flags(section_cls, flag_values=None) -> None:
    """Define one absl flag ``--<section>.<field>`` per field (default None = keep default)."""
    from absl import flags

    fv = flag_values if flag_values is not None else flags.FLAGS
    hints = typing.get_type_hints(section_cls)
    for f in dataclasses.fields(section_cls):
        name = f"{section_cls.SECTION}.{f.name}"
        if name in fv:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        doc = f"{f.metadata.get('help', '')} (default: {default!r})"
        kind = hints.get(f.name)
        if kind is bool:
            flags.DEFINE_boolean(name, None, doc, flag_values=fv)
        elif kind is int:
            flags.DEFINE_integer(name, None, doc, flag_values=fv)
        elif kind is float:
            flags.DEFINE_float(name, None, doc, flag_values=fv)
        elif kind is tuple:
            flags.DEFINE_list(name, None, doc, flag_values=fv)
        else:
            flags.DEFINE_string(name, None, doc, flag_values=fv)


def section_from_flags(section_cls, base=None, flag_values=None):
    """Overlay the flags that were given (flagfile or command line) onto ``base``."""
    from absl import flags

    fv = flag_values if flag_values is not None else flags.FLAGS
    hints = typing.get_type_hints(section_cls)
    values = (base or section_cls()).to_dict()
    for f in dataclasses.fields(section_cls):
        name = f"{section_cls.SECTION}.{f.name}"
        if name in fv and fv[name].value is not None:
            v = fv[name].value
            if hints.get(f.name) is tuple:
                v = tuple(_parse_scalar(x) for x in v)
            values[f.name] = v
    return section_cls.from_dict(values)


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def atomic_write_text(path: str | os.PathLike, text: str, fsync: bool = True) -> None:
    """Write ``text`` to ``path`` via a temporary file and rename: readers never see half.

    ``fsync`` also forces the data to disk before the rename (survives a power loss, not only
    a killed process); frequent writers whose state is journaled elsewhere may skip it.
    """
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one whole line with a single O_APPEND write, then fsync.

    Concurrent appenders never interleave within a line, and a crash can at worst leave the
    last line truncated (which the readers of such files skip).
    """
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
