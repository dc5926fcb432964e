"""Fault-injection tests: kills, signals, failing writes, corrupt files and hostile inputs."""
