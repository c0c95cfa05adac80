"""User errors: reported as one line and a non-zero exit, never as a traceback."""


class ConfigError(ValueError):
    """A config value that cannot run; the message names the key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={as_typed(value)}: {allowed}")


def as_typed(value: object) -> str:
    """The value as it is typed in an override: `true`, `null`, `'abc'`, `0.1`."""
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else repr(value)


def short_reason(error: BaseException | str, limit: int = 200) -> str:
    """The root cause on one line, cut at a word boundary (never mid-word)."""
    if isinstance(error, BaseException):
        while error.__cause__ is not None:
            error = error.__cause__
        text = f"{type(error).__name__}: {error}"
    else:
        text = error
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."
