"""Site settings the integration tests run the service with."""

from __future__ import annotations

from susee.config import DatabaseTarget, Settings


def site_settings(target: DatabaseTarget, job_id: str, devices: list[dict], **extra) -> Settings:
    """Settings for a run at 1 s sampling into the test's own MariaDB database."""
    return Settings(
        job_id=job_id,
        sample_time=1,
        database={"url": f"mysql://{target.user}@{target.host}:{target.port}/{target.database}"},
        writer={"batch_age": 0.2},
        devices=devices,
        **extra,
    )
