"""Config sections: defaults -> flagfile -> flags, validation messages, YAML round trip."""

import dataclasses
import os

import pytest
import yaml
from absl import flags

from mlpf_tf.configbase import (
    ConfigError,
    Section,
    atomic_write_text,
    define_flags,
    dump_yaml,
    param,
    section_from_flags,
)


@dataclasses.dataclass
class Toy(Section):
    SECTION = "toy"
    size: int = param(8, "a size", low=1, high=64)
    rate: float = param(0.5, "a rate", low=0.0, high=1.0)
    kind: str = param("a", "a kind", choices=("a", "b"))
    on: bool = param(False, "a switch")
    sizes: tuple = param(None, "several sizes", default_factory=lambda: (1, 2))

    def check(self):
        if self.kind == "b" and self.size < 4:
            self.fail("size", "must be >= 4 when --toy.kind=b")


def parse(argv, tmp_path=None):
    fv = flags.FlagValues()
    define_flags(Toy, fv)
    fv(["prog", *argv])
    return section_from_flags(Toy, None, fv)


def test_defaults_then_flagfile_then_flags(tmp_path):
    flagfile = tmp_path / "f.cfg"
    flagfile.write_text("--toy.size=16\n--toy.kind=b\n--toy.sizes=3,4,5\n")
    cfg = parse([f"--flagfile={flagfile}", "--toy.size=32"])
    cfg.validate()
    assert (cfg.size, cfg.kind, cfg.rate, cfg.on, cfg.sizes) == (32, "b", 0.5, False, (3, 4, 5))
    assert parse([]) == Toy()


@pytest.mark.parametrize("argv, message", [
    (["--toy.size=0"], "--toy.size=0: must be >= 1"),
    (["--toy.size=65"], "--toy.size=65: must be <= 64"),
    (["--toy.kind=c"], "--toy.kind='c': must be one of a, b"),
    (["--toy.kind=b", "--toy.size=2"], "--toy.size=2: must be >= 4 when --toy.kind=b"),
    (["--toy.rate=1.5"], "--toy.rate=1.5: must be <= 1.0"),
])
def test_validation_names_flag_and_value(argv, message):
    with pytest.raises(ConfigError) as err:
        parse(argv).validate()
    assert str(err.value) == message


def test_type_errors_from_yaml():
    with pytest.raises(ConfigError, match=r"--toy.size='big': expected a number \(int\)"):
        Toy.from_dict({"size": "big"}).validate()
    with pytest.raises(ConfigError, match=r"--toy.size=2.5: expected an integer"):
        Toy.from_dict({"size": 2.5}).validate()
    with pytest.raises(ConfigError, match=r"--toy.on='yes': expected true or false"):
        Toy.from_dict({"on": "yes"}).validate()


def test_unknown_field_named():
    with pytest.raises(ConfigError, match=r"unknown toy field\(s\) in p.yaml: colour"):
        Toy.from_dict({"colour": 1}, where="p.yaml")


def test_yaml_round_trip():
    cfg = Toy(size=12, sizes=(7, 9))
    again = Toy.from_dict(yaml.safe_load(dump_yaml(cfg.to_dict())))
    assert again == cfg


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "params.yaml"
    atomic_write_text(target, "a: 1\n")
    atomic_write_text(target, "a: 2\n")
    assert target.read_text() == "a: 2\n"
    assert os.listdir(target.parent) == ["params.yaml"]


def test_atomic_write_uses_normal_file_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "p.yaml", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "p.yaml").stat().st_mode & 0o777 == 0o644
