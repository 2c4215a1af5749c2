"""Reasoning tasks: problem generation, prompts and exact grading."""

from latentreason.tasks.arith import ArithConfig, ArithTask, Problem
from latentreason.tasks.math import MathProblem, MathTask

__all__ = ["ArithConfig", "ArithTask", "MathProblem", "MathTask", "Problem", "get_task"]

TASKS = ("arith", "gsm8k", "math500")


def get_task(name: str, data=None, **kwargs):
    """Return a task by name: ``arith`` (the organism's; kwargs go to ArithConfig), ``gsm8k`` or ``math500``.

    ``data`` is the local file (or directory) of a real dataset; None loads it through ``datasets``.
    """
    if name in ("arith", "organism"):
        if data is not None:
            raise ValueError(f"Task {name!r} generates its problems and takes no data file (got data={data!r}); drop --data.")
        return ArithTask(ArithConfig(**kwargs))
    if name in ("gsm8k", "math500"):
        return MathTask(name, data=data, **kwargs)
    raise ValueError(f"Unknown task {name!r}: known tasks are {', '.join(TASKS)}.")
