from ussafety.data.types import Example
from ussafety.models.chat import IGNORE, collate, encode_train
from ussafety.models.loading import tiny_random_model

TOK = tiny_random_model().tokenizer


def test_loss_mask_covers_exactly_the_response() -> None:
    ex = Example(prompt="What is 2+2?", response="It is 4.")
    enc = encode_train(TOK, ex, max_length=512)
    labelled = [t for t in enc["labels"] if t != IGNORE]
    first = next(i for i, t in enumerate(enc["labels"]) if t != IGNORE)
    assert all(t == IGNORE for t in enc["labels"][:first])
    assert TOK.decode(labelled) == "It is 4.<|im_end|>"
    assert TOK.decode(enc["input_ids"][:first]).endswith("<|im_start|>assistant\n")
    assert enc["input_ids"][first:] == labelled


def test_truncation_keeps_question_end_and_some_response() -> None:
    ex = Example(prompt="x " * 300 + "QUESTION?", response="answer " * 50)
    enc = encode_train(TOK, ex, max_length=64)
    assert len(enc["input_ids"]) == 64
    assert sum(t != IGNORE for t in enc["labels"]) == 16
    assert "QUESTION?" in TOK.decode(enc["input_ids"])


def test_collate_pads_right_and_masks_padding() -> None:
    rows = [encode_train(TOK, Example(prompt="a", response="b" * n), 128) for n in (1, 9)]
    batch = collate(rows, TOK.pad_token_id)
    short = len(rows[0]["input_ids"])
    assert batch["attention_mask"][0, short:].sum() == 0
    assert (batch["labels"][0, short:] == IGNORE).all()
    assert batch["input_ids"].shape[1] == len(rows[1]["input_ids"])
