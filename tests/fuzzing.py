"""Shared settings for the fuzz tests (``@pytest.mark.fuzz``).

``make test`` runs each with a small, time-bounded number of examples; ``make fuzz``
sets ``HUB_FUZZ_EXAMPLES`` (default 20,000) for a long run. Every crash a fuzz run
finds becomes an explicit regression test next to the fuzz test that found it.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FUZZ_EXAMPLES = int(os.environ.get("HUB_FUZZ_EXAMPLES", "300"))
LONG_RUN = "HUB_FUZZ_EXAMPLES" in os.environ

fuzz_settings = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=not LONG_RUN,  # the suite is reproducible; a long run explores
    database=None,
)
