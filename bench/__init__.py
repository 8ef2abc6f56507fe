"""The benchmark of issue 4 (``make bench``): callstate's receiver and workers against peer designs.

Run it with ``make bench`` (or ``scripts/bench``); :mod:`bench.run` is the driver. Everything it
starts listens on and talks to 127.0.0.1 only, stops by itself and is cleaned up on exit or Ctrl-C.
"""
