"""How the report writes values: a config value as text, a number to significant digits, mean ± sd.
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


# significant digits of a value in a table; a spread gets two
DIGITS = 4
SPREAD_DIGITS = 2


def number(value: float, digits: int = DIGITS, sign: bool = False) -> str:
    """One value to `digits` significant digits, with thousands separators (12,345; 0.07431; 0.912,
    trailing zeros dropped); each value on its own, so one large value never sets the decimals of a
    whole column. Under 0.001 (kWh of a small run): exponent form (4.92e-05). `sign`: a leading +
    on positive values."""
    if value != value:  # NaN: no figure (diverged, failed or left out)
        return "–"
    plus = "+" if sign else ""
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if magnitude < -3:
        return f"{value:{plus}.{digits - 1}e}"
    if float(value).is_integer() and magnitude >= digits - 1:
        return f"{value:{plus},.0f}"
    places = max(0, digits - 1 - magnitude)
    text = f"{value:{plus},.{places}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def plus_minus(mean: float, std: float) -> str:
    """`mean ± sd`; a single run (or identical repeats) has no spread to show."""
    if mean != mean:
        return "–"
    return number(mean) if std == 0 or std != std else f"{number(mean)} ± {number(std, SPREAD_DIGITS)}"
