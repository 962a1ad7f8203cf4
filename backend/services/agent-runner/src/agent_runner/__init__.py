"""Stigmer agent runner: the Temporal worker that runs agents for the local backend.

`python -m agent_runner` starts the `supervisor`, which forks runner processes
(`service`): each serves the control API and runs the worker (`temporal_worker`)
for the `ExecuteAgent` workflow (`workflow`) and its `RunAgent` activity
(`activities`), which calls the agents in `agents`. `config` is the environment
contract.
"""
