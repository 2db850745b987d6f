"""The offline Telegram: used by the tests, the demo and the benchmarks (see DESIGN.md)."""

from streambot.simulator.content import DiskContent, SyntheticContent
from streambot.simulator.session import offline
from streambot.simulator.telegram import (
    MEDIA_KINDS,
    SentMessage,
    SimBot,
    SimChannel,
    SimFile,
    SimulatedTelegram,
    SimUser,
    getfile_rule_violation,
)

__all__ = [
    "MEDIA_KINDS",
    "DiskContent",
    "SentMessage",
    "SimBot",
    "SimChannel",
    "SimFile",
    "SimUser",
    "SimulatedTelegram",
    "SyntheticContent",
    "getfile_rule_violation",
    "offline",
]
