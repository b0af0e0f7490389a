"""Benchmarks: `make bench` (about 4 minutes), `make bench-full`, `make soak`, and `make
bench-compare` (two commits' figures in one run).

Every figure is a ratio measured in the same run on the same machine: the splitlink server
against a bare Starlette endpoint served with the same uvicorn settings, against the same server
on another backend, or against itself on an empty database or at the start of a run.
"""
