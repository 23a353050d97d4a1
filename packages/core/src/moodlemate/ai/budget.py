"""A cost ceiling per GPT instance, checked before each call is sent.

The check reads the ledger's known cost: once it has reached the ceiling, the next call raises
:class:`~moodlemate.ai.errors.BudgetExceededError` and nothing goes to the server. The call
that crosses the ceiling completes (its cost is only known once it returns), and calls
already in flight on other threads complete too, so the overshoot is bounded by one call per
thread. Calls whose cost is unknown (no price, no cost in the response) add nothing to the
spent amount: a budget cannot see them, and a warning says so.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from moodlemate.ai.errors import BudgetExceededError, ValidationError

__all__ = ["check_budget", "to_budget"]


def to_budget(value: object) -> Decimal | None:
    """A budget in US dollars as Decimal; None means no ceiling. Floats go through ``str`` so
    ``0.1`` means ten cents, not its binary approximation."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
        raise ValidationError(
            f"budget must be a Decimal, int, float, str or None, not {type(value).__name__}"
        )
    try:
        amount = Decimal(str(value)) if isinstance(value, float | str) else Decimal(value)
    except InvalidOperation:
        raise ValidationError(f"budget must be a number of US dollars, got {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValidationError(f"budget must be a finite amount of at least 0, got {value!r}")
    return amount


def check_budget(spent: Decimal, budget: Decimal | None) -> None:
    if budget is not None and spent >= budget:
        raise BudgetExceededError(
            f"budget of ${budget} reached (${spent} spent): call not sent; "
            "raise GPT.budget, set it to None, or reset GPT.ledger"
        )
