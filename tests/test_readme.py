"""Every command the README shows runs as written, shrunk to tiny sizes by overrides appended at the end."""

import re
import shlex

import pytest

from tests.conftest import ROOT, run_cli

BLOCKS = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
COMMANDS = [line.strip() for block in BLOCKS for line in block.splitlines() if line.strip().startswith("python ")]


def test_readme_shows_install_run_and_test():
    text = (ROOT / "README.md").read_text()
    assert '```bash\npip install -e ".[dev]"\npython train.py\n```' in text
    assert '```bash\npip install -e ".[dev]"\npytest\n```' in text
    assert len(COMMANDS) >= 5


def shrink(args: list[str], tmp_path, tiny_mnist_root) -> list[str]:
    if "--help" in args:
        return args
    extra = ["epochs=1"]
    if "-m" in args or "--multirun" in args:
        extra.append(f"hydra.sweep.dir={tmp_path / 'sweep'}")
    else:
        extra.append(f"hydra.run.dir={tmp_path / 'run'}")
    if "dataset=mnist" in args:
        extra += [f"dataset.root={tiny_mnist_root}", "dataset.download=false"]
    return args + extra


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(command, tmp_path, tiny_mnist_root):
    args = shlex.split(command)[1:]
    out = run_cli(*shrink(args, tmp_path, tiny_mnist_root))
    assert out.returncode == 0, f"{command}\n{out.stderr[-2000:]}"
    if "--help" in args:
        assert "dataset:" in out.stdout
    elif "-m" not in args:
        assert '"status": "ok"' in (tmp_path / "run" / "metrics.json").read_text()
