from dataclasses import dataclass

import pytest

from patchsim.config import FieldError, from_dict, load_yaml, param, to_dict
from patchsim.errors import ConfigError


@dataclass
class Inner:
    width_m: float = param(3.5, unit="m", range=(2.0, 6.0))
    kind: str = param("a")


@dataclass
class Outer:
    name: str = param("x")
    count: int = param(1, range=(0, 10))
    inner: Inner = param(default_factory=Inner)
    items: list[Inner] = param(default_factory=list)

    def __post_init__(self):
        if self.name == "bad":
            raise FieldError("name", "name may not be 'bad'")


def _write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_loads_nested_values(tmp_path):
    cfg = load_yaml(_write(tmp_path, "name: y\ninner:\n  width_m: 3\nitems:\n  - {width_m: 4}\n"), Outer)
    assert cfg.inner.width_m == 3.0 and isinstance(cfg.inner.width_m, float)
    assert cfg.items[0].width_m == 4.0


def test_unknown_key_names_file_key_and_line(tmp_path):
    p = _write(tmp_path, "name: y\ninner:\n  width_m: 3\n  colour: red\n")
    with pytest.raises(ConfigError) as err:
        load_yaml(p, Outer)
    assert err.value.line == 4 and err.value.key == "inner.colour"
    assert str(p) in str(err.value) and "unknown key" in str(err.value)


def test_out_of_range_and_wrong_type(tmp_path):
    with pytest.raises(ConfigError, match=r"c.yaml:3: key 'inner.width_m': 12.0 is out of range \[2.0, 6.0\] \(m\)"):
        load_yaml(_write(tmp_path, "name: y\ninner:\n  width_m: 12\n"), Outer)
    with pytest.raises(ConfigError, match="key 'count': expected a whole number"):
        load_yaml(_write(tmp_path, "count: 2.5\n"), Outer)
    with pytest.raises(ConfigError, match=r"items.1.width_m"):
        load_yaml(_write(tmp_path, "items:\n  - {width_m: 3}\n  - {width_m: nope}\n"), Outer)


def test_post_init_error_points_at_its_key(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_yaml(_write(tmp_path, "count: 1\nname: bad\n"), Outer)
    assert err.value.line == 2 and err.value.key == "name"


def test_missing_file_invalid_yaml_and_duplicates(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_yaml(tmp_path / "nope.yaml", Outer)
    with pytest.raises(ConfigError, match="invalid YAML") as err:
        load_yaml(_write(tmp_path, "name: [unclosed\n"), Outer)
    assert err.value.line is not None
    with pytest.raises(ConfigError, match="duplicate key"):
        load_yaml(_write(tmp_path, "name: a\nname: b\n"), Outer)


def test_round_trip_through_dict():
    cfg = from_dict(Outer, {"count": 3, "items": [{"kind": "b"}]})
    assert from_dict(Outer, to_dict(cfg)) == cfg
