"""Jobs that share flag names coexist in one process (Beam merges every options class)."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.options import SharedArgumentGroup, unknown_flags


class _JobA(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        group = SharedArgumentGroup(parser, "a")
        group.add_argument("--shared-thing", dest="shared_thing", default="a-default")
        group.add_argument("--only-a", dest="only_a", default=1, type=int)


class _JobB(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        group = SharedArgumentGroup(parser, "b")
        group.add_argument("--shared-thing", dest="shared_thing", default="b-default")


def test_shared_flags_do_not_clash_and_keep_each_jobs_default():
    options = PipelineOptions(["--only-a", "3"])
    assert options.get_all_options()["only_a"] == 3  # the merged parser builds without a conflict
    assert options.view_as(_JobA).shared_thing == "a-default"
    assert PipelineOptions([]).view_as(_JobB).shared_thing == "b-default"
    assert unknown_flags(PipelineOptions(["--shared-thing", "x", "--nope", "1"])) == ["nope"]
