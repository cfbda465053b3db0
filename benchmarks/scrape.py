"""What the benchmarks and soaks read of a running server's ``/metrics``."""

from __future__ import annotations

from collections import Counter

import httpx
from prometheus_client.parser import text_string_to_metric_families


def requests_by_status(url: str, endpoints: tuple[str, ...]) -> Counter:
    """``hndsr_requests_total`` of ``endpoints`` on the server at ``url``, summed per status."""
    counts: Counter = Counter()
    text = httpx.get(f"{url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "hndsr_requests_total" and sample.labels.get("endpoint") in endpoints:
                counts[int(sample.labels["status"])] += int(sample.value)
    return counts


def active_requests(url: str) -> float:
    """``hndsr_active_requests`` of the server at ``url``."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "hndsr_active_requests")
