"""The one CLI style of the four services (shared.cli): usage and config errors exit 2 with one line on stderr,
answers go to stdout, logs to stderr, --config before or after the command, each default command kept."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

from shared.config import load_settings
from shared.paths import Paths
from tests.conftest import ROOT, write_project

SERVICES = ["prep", "trainer", "inference", "monitor"]

# A valid command line for each service, before --config is added: the default command (left out) and a named one.
VALID_ARGV = {
    "prep": [[], ["verify"]],
    "trainer": [["status", "some-id"], ["push", "--reason", "r"]],
    "inference": [[], ["status"], ["promote", "v2"]],
    "monitor": [["--once"], ["lineage", "some-id"], ["replay", "--dataset", "natural"]],
}
CASES = [(name, argv) for name in SERVICES for argv in VALID_ARGV[name]]


def cli_main(name: str):
    return importlib.import_module(f"services.{name}.__main__").main


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    assert "Traceback" not in text
    return lines[0]


@pytest.mark.parametrize(("name", "argv"), CASES, ids=[f"{n}-{' '.join(a) or 'default'}" for n, a in CASES])
@pytest.mark.parametrize("where", ["after", "before"])
def test_a_missing_config_file_exits_2_with_one_line_naming_it(name, argv, where, tmp_path, capsys):
    missing = str(tmp_path / "nowhere" / "config.yaml")
    full = [*argv, "--config", missing] if where == "after" else ["--config", missing, *argv]
    assert cli_main(name)(full) == 2
    out, err = capsys.readouterr()
    line = one_line(err)
    assert line.startswith("config error: ") and missing in line and "not found" in line
    assert out == ""


@pytest.mark.parametrize("name", SERVICES)
def test_the_config_path_falls_back_to_the_environment(name, tmp_path, capsys, monkeypatch):
    missing = str(tmp_path / "from-env.yaml")
    monkeypatch.setenv("CLOCKWORK_CONFIG", missing)
    assert cli_main(name)(VALID_ARGV[name][-1]) == 2
    assert missing in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("name", SERVICES)
def test_an_invalid_config_names_file_key_and_reason(name, tmp_path, capsys):
    cfg = write_project(tmp_path / "project", **{"training.n_estimatorz": 50})
    assert cli_main(name)([*VALID_ARGV[name][-1], "--config", str(cfg)]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(cfg) in line and "training.n_estimatorz" in line and "unknown key" in line


@pytest.mark.parametrize("name", SERVICES)
def test_an_unknown_command_exits_2_with_one_line_naming_it(name, tmp_path, capsys):
    assert cli_main(name)(["frobnicate", "--config", str(tmp_path / "config.yaml")]) == 2
    out, err = capsys.readouterr()
    line = one_line(err)
    assert line.startswith("usage error: ") and f"services.{name}" in line and "'frobnicate'" in line
    assert out == ""


@pytest.mark.parametrize(
    ("name", "argv", "problem"),
    [
        ("trainer", [], "required: command"),
        ("trainer", ["status"], "required: id"),
        ("trainer", ["push"], "required: --reason"),
        ("inference", ["promote"], "required: version"),
        ("inference", ["status", "v3"], "unrecognized arguments: v3"),
        ("inference", ["rollback", "--instance-id", "x"], "unrecognized arguments: --instance-id x"),
        ("monitor", ["lineage"], "required: request_id"),
        ("monitor", ["--twice"], "unrecognized arguments: --twice"),
        ("prep", ["verify", "--fast"], "unrecognized arguments: --fast"),
    ],
)
def test_a_wrong_command_line_exits_2_with_one_line(name, argv, problem, capsys):
    assert cli_main(name)(argv) == 2
    assert problem in one_line(capsys.readouterr().err)


def test_help_prints_the_commands_on_stdout_and_exits_0(capsys):
    assert cli_main("monitor")(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("run", "replay", "lineage", "--config"))


@pytest.mark.parametrize(
    ("argv", "command", "config", "extra"),
    [
        (["--once"], "run", None, {"once": True}),
        ([], "run", None, {"once": False}),
        (["--config", "a.yaml", "--once"], "run", "a.yaml", {"once": True}),
        (["--once", "--config", "a.yaml"], "run", "a.yaml", {"once": True}),
        (["--config=a.yaml"], "run", "a.yaml", {"once": False}),
        (["--config", "a.yaml", "lineage", "r1"], "lineage", "a.yaml", {"request_id": "r1"}),
        (["lineage", "r1", "--config", "b.yaml"], "lineage", "b.yaml", {"request_id": "r1"}),
        (["--config", "a.yaml", "lineage", "--config", "b.yaml", "r1"], "lineage", "b.yaml", {"request_id": "r1"}),
    ],
)
def test_the_default_command_and_config_are_found_wherever_they_stand(argv, command, config, extra):
    from services.monitor.__main__ import build_cli

    args = build_cli().parse(argv)
    assert (args.command, args.config) == (command, config)
    assert {k: getattr(args, k) for k in extra} == extra


def test_inference_default_is_serve_with_its_options():
    from services.inference.__main__ import build_cli

    args = build_cli().parse(["--config", "c.yaml", "--instance-id", "smoke"])
    assert (args.command, args.config, args.instance_id) == ("serve", "c.yaml", "smoke")


# --- answers on stdout, logs on stderr ------------------------------------------------------------------------
def test_inference_status_answers_on_stdout(prepped, capsys):
    assert cli_main("inference")(["status", "--config", str(prepped.config_path)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[:2] == [f"pinned: {prepped.deployment.model_version} in {prepped.config_path}",
                                    "registry: (empty)"]
    assert "pinned:" not in err


def test_prep_verify_answers_problems_on_stdout_and_logs_the_count_on_stderr(prepped, capsys):
    paths = Paths.from_settings(prepped)
    assert cli_main("prep")(["verify", "--config", str(prepped.config_path)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "verify: 0 problem(s)" in err
    paths.train_file(prepped.data.versions.split).write_text("damaged\n")
    assert cli_main("prep")(["--config", str(prepped.config_path), "verify"]) == 1
    out, err = capsys.readouterr()
    assert one_line(out).startswith(f"mismatch: data/processed/{prepped.data.versions.split}/train.csv")
    assert "ERROR [prep] services.prep: verify: 1 problem(s)" in err and "mismatch" not in err


def test_a_failed_command_logs_one_line_on_stderr_and_exits_1(prepped, capsys):
    assert cli_main("monitor")(["lineage", "no-such-request", "--config", str(prepped.config_path)]) == 1
    out, err = capsys.readouterr()
    line = one_line(err)
    assert "ERROR [monitor]" in line and "monitor lineage failed" in line and "no-such-request" in line
    assert out == ""


def test_redis_unreachable_is_one_line_and_exit_1(prepped, capsys, monkeypatch):
    monkeypatch.setenv("CLOCKWORK_REDIS_URL", "redis://:secret@127.0.0.1:1/0")
    assert cli_main("trainer")(["status", "job-1", "--config", str(prepped.config_path)]) == 1
    out, err = capsys.readouterr()
    line = one_line(err)
    assert "trainer status failed: Redis at redis://:***@127.0.0.1:1/0" in line and "secret" not in line
    assert out == ""


def test_streams_of_a_real_process(prepped):
    """As a user runs it: the answer alone on stdout (fit for a pipe), every log line on stderr."""
    cfg = str(prepped.config_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOCKWORK_")}
    status = subprocess.run([sys.executable, "-m", "services.inference", "status", "--config", cfg], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("pinned: ") and status.stderr == ""
    promote = subprocess.run([sys.executable, "-m", "services.inference", "promote", "v9", "--config", cfg],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert promote.returncode == 1 and promote.stdout == ""
    assert "ERROR [inference]" in one_line(promote.stderr) and "v9" in promote.stderr
    assert load_settings(cfg, env={}).deployment.model_version == prepped.deployment.model_version
