"""`safeguard chat`: the reporting conversation in a terminal, with the same engine, safety rules,
store and on-call queue as the Telegram bot. Needs no token, so it is the embedded demo.

Buttons are shown numbered; type the number to press one, or type words as a reporter would.
"""

from __future__ import annotations

import asyncio
import html
import re
import sys
from collections.abc import Sequence
from typing import TextIO

from bot.config import Settings
from bot.crypto import create_keys, keys_exist
from bot.dialogue.engine import Button, Inbound, Reply
from bot.dialogue.service import Origin
from bot.runtime import open_services
from nlu.pipeline import model_path

# The terminal has one reporter; the id only feeds the keyed pseudonym, as a Telegram id would.
TERMINAL_REPORTER_ID = 0
DEMO_PASSPHRASE = "demo"
DEMO_STAFF = "demo"
DEMO_MARKER = "DEMO_KEYS"
_TAG = re.compile(r"<[^>]+>")


def html_to_text(text: str) -> str:
    return html.unescape(_TAG.sub("", text))


class TerminalMessenger:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.buttons: list[Button] = []
        self._next_id = 0

    async def send(self, reply: Reply) -> list[int]:
        self.out.write("\n" + html_to_text(reply.html).rstrip() + "\n")
        if reply.buttons:
            self.buttons = [b for row in reply.buttons for b in row]
            for number, button in enumerate(self.buttons, start=1):
                self.out.write(f"  [{number}] {button.label}\n")
        self.out.flush()
        self._next_id += 1
        return [self._next_id]

    async def remove_inbound(self) -> None:
        pass

    async def clear(self, message_ids: Sequence[int]) -> None:
        # ANSI: clear the screen and the scroll-back, the terminal's version of deleting messages.
        self.out.write("\x1b[2J\x1b[3J\x1b[H")
        self.buttons = []


def ensure_demo_keys(settings: Settings, out: TextIO) -> None:
    data_dir = settings.storage.data_dir
    if keys_exist(data_dir):
        return
    create_keys(data_dir, DEMO_STAFF, DEMO_PASSPHRASE)
    (data_dir / "keys" / DEMO_MARKER).write_text(
        "These keys were made by `safeguard chat` for a demo.\n"
        "Staff key 'demo', passphrase 'demo'.\n"
    )
    out.write(
        f"Demo set-up: created {data_dir}/ with demo keys (staff passphrase: {DEMO_PASSPHRASE}).\n"
        "Reports typed here are sealed for real; read them with `safeguard reports show REF`.\n"
        "Not for real reports: use `safeguard keys init` in a fresh data dir for that.\n"
    )


def parse_line(line: str, buttons: list[Button]) -> Inbound:
    stripped = line.strip()
    if stripped.isdigit() and 1 <= int(stripped) <= len(buttons):
        b = buttons[int(stripped) - 1]
        return Inbound("button", action=b.action, step=b.step, value=b.value, turn=b.turn)
    command = stripped.lower()
    if command in ("/start", "/help", "/exit"):
        return Inbound(command[1:])  # type: ignore[arg-type]
    if command.split(" ", 1)[0] == "/followup":
        return Inbound("followup", text=stripped[len("/followup") :].strip())
    return Inbound("text", text=line)


async def chat(settings: Settings, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> None:
    ensure_demo_keys(settings, out)
    if not model_path().exists():
        out.write("Getting the language model ready (first run only, a few seconds)...\n")
        out.flush()
    alerted: list[bool] = []
    async with open_services(settings, on_alert=lambda: alerted.append(True)) as services:
        messenger = TerminalMessenger(out)
        origin = Origin(reporter_id=TERMINAL_REPORTER_ID)
        await services.reporting.handle(origin, Inbound("start"), messenger)
        while True:
            out.write("> ")
            out.flush()
            line = await asyncio.to_thread(stdin.readline)
            if not line:
                out.write("\n")
                break
            inbound = parse_line(line.rstrip("\n"), messenger.buttons)
            await services.reporting.handle(origin, inbound, messenger)
            if alerted:
                alerted.clear()
                out.write(
                    "\n(Staff alert saved for the on-call team: `safeguard run` delivers it to "
                    "the staff chat and the person on call.)\n"
                )
