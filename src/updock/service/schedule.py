"""When `updock serve` runs: a cron expression (croniter), in local time, plus random jitter.

The jitter (`[serve] jitter`, seconds) spreads hosts that share a schedule over a window, as
the timer's `RandomizedDelaySec` does: each run is at a random moment in `[cron time, cron time
+ jitter)`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime

#: The schedule unless the user gives one: daily at midnight, spread over 15 minutes (the
#: timer's `OnCalendar=daily` and `RandomizedDelaySec=900`).
DEFAULT_SCHEDULE = "@daily"
DEFAULT_JITTER = 900.0

#: A schedule of this word runs nothing on its own: only `POST /v1/update` starts runs.
OFF = "off"


class Schedule:
    """A cron expression and a jitter.

    Args:
        expression: five cron fields (`0 4 * * *`) or a nickname (`@daily`, `@hourly`).
        jitter: seconds; each run is delayed by a random amount below it.
        rand: uniform random numbers in [0, 1) (for tests).

    Raises:
        ValueError: the expression is not one croniter takes, or the jitter is negative.
    """

    def __init__(
        self, expression: str, jitter: float = 0.0, rand: Callable[[], float] = random.random
    ) -> None:
        from croniter import croniter

        if not croniter.is_valid(expression):
            raise ValueError(f"{expression!r} is no cron expression (such as '0 4 * * *')")
        if not 0 <= jitter < float("inf"):
            raise ValueError(f"jitter {jitter!r} is not a number of seconds >= 0")
        self.expression = expression
        self.jitter = jitter
        self._rand = rand

    def next_after(self, now: float) -> float:
        """When the next run after `now` is due (seconds since the epoch), jitter included."""
        from croniter import croniter

        local = datetime.fromtimestamp(now).astimezone()
        due = float(croniter(self.expression, local).get_next(float))
        return due + self.jitter * self._rand()
