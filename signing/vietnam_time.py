"""Vietnam's civil time, in which the documents this service issues are dated (receipt slips,
dossier codes, labels): UTC+7 all year, with no daylight saving, so a fixed offset is exact.

Here, in the leaf package, so that ``signing`` and the layers above it share one definition."""

from __future__ import annotations

from datetime import timedelta, timezone

VIETNAM_TIME = timezone(timedelta(hours=7), "ICT")
