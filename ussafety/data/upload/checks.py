"""Field validation of one upload record: schema, texts, control characters and tokens.

Each record is matched to one of the accepted row formats (``SCHEMAS``) and every
text is checked for type, emptiness, length, control characters and control tokens.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ussafety.data.upload.report import _Problems
from ussafety.data.upload.tokens import ControlTokenMode, _TokenScanner

MAX_CHARS = 20_000
ROLES = ("system", "user", "assistant")

#: Row formats, as reported in ``Example.meta["schema"]`` and the report's ``schemas``.
SCHEMAS = ("prompt_response", "prompt_completion", "prompt_completion_chat", "alpaca", "chat")

# C0 controls except \t \n \r, DEL, C1 controls, and the bidi embeddings, overrides and
# isolates that can make a reviewer read text in a different order than the model does.
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class _Parts:
    prompt: str
    response: str
    history: tuple[dict[str, str], ...] = ()
    system: str | None = None


@dataclass(frozen=True)
class _Settings:
    max_chars: int
    control_tokens: ControlTokenMode
    scanner: _TokenScanner


@dataclass
class _Row:
    """Checks the texts of one record and reports its problems at its row and line."""

    row: int
    line: int | None
    probs: _Problems
    settings: _Settings
    escaped: dict[str, list[str]] = field(default_factory=dict)

    def problem(self, field_name: str | None, message: str, kind: str) -> None:
        self.probs.add(self.row, field_name, message, self.line, kind=kind)

    def text(self, container: dict, key: str, field_name: str, required: bool = True) -> str | None:
        """The checked (and, in escape mode, defused) text, or None after reporting."""
        if key not in container or container[key] is None:
            if required:
                self.problem(field_name, "is missing" if key not in container else "is null", "missing_field")
            return None
        value = container[key]
        if not isinstance(value, str):
            self.problem(field_name, f"must be a string, got {type(value).__name__}", "wrong_type")
            return None
        if required and not value.strip():
            self.problem(field_name, "is empty", "empty")
            return None
        max_chars = self.settings.max_chars
        if len(value) > max_chars:
            self.problem(field_name, f"has {len(value)} characters, more than the limit of {max_chars}", "too_long")
            return None
        clean = True
        bad = _CONTROL_CHARS.search(value)
        if bad:
            self.problem(
                field_name,
                f"contains {_describe_char(bad.group())} at character "
                f"{bad.start() + 1}; control characters are not allowed in training text",
                "control_char",
            )
            clean = False
        scanner = self.settings.scanner
        found = scanner.find(value)
        if found and self.settings.control_tokens == "escape":
            value = scanner.escape(value)
            left = scanner.find(value)
            if left:
                self.problem(
                    field_name,
                    f"contains control token(s) {_quote(left, scanner)} that cannot be escaped",
                    "control_token",
                )
                clean = False
            else:
                self.escaped[field_name] = found
        elif found:
            self.problem(
                field_name,
                f"contains chat-template control token(s) "
                f"{_quote(found, scanner)}: the tokenizer would read them as real turn "
                "markers, letting the text inject turns (e.g. a system prompt) into "
                "training; remove them, or ask for control_tokens='escape'",
                "control_token",
            )
            clean = False
        return value if clean else None

    def messages(self, value: Any, field_name: str) -> list[dict[str, Any]] | None:
        """A list of {role, content} objects, each checked; None after reporting."""
        if not isinstance(value, list):
            self.problem(
                field_name, f"must be a list of {{role, content}} objects, got {type(value).__name__}", "wrong_type"
            )
            return None
        if not value:
            self.problem(field_name, "must be a non-empty list of {role, content} objects", "empty")
            return None
        before = self.probs.total
        out = []
        for i, m in enumerate(value):
            name = f"{field_name}[{i}]"
            if not isinstance(m, dict):
                self.problem(name, f"must be an object, got {type(m).__name__}", "wrong_type")
                continue
            role = m.get("role")
            if role not in ROLES:
                got = "missing" if role is None else repr(role)
                self.problem(f"{name}.role", f"unknown role {got} (expected one of {', '.join(ROLES)})", "role")
            content = self.text(m, "content", f"{name}.content")
            out.append({"role": role, "content": content})
        return out if self.probs.total == before else None


def _describe_char(ch: str) -> str:
    code = f"U+{ord(ch):04X}"
    if ch == "\x00":
        return f"{code} (NUL)"
    if "\u202a" <= ch <= "\u202e" or "\u2066" <= ch <= "\u2069":
        return f"{code} (a bidirectional override, which can hide text from a reviewer)"
    return f"{code} (a control character)"


def _quote(tokens: list[str], scanner: _TokenScanner) -> str:
    return ", ".join(f"'{t}' ({scanner.family[t]})" for t in tokens)


def _schema(obj: dict) -> str | None:
    """Which accepted row format ``obj`` claims to be, from its keys."""
    if "messages" in obj:
        return "chat"
    if "completion" in obj or isinstance(obj.get("prompt"), list):
        chat = isinstance(obj.get("prompt"), list) or isinstance(obj.get("completion"), list)
        return "prompt_completion_chat" if chat else "prompt_completion"
    if "prompt" in obj or "response" in obj:
        return "prompt_response"
    if any(k in obj for k in ("instruction", "input", "output")):
        return "alpaca"
    return None


def _validate(obj: Any, check: _Row) -> tuple[str | None, _Parts | None]:
    """Check one record: its schema, and its parts only when it is clean."""
    if not isinstance(obj, dict):
        check.problem(None, f"must be an object, got {type(obj).__name__}", "wrong_type")
        return None, None
    schema = _schema(obj)
    before = check.probs.total
    if schema == "chat":
        msgs = check.messages(obj["messages"], "messages")
        parts = _chat_parts(msgs, check) if msgs is not None else None
    elif schema == "prompt_completion":
        if "response" in obj:
            check.problem("response", "a row has either 'response' or TRL's 'completion', not both", "format")
        prompt = _trl_text(obj, "prompt", check)
        completion = _trl_text(obj, "completion", check)
        parts = _Parts(prompt, completion) if prompt and completion else None
    elif schema == "prompt_completion_chat":
        parts = _trl_chat_parts(obj, check)
    elif schema == "prompt_response":
        prompt = check.text(obj, "prompt", "prompt")
        response = check.text(obj, "response", "response")
        system = check.text(obj, "system", "system", required=False)
        parts = _Parts(prompt, response, (), system or None) if prompt and response else None
    elif schema == "alpaca":
        instruction = check.text(obj, "instruction", "instruction")
        extra = check.text(obj, "input", "input", required=False)
        output = check.text(obj, "output", "output")
        parts = _Parts(alpaca_prompt(instruction, extra), output) if instruction and output else None
    else:
        check.problem(None, _unknown_row_hint(obj), "format")
        return None, None
    return schema, parts if check.probs.total == before else None


def _unknown_row_hint(obj: dict) -> str:
    accepted = (
        f"needs prompt/response, prompt/completion (TRL), instruction/output or messages fields; found {sorted(obj)}"
    )
    if "chosen" in obj or "rejected" in obj:
        return (
            accepted + " (preference rows with chosen/rejected are not supported: uploads "
            "are for supervised fine-tuning)"
        )
    if "text" in obj:
        return accepted + " (TRL language-modeling rows {'text'} have no prompt/response split)"
    return accepted


def _trl_text(obj: dict, key: str, check: _Row) -> str | None:
    """A text field of TRL's standard prompt-completion format, naming both TRL shapes."""
    if key in obj and obj[key] is not None and not isinstance(obj[key], str):
        check.problem(
            key,
            "must be a string (standard format) or a list of {role, content} "
            f"messages (conversational format), got {type(obj[key]).__name__}",
            "wrong_type",
        )
        return None
    return check.text(obj, key, key)


