"""The echo job as data: its args (it returns them; it fails or takes time on request, for demos
and for showing `retries` and overlap at work)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EchoInput(BaseModel):
    """Args of the `echo` job: it returns them; it can fail or take time on purpose (demos)."""

    model_config = ConfigDict(extra="allow")

    fail: bool = False  # fail for good (not retried)
    fail_attempts: int = Field(0, ge=0)  # fail the first N attempts: `retries` at work
    sleep_s: float = Field(0.0, ge=0)
