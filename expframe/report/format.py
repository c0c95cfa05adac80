"""How the report writes values: a config value as text, one number format per column, mean ± sd.
Shared by the tables (summary.py) and the ablation statistics (statistics.py)."""

import math

ABSENT = object()


def as_text(value: object) -> str:
    """`null`, `true`, `0.01`, `adam`; `–` for a key this run's config does not have."""
    if value is ABSENT:
        return "–"
    if value is None or (isinstance(value, float) and value != value):
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def number_format(values) -> str:
    """One format per column: fixed point with enough decimals for 3 significant digits of its
    largest value; 3 significant digits in exponent form for columns of tiny values (kWh per run)."""
    finite = [abs(v) for v in values if v == v and v not in (float("inf"), float("-inf"))]
    if finite and all(float(v).is_integer() for v in finite):
        return ".0f"
    largest = max(finite, default=0.0)
    places = 0 if largest == 0 else max(0, 2 - math.floor(math.log10(largest)))
    return ".3g" if places > 6 else f".{places}f"


def plus_minus(mean: float, std: float, spec: str) -> str:
    """A single run (or identical repeats) has no spread to show."""
    if mean != mean:  # NaN: no figure (diverged or failed)
        return "–"
    return f"{mean:{spec}}" if std == 0 else f"{mean:{spec}} ± {std:{spec}}"
