"""The customer's fine-tuning upload: parse it strictly and explain every problem.

A customer who uploads a broken file should get one error that lists everything
wrong with it (file, 1-based row, line and field), not a stack trace from the
tokenizer after an hour of training, and not one problem per attempt. Reading
never writes anything; ``write_upload`` writes atomically so that a crash cannot
leave a half-written upload behind for the next run to train on.

Accepted formats (by suffix, else by the first character): JSONL (``.jsonl``,
``.ndjson``; a ``.json`` file whose first character is ``{`` is read as JSONL too),
JSON (a list of objects) and CSV with a header row. Each row is one of

* ``{"prompt", "response"}`` (optional ``"system"``),
* TRL standard prompt-completion ``{"prompt": str, "completion": str}``,
* TRL conversational prompt-completion ``{"prompt": [messages], "completion":
  [one assistant message]}``: the prompt may start with a system turn and carry
  earlier turns, and ends with the user turn,
* Alpaca style ``{"instruction", "input" (optional), "output"}``,
* chat ``{"messages": [{"role", "content"}, ...]}``: an optional leading system
  turn, then user/assistant turns ending with ``user`` -> ``assistant``; the last
  assistant turn is the response, the last user turn the prompt, the rest history.
  In CSV the ``messages`` cell holds that list as JSON.

Every text is also refused when it holds a chat-template control token (it would
be tokenised as the real special token, so a customer could inject e.g. a system
turn into training) or a control character (NUL, C0/C1, bidi overrides, which hide
text from a reviewer). With ``control_tokens="escape"`` control tokens are defused
instead and the rows are recorded (see ``escape_control_tokens``).

Row numbers count data records from 1 (blank JSONL lines and the CSV header are
not records); ``line`` is the physical line in the file where the record starts.
``docs/uploads.md`` describes the formats, the refusals and the report's schema.

The package splits this by concept: ``tokens`` (control tokens), ``report`` (problems,
UploadError, UploadResult), ``readers`` (JSONL/JSON/CSV parsing), ``checks`` (field
validation) and ``api`` (``read_upload``, ``load_upload``, ``write_upload``); this
module only re-exports their public names.
"""

from ussafety.data.upload.api import (
    load_upload,
    read_upload,
    validate_upload_report,
    write_upload,
)
from ussafety.data.upload.checks import MAX_CHARS, ROLES, SCHEMAS, alpaca_prompt, split_chat
from ussafety.data.upload.report import (
    MAX_PROBLEMS,
    PROBLEM_KINDS,
    UploadError,
    UploadProblem,
    UploadResult,
)
from ussafety.data.upload.tokens import (
    CONTROL_TOKENS,
    ControlTokenMode,
    control_tokens_in,
    escape_control_tokens,
)

__all__ = [
    "CONTROL_TOKENS",
    "MAX_CHARS",
    "MAX_PROBLEMS",
    "PROBLEM_KINDS",
    "ROLES",
    "SCHEMAS",
    "ControlTokenMode",
    "UploadError",
    "UploadProblem",
    "UploadResult",
    "alpaca_prompt",
    "control_tokens_in",
    "escape_control_tokens",
    "load_upload",
    "read_upload",
    "split_chat",
    "validate_upload_report",
    "write_upload",
]
