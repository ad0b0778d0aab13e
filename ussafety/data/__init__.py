"""Data: named sets from the offline mirror or the hub, customer uploads, poisoning.

Every Example carries its file, row and sha256 so that a run can name what it used.
"""

from ussafety.data.loaders import available, describe, load, refusal_keywords
from ussafety.data.poison import poison_mix, poison_report
from ussafety.data.types import Example
from ussafety.data.upload import UploadError, load_upload, write_upload

__all__ = [
    "Example",
    "load",
    "available",
    "describe",
    "load_upload",
    "write_upload",
    "UploadError",
    "poison_mix",
    "poison_report",
    "refusal_keywords",
]
