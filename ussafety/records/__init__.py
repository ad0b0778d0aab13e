"""Run records: one typed JSON record per run (:mod:`.schema`), written and read only through
:mod:`.store`; :mod:`.migrate` re-keys records when the identity scheme changes, :mod:`.check`
lists those the code no longer matches."""

from ussafety.records.schema import Generation, Metrics, Record
from ussafety.records.store import (
    RecordError,
    iter_records,
    load_record,
    read_record,
    record_path,
    run_dir,
    save_record,
    write_json_atomic,
    write_record,
)

__all__ = [
    "Generation",
    "Metrics",
    "Record",
    "RecordError",
    "iter_records",
    "load_record",
    "read_record",
    "record_path",
    "run_dir",
    "save_record",
    "write_json_atomic",
    "write_record",
]
