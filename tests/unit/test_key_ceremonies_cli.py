"""`safeguard keys ...` and `reports show --as` as an operator runs them: real subprocesses,
real key files with the default Argon2id cost, passphrases from the environment.

Every refusal is exit status 2 with one line on stderr, never a traceback, and no passphrase
is ever printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.crypto import BotCrypto, StaffKey
from bot.storage.lock import data_dir_lock
from tests.conftest import signed_store

PRIYA, SAM, JO = "Priya Shah", "Sam", "Jo"
PASSPHRASES = {
    PRIYA: "priya-cli-passphrase-5d1e",
    SAM: "sam-cli-passphrase-77aa",
    JO: "jo-cli-passphrase-0c3f",
}
REFERENCE = "K7FQ-3QXM-9PTA"
CANARY = "canary-cli-4471-blue-kite"


def safeguard(
    workdir: Path,
    *args: str,
    key: str | None = None,
    new_key: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `safeguard ARGS` in workdir; `key`/`new_key` are whose passphrase goes into
    $SAFEGUARD_KEY_PASSPHRASE / $SAFEGUARD_NEW_KEY_PASSPHRASE (a name, or a literal)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEGUARD_")}
    if key is not None:
        env["SAFEGUARD_KEY_PASSPHRASE"] = PASSPHRASES.get(key, key)
    if new_key is not None:
        env["SAFEGUARD_NEW_KEY_PASSPHRASE"] = PASSPHRASES.get(new_key, new_key)
    result = subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    for secret in PASSPHRASES.values():
        assert secret not in result.stdout + result.stderr, args
    return result


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit status 2 and one line on stderr holding `words`; no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def staff_files(workdir: Path) -> dict[str, bytes]:
    staff = workdir / "data" / "keys" / "staff"
    return {p.name: p.read_bytes() for p in sorted(staff.iterdir())}


def store_case(workdir: Path, ref: str = REFERENCE) -> None:
    """A submitted report, sealed by the bot to whoever holds a key now."""

    async def store() -> None:
        data_dir = workdir / "data"
        bot = BotCrypto.load(data_dir)
        content = {"first_messages": [CANARY], "answers": []}
        async with signed_store(data_dir) as db, db.transaction() as tx:
            await tx.ensure_case(ref, "reporter-pseudonym", None)
            await tx.add_record(ref, "report", bot.seal_report(ref, json.dumps(content).encode()))

    asyncio.run(store())


def key_list(workdir: Path) -> dict[str, dict[str, object]]:
    listed = json.loads(ok(safeguard(workdir, "keys", "list", "--json")))
    return {k["name"]: k for k in listed}


def init_priya(path: Path) -> Path:
    out = ok(safeguard(path, "keys", "init", "--name", PRIYA, key=PRIYA))
    assert "Priya Shah" in out and "fingerprint" in out
    return path


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A working directory where Priya Shah ran `safeguard keys init`."""
    return init_priya(tmp_path)


