"""One rule for progress bars: shown on a terminal, hidden elsewhere, ``USSAFETY_PROGRESS``
overrides both ways; the Trainer's and papermill's bars follow it, and the long steps of
the alignment stage (DPO's rejected answers, reference pass and steps) draw bars."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ussafety import progress as pg
from ussafety.config import TrainConfig
from ussafety.train.trainer import training_args


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("env", "tty", "shown"),
    [(None, True, True), (None, False, False), ("0", True, False), ("off", True, False), ("1", False, True)],
)
def test_the_rule(env: str | None, tty: bool, shown: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if env is None:
        monkeypatch.delenv(pg.ENV, raising=False)
    else:
        monkeypatch.setenv(pg.ENV, env)
    stream = Terminal() if tty else io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    assert pg.progress_enabled() is shown
    with pg.progress(total=3, desc="step", file=stream, mininterval=0) as bar:
        for _ in range(3):
            bar.update(1)  # a hidden bar takes the same calls
    assert list(pg.progress(range(3), desc="iterate", file=stream)) == [0, 1, 2]
    assert ("step" in stream.getvalue()) is shown


def test_the_trainers_bar_follows_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(pg.ENV, "0")
    assert training_args(TrainConfig(), 0, str(tmp_path), 8).disable_tqdm is True
    monkeypatch.setenv(pg.ENV, "1")
    assert training_args(TrainConfig(), 0, str(tmp_path), 8).disable_tqdm is False


def test_the_dpo_stage_draws_its_bars(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The preference stage on the tiny model: rejected-answer generation, the reference
    pass and the DPO steps each show a bar when bars are on."""
    from ussafety.config import AlignConfig, LoraConfig
    from ussafety.models.loading import add_lora, tiny_random_model
    from ussafety.train.align import dpo_train, preference_pairs

    monkeypatch.setenv(pg.ENV, "1")
    cfg = AlignConfig(
        n_refusal=4,
        n_helpful=4,
        pref_pairs=4,
        pref_rejected_tokens=4,
        train=TrainConfig(batch_size=2, max_length=48, lora=LoraConfig(r=2, alpha=4)),
    )
    loaded = tiny_random_model(0)
    pairs, _ = preference_pairs(cfg, loaded.model, loaded.tokenizer)
    dpo_train(add_lora(loaded, cfg.train.lora), loaded.tokenizer, pairs, cfg)
    err = capsys.readouterr().err
    for desc in ("dpo: rejected answers", "dpo: reference log-probs", "dpo:"):
        assert desc in err, err[-2000:]


@pytest.mark.parametrize(("env", "shown"), [("1", True), ("0", False)])
def test_the_suites_generation_bar(env: str, shown: bool, monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    """``suite.generate_for`` counts prompts on a bar when bars are on, draws nothing otherwise."""
    from ussafety.data.types import Example
    from ussafety.evaluate.suite import generate_for
    from ussafety.models.loading import tiny_random_model

    monkeypatch.setenv(pg.ENV, env)
    loaded = tiny_random_model(0)
    examples = [Example(prompt=t) for t in ("hi", "why", "ok")]
    out = generate_for(loaded.model, loaded.tokenizer, examples, desc="eval: harmful", max_new_tokens=2)
    assert len(out) == 3
    err = capfd.readouterr().err
    assert ("eval: harmful" in err and "3/3" in err) is shown, err


def test_the_importance_pass_draws_its_bar(monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    """EWC/MAS's importance pass counts its backward passes (one per example here)."""
    from ussafety.config import LoraConfig
    from ussafety.data.types import Example
    from ussafety.methods.base import TrainContext
    from ussafety.methods.ewc import response_nll_sum, weight_importance
    from ussafety.models.loading import add_lora, tiny_random_model

    monkeypatch.setenv(pg.ENV, "1")
    loaded = tiny_random_model(0)
    model = add_lora(loaded, LoraConfig(r=2, alpha=4))
    ctx = TrainContext(tokenizer=loaded.tokenizer, batch_size=2, max_length=32)
    examples = [Example(prompt="hi", response="no"), Example(prompt="why", response="ok")]
    weight_importance(model, examples, ctx, "example", response_nll_sum, lambda g: g.pow(2))
    err = capfd.readouterr().err
    assert "importance pass (example)" in err and "2/2" in err, err


def test_importing_the_rule_loads_neither_tqdm_nor_torch() -> None:
    """``ussafety.progress`` is imported by modules that must stay light (method configs
    are validated without torch); ``tqdm`` is imported when a bar is made."""
    import subprocess
    import sys

    code = "import sys, ussafety.progress; print(sorted(m for m in ('torch', 'tqdm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
