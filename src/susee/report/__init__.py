"""``susee report``: consumption, demand peaks, tariff bands and completeness from the Q15 rollups.

One module per concept: ``intervals`` (local-time intervals), ``tariffs``
(band calendars), ``groups`` (virtual meters and tags), ``reader`` (Q15 rows
from the database), ``energy`` (counter arithmetic), ``aggregate`` (figures
per interval and band), ``outputs`` (CSV, XLSX, PNG), ``command`` (the CLI
command). Only ``groups`` is imported by the settings (to check expressions).
"""