@pytest.fixture(scope="module")
def priya_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same, shared by tests whose commands are all refused (they change nothing)."""
    return init_priya(tmp_path_factory.mktemp("priya"))


def test_init_makes_the_first_members_key_and_refuses_to_run_twice(workdir: Path) -> None:
    """Given `keys init --name "Priya Shah"` was run
    Then her key files are in data/keys/staff and the fingerprint printed is theirs; a second
    init is refused without touching them."""
    files = staff_files(workdir)
    assert sorted(files) == ["priya-shah.key.json", "priya-shah.public.json"]
    fingerprint = json.loads(files["priya-shah.public.json"])["fingerprint"]
    assert key_list(workdir)[PRIYA]["fingerprint"] == fingerprint

    refused(safeguard(workdir, "keys", "init", "--name", SAM, key=SAM), "already exist")
    assert staff_files(workdir) == files


def test_staff_added_with_and_without_by_and_sharing(workdir: Path) -> None:
    """Given a report stored while only Priya held a key
    When Sam is added without --by and Jo with --by "Priya Shah"
    Then Jo reads the report at once, Sam only after `keys share Sam --by "Priya Shah"`;
    `keys list --json` counts the records each key opens; `reports show` without --as names
    the keys to choose from."""
    store_case(workdir)

    added = ok(safeguard(workdir, "keys", "add-staff", SAM, new_key=SAM))
    assert "Added Sam" in added and "from now on" in added
    shared = ok(safeguard(workdir, "keys", "add-staff", JO, "--by", PRIYA, key=PRIYA, new_key=JO))
    assert "Priya Shah shared 1 records with Jo" in shared

    listed = key_list(workdir)
    assert {name: k["records"] for name, k in listed.items()} == {PRIYA: 1, SAM: 0, JO: 1}
    assert all(k["private_key_here"] for k in listed.values())
    assert len({k["fingerprint"] for k in listed.values()}) == 3

    jo = ok(safeguard(workdir, "reports", "show", REFERENCE, "--as", JO, key=JO))
    assert CANARY in jo
    sam = ok(safeguard(workdir, "reports", "show", REFERENCE, "--as", SAM, key=SAM))
    assert CANARY not in sam and "not sealed to your key" in sam

    shared = ok(safeguard(workdir, "keys", "share", SAM, "--by", PRIYA, key=PRIYA))
    assert "Priya Shah shared 1 records with Sam" in shared
    assert CANARY in ok(safeguard(workdir, "reports", "show", REFERENCE, "--as", SAM, key=SAM))

    line = refused(safeguard(workdir, "reports", "show", REFERENCE, key=PRIYA), "--as")
    for name in (PRIYA, SAM, JO):
        assert name in line


def test_list_and_export_public(workdir: Path) -> None:
    """Given Sam added with only $SAFEGUARD_KEY_PASSPHRASE set (his passphrase)
    Then his key unlocks with it; `keys list` shows each name and fingerprint on a line, and
    `keys export-public` prints valid JSON with the public keys and nothing private."""
    ok(safeguard(workdir, "keys", "add-staff", SAM, key=SAM))
    assert StaffKey.unlock(workdir / "data", SAM, PASSPHRASES[SAM]).name == SAM
    listed = key_list(workdir)

    text = ok(safeguard(workdir, "keys", "list"))
    exported = json.loads(ok(safeguard(workdir, "keys", "export-public")))

    lines = text.strip().splitlines()
    assert len(lines) == 2
    for name, line in zip(sorted(listed), sorted(lines), strict=True):
        assert line.startswith(name) and str(listed[name]["fingerprint"]) in line
    assert {k["name"]: k["fingerprint"] for k in exported} == {
        name: k["fingerprint"] for name, k in listed.items()
    }
    for doc in exported:
        assert doc["kind"] == "safeguard-staff-public"
        for private in ("ciphertext", "salt", "kdf", "nonce", "private_key"):
            assert private not in doc
    for private in ("ciphertext", "salt"):
        assert f'"{private}"' not in text + json.dumps(exported)


def test_remove_staff(workdir: Path) -> None:
    """Given a report only Priya can open, and Sam added later without a share
    When Priya is removed
    Then it is refused (--force named) until Jo has copies; removing the last key is refused
    even with --force; after Priya leaves, Jo still reads the report and Priya's files are gone."""
    store_case(workdir)
    ok(safeguard(workdir, "keys", "add-staff", SAM, new_key=SAM))

    refused(safeguard(workdir, "keys", "remove-staff", PRIYA), "1 records", "--force")
    removed = ok(safeguard(workdir, "keys", "remove-staff", SAM))
    assert "Removed Sam" in removed and "nothing was re-encrypted" in removed
    refused(safeguard(workdir, "keys", "remove-staff", PRIYA), "1 records")
    refused(safeguard(workdir, "keys", "remove-staff", PRIYA, "--force"), "last staff key")

    ok(safeguard(workdir, "keys", "add-staff", JO, "--by", PRIYA, key=PRIYA, new_key=JO))
    ok(safeguard(workdir, "keys", "remove-staff", PRIYA))

    assert sorted(staff_files(workdir)) == ["jo.key.json", "jo.public.json"]
    # One key left: no --as needed.
    assert CANARY in ok(safeguard(workdir, "reports", "show", REFERENCE, key=JO))


