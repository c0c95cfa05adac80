"""Command-line arguments of the console scripts, with argparse's errors on one line."""

import argparse


class OneLineParser(argparse.ArgumentParser):
    """argparse prints its usage block, then the error: five lines or more for one mistake. Here the
    mistake is one line (and `--help` shows the usage), with argparse's exit status 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
    return value
