"""Benchmarks of StreamBot: ``python -m bench`` (full) or ``python -m bench --quick`` (under a minute).

Runs from a checkout, never installed. Every figure is measured on the real application in demo mode
(``python -m streambot demo``, the Telegram simulator inside), started as a subprocess per
configuration, loaded from other processes (curl, wrk or :mod:`bench.loadclient`) over loopback.
See ``bench/README.md`` for what each figure means and the latest results.
"""
