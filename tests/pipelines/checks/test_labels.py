"""The label checks: --classes by name, and no guessed class names for Earth Engine labels."""

from __future__ import annotations

import types

import pytest

from pipelines.checks.labels import class_subset, earthengine_scheme
from pipelines.shell import UsageError
from transforms.contracts.label_scheme import dynamic_world
from transforms.io.earthengine.recipes import label_scheme_of


def test_classes_by_name_or_index_in_the_schemes_order():
    scheme = dynamic_world()
    assert class_subset(None, scheme) is None
    assert class_subset("trees,water,0", scheme) == (scheme.names.index("water"), scheme.names.index("trees"))
    with pytest.raises(UsageError, match="--classes 'forest' is not a class of the label scheme"):
        class_subset("forest", scheme)


def test_earth_engine_labels_need_a_scheme_unless_their_preset_names_one():
    no_scheme = types.SimpleNamespace(label_scheme=None)
    scheme = label_scheme_of("worldcover-dynamicworld:2021")
    assert earthengine_scheme(no_scheme, "worldcover-dynamicworld:2021", scheme, {1: 10}) == dynamic_world()
    loss = earthengine_scheme(
        no_scheme, "hansen-loss:2001..2020", label_scheme_of("hansen-loss:2001..2020"), {}
    )
    assert loss.name == "forest-loss" and loss.is_binary and loss.value_map() == {0: 0, 1: 1}
    assert label_scheme_of("projects/p/assets/labels") is None
    with pytest.raises(UsageError) as refused:
        earthengine_scheme(no_scheme, "projects/p/assets/labels", None, {1: 10, 2: 5})
    assert str(refused.value).startswith(
        "--ee-labels 'projects/p/assets/labels' needs --label-scheme: terrabeam will not guess class names."
    )
    binary = types.SimpleNamespace(label_scheme="binary:water=1")
    assert earthengine_scheme(binary, "hansen-loss:2001..2020", "forest-loss", {1: 10}).name == "binary-water"
