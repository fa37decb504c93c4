"""Building blocks shared by every settings model: strict models and durations."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

from authz.durations import parse_duration


class StrictModel(BaseModel):
    """Unknown keys are errors; validated settings never change after load."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '30s'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    seconds = parse_duration(value)
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


# A duration in seconds, written as a number of seconds or a Go-style string ("150ms", "1h").
Duration = Annotated[float, BeforeValidator(_seconds)]
