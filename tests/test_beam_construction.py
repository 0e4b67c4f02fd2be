"""The suite's remembered Beam introspection (tests/helpers/beam_construction.py) gives Beam's answers."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import userstate

BAG = userstate.BagStateSpec("seen", VarIntCoder())
SEEN = beam.DoFn.StateParam(BAG)  # Beam reads state parameters from the defaults of `process`


class CountPerKey(beam.DoFn):
    def process(self, element, seen=SEEN):
        key, value = element
        seen.add(value)
        yield key, len(list(seen.read()))


class TwoStatesOfOneName(beam.DoFn):
    def process(self, element, a=SEEN, b=SEEN):
        yield element


def test_it_is_installed():
    assert userstate.get_dofn_specs.__wrapped__ is not None
    assert PipelineOptions.view_as.__wrapped__ is not None


def test_state_specs_are_found_each_time_and_each_caller_gets_its_own_sets():
    stateful, stateless = CountPerKey(), beam.Map(str).fn
    for _ in range(2):
        states, timers = userstate.get_dofn_specs(stateful)
        assert states == {BAG} and timers == set()
        states.clear()  # a caller changing its answer changes no later one
        assert userstate.is_stateful_dofn(stateful) and not userstate.is_stateful_dofn(stateless)


def test_a_dofn_beam_rejects_is_rejected_every_time():
    dofn = TwoStatesOfOneName()
    for _ in range(2):
        with pytest.raises(ValueError, match="duplicate"):
            userstate.validate_stateful_dofn(dofn)


def test_views_share_their_options_values_and_each_options_object_has_its_own():
    first, second = PipelineOptions(["--runner=DirectRunner"]), PipelineOptions(["--streaming"])
    view = first.view_as(StandardOptions)
    assert view is first.view_as(StandardOptions) and view.runner == "DirectRunner" and not view.streaming
    view.streaming = True
    assert first.view_as(StandardOptions).streaming and first.get_all_options()["streaming"]
    assert second.view_as(StandardOptions).streaming and second.view_as(StandardOptions).runner is None


def test_a_stateful_pipeline_runs_on_the_in_memory_runner():
    with beam.Pipeline() as pipeline:
        counts = (
            pipeline
            | beam.Create([("a", 1), ("a", 2), ("b", 3)])
            | beam.ParDo(CountPerKey())
            | beam.combiners.Top.PerKey(1)
        )
        assert_that(counts, equal_to([("a", [2]), ("b", [1])]))
