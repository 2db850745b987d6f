"""Telegram on the wire: the simulated world behind a real MTProto server on loopback (issue 12)."""