def _trl_chat_parts(obj: dict, check: _Row) -> _Parts | None:
    """TRL's conversational prompt-completion: a prompt chat and one assistant reply."""
    for key, other in (("prompt", "completion"), ("completion", "prompt")):
        if key not in obj or obj[key] is None:
            check.problem(key, "is missing" if key not in obj else "is null", "missing_field")
            return None
        if not isinstance(obj[key], list):
            check.problem(
                key,
                f"must be a list of messages because '{other}' is (conversational "
                f"format), got {type(obj[key]).__name__}",
                "wrong_type",
            )
            return None
    prompt = check.messages(obj["prompt"], "prompt")
    completion = check.messages(obj["completion"], "completion")
    if prompt is None or completion is None:
        return None
    before = check.probs.total
    for i, m in enumerate(prompt):
        if m["role"] == "system" and i != 0:
            check.problem(f"prompt[{i}].role", "a system turn is only allowed first", "role")
    if prompt[-1]["role"] != "user":
        check.problem(
            f"prompt[{len(prompt) - 1}].role",
            "the prompt must end with a user message (the completion answers it)",
            "role",
        )
    if len(completion) != 1 or completion[0]["role"] != "assistant":
        check.problem(
            "completion", "must be exactly one message with role 'assistant' (the response to train on)", "role"
        )
    if check.probs.total != before:
        return None
    system, history, user, response = split_chat(prompt + completion)
    return _Parts(user, response, history, system)


def _chat_parts(msgs: list[dict[str, str]], check: _Row) -> _Parts | None:
    before = check.probs.total
    for i, m in enumerate(msgs):
        if m["role"] == "system" and i != 0:
            check.problem(f"messages[{i}].role", "a system turn is only allowed first", "role")
    last = len(msgs) - 1
    if msgs[last]["role"] != "assistant":
        check.problem(
            f"messages[{last}].role",
            "the last message must be from the assistant (it is the response to train on)",
            "role",
        )
    elif last < 1 or msgs[last - 1]["role"] != "user":
        check.problem(
            f"messages[{max(last - 1, 0)}].role", "the assistant's final answer must follow a user message", "role"
        )
    if check.probs.total != before:
        return None
    system, history, prompt, response = split_chat(msgs)
    return _Parts(prompt, response, history, system)


def split_chat(messages: Iterable[dict[str, Any]]) -> tuple[str | None, tuple[dict[str, str], ...], str, str]:
    """(system, history, prompt, response) of a valid chat ending user -> assistant."""
    msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    system = msgs.pop(0)["content"] if msgs and msgs[0]["role"] == "system" else None
    if len(msgs) < 2 or msgs[-1]["role"] != "assistant" or msgs[-2]["role"] != "user":
        raise ValueError("a chat must end with a user turn followed by an assistant turn")
    return system, tuple(msgs[:-2]), msgs[-2]["content"], msgs[-1]["content"]


def alpaca_prompt(instruction: str, extra: str | None) -> str:
    """Alpaca instruction plus optional input, separated by a blank line."""
    return f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
