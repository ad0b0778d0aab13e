"""``ussafety runs check``: which records no longer match the code.

A record is *stale* when the stamps it was made under (behaviour versions of the stages and
methods, :data:`ussafety.config.identity.STAMPS` and ``Method.version``) differ from today's:
the code has changed what it computes, so only a rerun gives today's answer. It is
*misfiled* when its folder or id is not the id today's code gives its config (a field was
added or the identity scheme changed): ``ussafety runs migrate`` fixes that without rerunning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ussafety.config import from_dict, run_id
from ussafety.config.identity import stamps
from ussafety.records.migrate import LEGACY, _set_missing
from ussafety.records.store import RECORD, read_record


def check_dir(root: Path) -> dict[str, Any]:
    """``{"records": n, "stale": [...], "misfiled": [...]}`` for every record under ``root``."""
    stale, misfiled = [], []
    paths = sorted(root.glob(f"*/{RECORD}"))
    for path in paths:
        rec = read_record(path)
        config = json.loads(json.dumps(rec.config))
        for key, value in LEGACY.items():
            _set_missing(config, key, value)
        config["name"] = rec.label
        cfg = from_dict(config, where=f"{path} (config)")
        now = stamps(cfg)
        if rec.stamps != now:
            changed = sorted(k for k in set(now) | set(rec.stamps) if now.get(k) != rec.stamps.get(k))
            stale.append({"run_id": rec.run_id, "changed": {k: [rec.stamps.get(k), now.get(k)] for k in changed}})
        elif run_id(cfg) != rec.run_id or path.parent.name != rec.run_id:
            misfiled.append({"run_id": rec.run_id, "folder": path.parent.name, "today": run_id(cfg)})
    return {"records": len(paths), "stale": stale, "misfiled": misfiled}
