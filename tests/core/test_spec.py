"""Pass-spec and recipe parsing, option coercion, registry errors."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from onnxcomp.errors import UsageError
from onnxcomp.passes_api import Pass, build_options, coerce, get_pass, opt, registry
from onnxcomp.pipeline import DEFAULT_PIPELINE, instantiate, load_recipe, parse_spec


def test_parse_spec_with_options_and_nesting():
    specs = parse_spec("fold-constants, prune-filters(ratio=0.5,criterion=l1,protect=conv1|fc*), kmeans(bits=4)")
    assert [s.name for s in specs] == ["fold-constants", "prune-filters", "kmeans"]
    assert specs[1].options == {"ratio": "0.5", "criterion": "l1", "protect": "conv1|fc*"}
    assert str(specs[2]) == "kmeans(bits=4)"


@pytest.mark.parametrize("bad", ["", "a(", "a(x=1", "a)b", "a(x)", "(x=1)", "a(=1)"])
def test_parse_spec_errors_are_usage_errors(bad):
    with pytest.raises(UsageError):
        parse_spec(bad)


def test_unknown_pass_lists_valid_ones():
    with pytest.raises(UsageError) as err:
        get_pass("fuse-everything")
    assert "fold-constants" in str(err.value) and "valid passes" in str(err.value)


class _Demo(Pass):
    name = "demo-pass"

    @dataclasses.dataclass
    class Options:
        ratio: float = opt(0.5, "fraction")
        bits: int = opt(4)
        flag: bool = opt(False)
        mode: Literal["a", "b"] = opt("a")
        names: list[str] = opt([], "names")
        per_layer: dict[str, float] = opt({}, "map")
        limit: int | None = opt(None)


def test_option_coercion_from_strings():
    o = build_options(
        _Demo,
        {
            "ratio": "0.25",
            "bits": "3",
            "flag": "true",
            "mode": "b",
            "names": "x;y|z",
            "per-layer": "conv1:0.3;conv2:0.5",
            "limit": "none",
        },
    )
    assert (o.ratio, o.bits, o.flag, o.mode) == (0.25, 3, True, "b")
    assert o.names == ["x", "y", "z"]
    assert o.per_layer == {"conv1": 0.3, "conv2": 0.5}
    assert o.limit is None
    assert build_options(_Demo, {"limit": "7"}).limit == 7


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("bits", "four", "integer"),
        ("bits", "2.5", "integer"),
        ("flag", "maybe", "true or false"),
        ("mode", "c", "one of a, b"),
        ("per_layer", "conv1", "key:value"),
        ("nope", "1", "valid options: ratio"),
    ],
)
def test_option_errors_name_the_problem(key, value, needle):
    with pytest.raises(UsageError) as err:
        build_options(_Demo, {key: value})
    assert needle in str(err.value)


def test_coerce_toml_values():
    assert coerce(["a", "b"], list[str]) == ["a", "b"]
    assert coerce({"a": 1}, dict[str, float]) == {"a": 1.0}
    with pytest.raises(ValueError):
        coerce(True, int)


def test_default_pipeline_passes_exist_and_are_lossless():
    reg = registry()
    for spec in parse_spec(DEFAULT_PIPELINE):
        assert spec.name in reg
        assert reg[spec.name].lossless


def test_recipe(tmp_path):
    r = tmp_path / "r.toml"
    r.write_text(
        '[[pass]]\nname = "fold-constants"\nfold_shapes = false\n\n[verify]\nenabled = true\nmin_cosine = 0.99\n'
    )
    specs, settings = load_recipe(r)
    assert specs[0].name == "fold-constants" and specs[0].options == {"fold_shapes": False}
    assert settings["verify"]["min_cosine"] == 0.99
    p = specs[0].instantiate()
    assert p.options.fold_shapes is False


@pytest.mark.parametrize("text", ["[[pass]]\nfoo = 1\n", "x = [", "[other]\na=1\n[[pass]]\nname='eliminate'\n", ""])
def test_bad_recipes(tmp_path, text):
    r = tmp_path / "r.toml"
    r.write_text(text)
    with pytest.raises(UsageError):
        load_recipe(r)


@pytest.mark.parametrize("spec", ["fuse-bn(conv=true,conv=false)", "fold-constants(max-elements=1,max_elements=2)"])
def test_option_given_twice_is_refused(spec):
    # the last value silently won: a typo'd pipeline ran with options the user did not mean
    with pytest.raises(UsageError, match="twice"):
        instantiate(parse_spec(spec))


@pytest.mark.parametrize(
    "section",
    [
        "[verify]\nenable = true\n",  # typo of 'enabled': verification silently did not run
        "[verify]\nenabled = 'yes'\n",
        "[verify]\nmin_cosine = 'high'\n",
        "[optimize]\nseed = 3\n",  # accepted and never read
    ],
)
def test_recipe_settings_are_checked_when_read(tmp_path, section):
    r = tmp_path / "r.toml"
    r.write_text("[[pass]]\nname = 'eliminate'\n\n" + section)
    with pytest.raises(UsageError):
        load_recipe(r)
