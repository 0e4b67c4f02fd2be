"""The label checks: --classes by name, and no guessed class names for Earth Engine labels."""

from __future__ import annotations

import types

import pytest

from pipelines.checks.labels import class_subset, earthengine_scheme
from pipelines.shell import UsageError
from transforms.contracts.label_scheme import dynamic_world


def test_classes_by_name_or_index_in_the_schemes_order():
    scheme = dynamic_world()
    assert class_subset(None, scheme) is None
    assert class_subset("trees,water,0", scheme) == (scheme.names.index("water"), scheme.names.index("trees"))
    with pytest.raises(UsageError, match="--classes 'forest' is not a class of the label scheme"):
        class_subset("forest", scheme)


def test_earth_engine_labels_need_a_scheme_unless_they_are_the_default_recipe():
    no_scheme = types.SimpleNamespace(label_scheme=None)
    assert earthengine_scheme(no_scheme, "worldcover", True, {1: 10}).names == dynamic_world().names
    with pytest.raises(UsageError) as refused:
        earthengine_scheme(no_scheme, "projects/p/assets/labels", False, {1: 10, 2: 5})
    assert str(refused.value).startswith(
        "--ee-labels 'projects/p/assets/labels' needs --label-scheme: terrabeam will not guess class names."
    )
    binary = types.SimpleNamespace(label_scheme="binary:water=1")
    assert earthengine_scheme(binary, "projects/p/assets/labels", False, {1: 10}).num_classes == 2
