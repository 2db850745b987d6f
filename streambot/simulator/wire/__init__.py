"""Telegram on the wire: the simulated world behind a real MTProto server on loopback (issue 12).

- :mod:`.server`: ``WireTelegram``, the MTProto 2.0 server (one main and one media port per DC) in
  front of the one :class:`~streambot.simulator.SimulatedTelegram`;
- :mod:`.client`: ``pointed_at``, which points pyrogram at it (DC addresses, the test RSA key) for
  one scope;
- :mod:`.link`: the wire model (per-connection bandwidth, RTT, faults);
- :mod:`.process`, :mod:`.control`, :mod:`.info`: the standalone simulator process and its control API.

Nothing is imported here, so the light modules (``info``) stay cheap to import.
"""
