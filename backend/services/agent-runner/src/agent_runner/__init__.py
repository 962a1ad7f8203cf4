"""Stigmer agent runner: the Python service that runs agents for the local backend.

The package owns nothing by itself; see `__main__` for the process entry point,
`config` for the environment contract and `worker` for the backend loop.
"""
