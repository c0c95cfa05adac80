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
