"""The `safeguard` command as an operator uses it: real subprocesses, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.storage.sqlite import DB_NAME
from tests.conftest import TEST_PASSPHRASE


def safeguard(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SAFEGUARD_")}
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env=base,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


# The terminal chat, scripted: numbers press the listed buttons, other lines are typed words.
CHAT_SCRIPT = "\n".join(
    [
        "1",  # It's about me or a friend
        "my coach keeps messaging me at night canary-chat-81",
        "1",  # Who: Me
        "14",  # age typed as a number
        "yesterday",  # when
        "Dewsbury",  # where
        "2",  # involved: Skip (its buttons: 1 Back, 2 Skip, 3 Start again, 4 Leave now)
        "no",  # danger now
        "yes",  # team can reply
        "nothing else",
        "1",  # Send
    ]
)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def test_help_lists_the_contract_commands(workdir: Path) -> None:
    result = safeguard("--help", cwd=workdir)
    assert result.returncode == 0
    for command in ("run", "chat", "keys", "reports"):
        assert command in result.stdout
    assert safeguard("keys", "init", "--help", cwd=workdir).returncode == 0
    assert safeguard("reports", "show", "--help", cwd=workdir).returncode == 0


def test_chat_makes_demo_keys_and_a_sealed_report_staff_can_read(workdir: Path) -> None:
    result = safeguard("chat", cwd=workdir, stdin=CHAT_SCRIPT + "\n")
    assert result.returncode == 0, result.stderr
    assert "demo keys" in result.stdout
    assert "Your reference code is" in result.stdout
    data = workdir / "data"
    assert b"canary-chat-81" not in (data / DB_NAME).read_bytes()

    listed = safeguard(
        "reports", "list", "--json", cwd=workdir, env={"SAFEGUARD_KEY_PASSPHRASE": "demo"}
    )
    assert listed.returncode == 0, listed.stderr
    (case,) = json.loads(listed.stdout)
    shown = safeguard(
        "reports",
        "show",
        case["reference"],
        cwd=workdir,
        env={"SAFEGUARD_KEY_PASSPHRASE": "demo"},
    )
    assert shown.returncode == 0, shown.stderr
    assert "canary-chat-81" in shown.stdout
    assert "Age: 14 to 15 (typed: 14)" in shown.stdout and "Where: Dewsbury" in shown.stdout
    assert "Others involved: (skipped)" in shown.stdout

    refused = safeguard("run", cwd=workdir, env={"SAFEGUARD_TELEGRAM__TOKEN": "1:x"})
    assert refused.returncode == 2 and "demo keys" in refused.stderr


def test_chat_danger_phrase_is_saved_for_the_staff_chat(workdir: Path) -> None:
    result = safeguard("chat", cwd=workdir, stdin="please help hes outside my house rn\n")
    assert result.returncode == 0, result.stderr
    assert "999" in result.stdout
    assert "Staff alert saved" in result.stdout

    queue = safeguard("queue", "--json", cwd=workdir)
    assert queue.returncode == 0, queue.stderr
    (case,) = json.loads(queue.stdout)
    assert case["level"] == "immediate" and case["unacknowledged_alerts"] == 1
    assert case["reference"] in safeguard("queue", cwd=workdir).stdout

    # No `safeguard run` has delivered anything: the health check says so by exit status.
    health = safeguard("health", cwd=workdir)
    assert health.returncode == 1
    assert "never run" in json.loads(health.stdout)["problems"][0]


def test_keys_init_then_wrong_passphrase_is_a_clean_error(workdir: Path) -> None:
    env = {"SAFEGUARD_KEY_PASSPHRASE": TEST_PASSPHRASE, "SAFEGUARD_STORAGE__DATA_DIR": "store"}
    created = safeguard("keys", "init", cwd=workdir, env=env)
    assert created.returncode == 0, created.stderr
    assert "fingerprint" in created.stdout
    assert TEST_PASSPHRASE not in created.stdout + created.stderr
    again = safeguard("keys", "init", cwd=workdir, env=env)
    assert again.returncode == 2 and "Traceback" not in again.stderr

    wrong = {**env, "SAFEGUARD_KEY_PASSPHRASE": "not it"}
    result = safeguard("reports", "list", cwd=workdir, env=wrong)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "not it" not in result.stderr


def test_run_without_token_or_staff_chat_says_what_is_missing(workdir: Path) -> None:
    env = {"SAFEGUARD_KEY_PASSPHRASE": TEST_PASSPHRASE}
    assert safeguard("keys", "init", cwd=workdir, env=env).returncode == 0
    no_token = safeguard("run", cwd=workdir, env={"SAFEGUARD_STAFF__CHAT_ID": "-100"})
    assert no_token.returncode == 2 and "token" in no_token.stderr
    no_staff = safeguard("run", cwd=workdir, env={"SAFEGUARD_TELEGRAM__TOKEN": "1:x"})
    assert no_staff.returncode == 2 and "staff.chat_id" in no_staff.stderr


def test_config_file_and_environment_override(workdir: Path) -> None:
    config = workdir / "custom.toml"
    config.write_text('[storage]\ndata_dir = "from-file"\n[staff]\nchat_id = "not a number"\n')
    bad = safeguard(
        "--config", str(config), "keys", "init", cwd=workdir, env={"SAFEGUARD_KEY_PASSPHRASE": "x"}
    )
    assert bad.returncode == 2 and "staff.chat_id" in bad.stderr
    config.write_text('[storage]\ndata_dir = "from-file"\n')
    made = safeguard(
        "--config", str(config), "keys", "init", cwd=workdir, env={"SAFEGUARD_KEY_PASSPHRASE": "x"}
    )
    assert made.returncode == 0 and (workdir / "from-file" / "keys").is_dir()
    env_wins = safeguard(
        "keys",
        "init",
        cwd=workdir,
        env={
            "SAFEGUARD_CONFIG": str(config),
            "SAFEGUARD_STORAGE__DATA_DIR": "from-env",
            "SAFEGUARD_KEY_PASSPHRASE": "x",
        },
    )
    assert env_wins.returncode == 0 and (workdir / "from-env" / "keys").is_dir()


def test_nlu_evaluate_scores_a_test_file_and_lists_its_errors(workdir: Path) -> None:
    # Given a tiny labelled set with one urgent message and one everyday message
    test_file = workdir / "tiny.yml"
    test_file.write_text(
        'version: "3.1"\n'
        "nlu:\n"
        "- intent: immediate_danger\n"
        "  examples: |\n"
        "    - he is outside my house right now and says he will hurt me\n"
        "- intent: out_of_scope\n"
        "  examples: |\n"
        "    - what time does the chippy on the high street shut tonight\n",
        encoding="utf-8",
    )
    # When it is evaluated with --errors
    result = safeguard(
        "nlu", "evaluate", "--test", str(test_file), "--errors",
        "--matrix", str(workdir / "m.png"), cwd=workdir,
    )  # fmt: skip
    # Then the urgent one is escalated, the everyday one is not, and both lists are printed
    assert result.returncode == 0, result.stderr
    assert "urgent recall            1.000 (1/1 escalated" in result.stdout
    assert "false-escalation rate    0.000 (0/1 everyday messages)" in result.stdout
    assert "missed (0):" in result.stdout and "false alarms (0):" in result.stdout
    assert (workdir / "m.png").stat().st_size > 0
