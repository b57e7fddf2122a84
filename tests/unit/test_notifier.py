"""The staff notifier tells the delivery worker whether a failed send may have gone out."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from aiogram.exceptions import TelegramNetworkError
from aiogram.methods import SendMessage
from aiohttp import ClientConnectorError, ClientOSError, ServerDisconnectedError

from bot.escalation.desk import StaffMessage
from bot.escalation.outbox import DeliveryUncertain
from bot.escalation.policy import STAFF_CHAT
from bot.telegram.notifier import TelegramStaffNotifier

STAFF_CHAT_ID = -1001


class NoAnswerBot:
    """A bot whose sendMessage fails as aiogram reports network trouble."""

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause

    async def send_message(self, chat_id: int, text: str, **kw: Any) -> Any:
        method = SendMessage(chat_id=chat_id, text=text)
        raise TelegramNetworkError(method=method, message=str(self.cause)) from self.cause


def notifier(cause: BaseException) -> TelegramStaffNotifier:
    return TelegramStaffNotifier(NoAnswerBot(cause), STAFF_CHAT_ID, None, None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "cause",
    [
        TimeoutError(),  # no answer in time: Telegram may have posted it
        ClientOSError(104, "Connection reset by peer"),
        ServerDisconnectedError(),
    ],
    ids=["timeout", "reset", "disconnected"],
)
async def test_a_send_that_got_no_answer_may_have_gone_out(cause: BaseException) -> None:
    with pytest.raises(DeliveryUncertain):
        await notifier(cause).send(STAFF_CHAT, StaffMessage("alert"))


async def test_a_send_that_could_not_connect_did_not_go_out() -> None:
    key = SimpleNamespace(host="api.telegram.org", port=443, ssl=True)
    refused = ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))  # type: ignore[arg-type]
    with pytest.raises(TelegramNetworkError):
        await notifier(refused).send(STAFF_CHAT, StaffMessage("alert"))
