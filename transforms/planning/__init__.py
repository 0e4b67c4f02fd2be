"""Plans of jobs before they run: the work, Earth Engine requests and the time the quota allows them,
workers and hours from the throughputs benchmarks/ measured, the cost from a dated price table, and the
output's size in Cloud Storage.

- `prices`: the dated price table, machine types, Dataflow's defaults and Earth Engine's quotas.
- `measured`: the measured throughputs, record sizes and utilizations, with their files and dates.
- `plan`: the arithmetic, pure functions and dataclasses (`Plan.to_json()`).
- `report`: a plan as lines to print.

No Beam, no TensorFlow, no I/O: `pipelines/plan.py` counts a job's work and calls these.
"""

from transforms.planning.errors import PlanError
from transforms.planning.plan import (
    Compute,
    Cost,
    Plan,
    Requests,
    Work,
    choose_workers,
    ee_rate,
    extraction_work,
    local_seconds,
    make_plan,
    plan_compute,
    plan_cost,
    prediction_work,
    quota_seconds,
    share_of,
)
from transforms.planning.prices import PRICES, Machine, PriceTable, machine
from transforms.planning.report import plan_lines

__all__ = [
    "PRICES",
    "Compute",
    "Cost",
    "Machine",
    "Plan",
    "PlanError",
    "PriceTable",
    "Requests",
    "Work",
    "choose_workers",
    "ee_rate",
    "extraction_work",
    "local_seconds",
    "machine",
    "make_plan",
    "plan_compute",
    "plan_cost",
    "plan_lines",
    "prediction_work",
    "quota_seconds",
    "share_of",
]