def test_rotate_a_members_key(workdir: Path) -> None:
    """Given Sam holding a copy of a report's key
    When `keys rotate --staff Sam` runs with his passphrase and a new one
    Then his fingerprint changes, his records moved to the new key, which the new passphrase
    unlocks and the old no longer does."""
    store_case(workdir)
    ok(safeguard(workdir, "keys", "add-staff", SAM, "--by", PRIYA, key=PRIYA, new_key=SAM))
    before = json.loads(staff_files(workdir)["sam.public.json"])["fingerprint"]

    out = ok(safeguard(workdir, "keys", "rotate", "--staff", SAM, key=SAM, new_key="sam-rotated"))

    after = json.loads(staff_files(workdir)["sam.public.json"])["fingerprint"]
    assert after != before
    assert f"fingerprint {after} (was {before}); 1 records moved" in out
    rotated = safeguard(workdir, "reports", "show", REFERENCE, "--as", SAM, key="sam-rotated")
    assert CANARY in ok(rotated)
    refused(safeguard(workdir, "reports", "show", REFERENCE, "--as", SAM, key=SAM))


def test_rotate_the_bots_secrets(workdir: Path) -> None:
    """Given keys
    When `keys rotate` runs while the data dir is locked (the bot running)
    Then it is refused and nothing changes; once the bot is stopped it makes generation 2."""
    secrets_file = workdir / "data" / "keys" / "bot_secrets.json"
    before = secrets_file.read_bytes()

    with data_dir_lock(workdir / "data", "running the bot"):
        refused(safeguard(workdir, "keys", "rotate"), "stop")
    assert secrets_file.read_bytes() == before

    out = ok(safeguard(workdir, "keys", "rotate"))
    assert "generation 2" in out
    generations = json.loads(secrets_file.read_text())["generations"]
    assert [g["id"] for g in generations] == [1, 2]


@pytest.mark.parametrize(
    ("args", "key", "new_key", "words"),
    [
        (("keys", "add-staff", PRIYA), SAM, None, ("already has a staff key",)),
        (("keys", "add-staff", "../escape"), SAM, None, ("name",)),
        (("keys", "add-staff", SAM), None, None, ("passphrase",)),
        (("keys", "add-staff", SAM, "--by", PRIYA), PRIYA, None, ("passphrase for Sam",)),
        (("keys", "add-staff", SAM, "--by", PRIYA), "not Priya's", SAM, ("passphrase",)),
        (("keys", "share", SAM, "--by", PRIYA), PRIYA, None, ("no staff key named 'Sam'",)),
        (("keys", "remove-staff", "Nobody"), None, None, ("Nobody",)),
        (("keys", "rotate", "--staff", PRIYA), None, None, ("passphrase",)),
        (("keys", "rotate", "--staff", PRIYA), "not Priya's", "new one", ("passphrase",)),
        (("reports", "show", REFERENCE, "--as", "Nobody"), PRIYA, None, ("Nobody",)),
        (("reports", "show", REFERENCE, "--as", PRIYA), "wrong 12", None, ("passphrase",)),
        (("reports", "show", "not-a-code", "--as", PRIYA), PRIYA, None, ("reference",)),
    ],
)
def test_mistakes_are_one_line_errors(
    priya_only: Path,
    args: tuple[str, ...],
    key: str | None,
    new_key: str | None,
    words: tuple[str, ...],
) -> None:
    """Given Priya's key
    When a command is given a wrong name, a wrong or missing passphrase, or a bad reference
    Then it exits 2 with one line on stderr, no traceback, no passphrase echoed, and the key
    files are untouched."""
    before = staff_files(priya_only)

    line = refused(safeguard(priya_only, *args, key=key, new_key=new_key), *words)

    for given in (key, new_key):
        assert given is None or PASSPHRASES.get(given, given) not in line
    assert staff_files(priya_only) == before
