"""What a deployment costs: Vertex AI's dated price table and the monthly estimate shown before deploying."""

from __future__ import annotations

import dataclasses
from typing import Any

# Vertex AI Inference prices of custom-trained models on CPU machines, USD per node hour, region
# us-central1 (Iowa); other regions cost up to about a quarter more. Source:
# https://cloud.google.com/vertex-ai/pricing ("Prediction and explanation", custom-trained models),
# as published in June 2026. A deployed model is billed for each node hour whether or not it serves
# requests; prices change, so the estimate names this date. --hourly-price overrides the table.
PRICE_SOURCE = "https://cloud.google.com/vertex-ai/pricing"
PRICES_AS_OF = "2026-06"
PRICE_REGION = "us-central1"
HOURLY_USD: dict[str, float] = {
    "n1-standard-2": 0.1095,
    "n1-standard-4": 0.2190,
    "n1-standard-8": 0.4380,
    "n1-standard-16": 0.8760,
    "n1-standard-32": 1.7520,
    "n1-highmem-2": 0.1370,
    "n1-highmem-4": 0.2740,
    "n1-highmem-8": 0.5480,
    "n1-highmem-16": 1.0960,
}
HOURS_PER_MONTH = 24 * 30


@dataclasses.dataclass(frozen=True)
class CostEstimate:
    """What keeping a deployment running costs: hourly rate x 24 x 30 per node, min to max nodes."""

    machine_type: str
    hourly_usd: float | None
    min_replicas: int
    max_replicas: int
    source: str = f"{PRICE_SOURCE} ({PRICE_REGION}, as of {PRICES_AS_OF})"

    @property
    def monthly_usd(self) -> float | None:
        return (
            None
            if self.hourly_usd is None
            else round(self.hourly_usd * HOURS_PER_MONTH * self.min_replicas, 2)
        )

    @property
    def monthly_max_usd(self) -> float | None:
        return (
            None
            if self.hourly_usd is None
            else round(self.hourly_usd * HOURS_PER_MONTH * self.max_replicas, 2)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "machine_type": self.machine_type,
            "hourly_usd_per_node": self.hourly_usd,
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "hours_per_month": HOURS_PER_MONTH,
            "monthly_usd": self.monthly_usd,
            "monthly_usd_at_max_replicas": self.monthly_max_usd,
            "prices": self.source,
        }

    def describe(self) -> str:
        nodes = (
            f"{self.min_replicas}"
            if self.min_replicas == self.max_replicas
            else f"{self.min_replicas} to {self.max_replicas}"
        )
        if self.hourly_usd is None:
            return (
                f"{nodes} {self.machine_type} node(s) running around the clock; the price table has no rate for "
                f"{self.machine_type} (see {PRICE_SOURCE}, or pass --hourly-price USD)."
            )
        cost = f"about ${self.monthly_usd:,.2f} a month"
        if self.max_replicas != self.min_replicas:
            cost += f" (up to ${self.monthly_max_usd:,.2f} when scaled out)"
        return (
            f"{nodes} {self.machine_type} node(s) running around the clock: {cost} "
            f"(${self.hourly_usd:.4f} per node hour x 24 x 30; {self.source})."
        )


def estimate_cost(
    machine_type: str, min_replicas: int = 1, max_replicas: int = 1, hourly_usd: float | None = None
) -> CostEstimate:
    rate = hourly_usd if hourly_usd is not None else HOURLY_USD.get(machine_type)
    source = "--hourly-price" if hourly_usd is not None else CostEstimate.source
    return CostEstimate(machine_type, rate, min_replicas, max(min_replicas, max_replicas), source)
