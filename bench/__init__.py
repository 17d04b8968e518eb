"""Benchmark suite of the edge gateway: `python -m bench [--quick]` (see bench/README.md).

A benchmark here prints figures and ratios; it asserts nothing about speed. The machines it
runs on (a developer's laptop, a shared 2-core CI box, an ARM gateway) differ too much for a
timed assertion to mean anything, so every gateway figure is put beside a raw ceiling
measured in the same run on the same machine, and the ratio is what carries over.
"""
