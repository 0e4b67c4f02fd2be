"""Beam's construction-time introspection, remembered per object for the test processes.

Building and starting one of the project's pipelines (~60 transforms) asks Beam, ~380 times, which
state and timer parameters each DoFn declares (`userstate.get_dofn_specs`: `inspect.signature` of every
method of the DoFn, each time), and makes ~470 option views (`PipelineOptions.view_as`: a new argparse
parser each time). On the tests' tiny inputs that is ~0.7 of a prediction's ~1.7 CPU-s, and ~60 CPU-s of
the suite. Both answers are fixed for a given object: a DoFn's methods and an options object's flags do
not change once made. So the suite asks once per object (identity, never equality) and reuses the answer.

Only the tests' own processes do this; the jobs as users run them, and the tests' command-line
subprocesses, use Beam as it is. A failure inside Beam (a DoFn with duplicate parameters) is not
remembered and raises as before.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any


def _per_object(compute: Callable[[Any], Any], copy: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`compute(obj)`, remembered while `obj` lives; `copy` hands each caller its own result."""
    known: dict[int, tuple[weakref.ref, Any]] = {}

    @functools.wraps(compute)
    def remembered(obj):
        key = id(obj)
        entry = known.get(key)
        if entry is not None and entry[0]() is obj:
            return copy(entry[1])
        result = compute(obj)
        try:
            ref = weakref.ref(obj, lambda _: known.pop(key, None))
        except TypeError:  # not weakly referable: asked again each time, as Beam does
            return result
        known[key] = (ref, result)
        return copy(result)

    return remembered


def install() -> None:
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.transforms import userstate

    if getattr(userstate.get_dofn_specs, "__wrapped__", None) is None:
        userstate.get_dofn_specs = _per_object(
            userstate.get_dofn_specs, lambda specs: (set(specs[0]), set(specs[1]))
        )
    view_as = PipelineOptions.view_as
    if getattr(view_as, "__wrapped__", None) is None:
        views = weakref.WeakKeyDictionary()  # options object -> {class: view}

        @functools.wraps(view_as)
        def remembered_view_as(self, cls):
            known = views.setdefault(self, {})
            view = known.get(cls)
            if view is None or view._flags is not self._flags:
                view = known[cls] = view_as(self, cls)
            return view

        PipelineOptions.view_as = remembered_view_as
