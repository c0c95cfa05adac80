"""Study storage URLs: a missing database driver is one line before any trial; passwords are masked
in what runs write and print (the servers themselves are in tests/test_cluster.py)."""

import logging

from expframe.record.redact import MaskPasswords, mask_run_folder, masked
from tests.conftest import run_cli_in_process


def test_a_storage_whose_driver_is_missing_is_one_line_naming_the_package(tmp_path):
    url = "postgresql+psycopg2://student:hunter2@127.0.0.1:9/expframe"
    code, err = run_cli_in_process(
        "-m", "hparams_search=optuna_tpe", f"hydra.sweeper.storage={url}", f"hydra.sweep.dir={tmp_path / 's'}"
    )
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith("error: hydra.sweeper.storage=") and "pip install psycopg2-binary" in lines[0]
    assert "hunter2" not in err and "student:***@" in err
    assert not list(tmp_path.glob("s/*/metrics.json"))


def test_an_unknown_database_is_one_line(tmp_path):
    code, err = run_cli_in_process(
        "-m", "hparams_search=optuna_tpe", "hydra.sweeper.storage=nosuchdb://x/y", f"hydra.sweep.dir={tmp_path / 's'}"
    )
    assert code == 1 and "hydra.sweeper.storage='nosuchdb://x/y': is not a database URL" in err


def test_passwords_are_masked_in_urls_and_nothing_else_changes():
    assert masked("storage: postgresql://u:p%40ss@db:5432/x") == "storage: postgresql://u:***@db:5432/x"
    assert (
        masked("- hydra.sweeper.storage=mysql+pymysql://root:pw@h/d")
        == "- hydra.sweeper.storage=mysql+pymysql://root:***@h/d"
    )
    for kept in ("sqlite:///multirun/optuna/a.db", "postgresql://u@db/x", "${oc.env:EXPFRAME_STORAGE}", "a:b@c"):
        assert masked(kept) == kept


def test_a_run_folder_is_rewritten_only_where_a_password_is(tmp_path):
    hydra = tmp_path / "run" / ".hydra"
    hydra.mkdir(parents=True)
    (hydra / "hydra.yaml").write_text("sweeper:\n  storage: postgresql://u:secret@db/x\n")
    (hydra / "config.yaml").write_text("seed: 0\n")
    before = (hydra / "config.yaml").stat().st_mtime_ns
    (tmp_path / "multirun.yaml").write_text("storage: postgresql://u:secret@db/x\n")
    mask_run_folder(tmp_path / "run", tmp_path)
    assert (hydra / "hydra.yaml").read_text() == "sweeper:\n  storage: postgresql://u:***@db/x\n"
    assert (tmp_path / "multirun.yaml").read_text() == "storage: postgresql://u:***@db/x\n"
    assert (hydra / "config.yaml").stat().st_mtime_ns == before
    assert sorted(p.name for p in hydra.iterdir()) == ["config.yaml", "hydra.yaml"], "no temporary file left"


def test_log_records_are_masked(caplog):
    logger = logging.getLogger("tests.storage")
    logger.addFilter(MaskPasswords())
    with caplog.at_level(logging.INFO, logger="tests.storage"):
        logger.info("Storage: %s", "postgresql://u:secret@db/x")
    assert caplog.messages == ["Storage: postgresql://u:***@db/x"]
