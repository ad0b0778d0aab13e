"""The fine-tuning tasks, declared once as data (lm-eval-harness style).

A task says where its training rows come from, which set scores it, how its answers are
scored and how many tokens an answer may take. The pipeline, the evaluation, the config
schema (which names are allowed) and the cost estimate all read this table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """One task: training data, evaluation data, scorer and answer length."""

    name: str
    train_set: str
    train_split: str
    eval_set: str
    eval_split: str
    scorer: str
    max_new_tokens: int
    description: str


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "sst2",
            "sst2",
            "train",
            "sst2",
            "test",
            "sst2_accuracy",
            8,
            "SST-2 sentiment as an instruction; accuracy on the labelled GLUE dev set.",
        ),
        Task(
            "gsm8k",
            "gsm8k",
            "train",
            "gsm8k",
            "test",
            "gsm8k_exact_match",
            256,
            "Grade-school math; exact match of the number after '####'.",
        ),
        Task(
            "code",
            "code_alpaca",
            "train",
            "humaneval",
            "test",
            "humaneval_pass1",
            384,
            "Code Alpaca upload; HumanEval pass@1, programs run in the sandbox.",
        ),
    )
}


def get_task(name: str) -> Task:
    """The task named ``name``; a clear error lists the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r} (known: {', '.join(sorted(TASKS))})") from None
