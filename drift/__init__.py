"""Operator tooling (drift = operations): status, replay, dead-letter redrive, projection
rebuild and the web console, all behind the `chain` CLI. Every action that changes
anything is recorded in the operations journal (`journal.py`)."""
