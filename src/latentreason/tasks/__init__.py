"""Reasoning tasks: problem generation, prompts and exact grading."""

from latentreason.tasks.arith import ArithConfig, ArithTask, Problem

__all__ = ["ArithConfig", "ArithTask", "Problem", "get_task"]


def get_task(name: str, **kwargs):
    """Return a task by name (``arith`` is the organism's task)."""
    if name in ("arith", "organism"):
        return ArithTask(ArithConfig(**kwargs))
    raise ValueError(f"Unknown task {name!r}: known tasks are 'arith' (the organism's); real datasets load with latentreason.datasets.")
