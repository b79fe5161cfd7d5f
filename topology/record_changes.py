"""What one update of a live view changed in its lists of records: records to upsert, ids to remove."""

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RecordChanges:
    upsert: defaultdict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    remove: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def put(self, name: str, records: dict[Any, dict[str, Any]], key: Any, record: dict[str, Any] | None) -> None:
        """Sets ``records[key]`` to ``record`` (None: no record), noting the change in the list ``name``."""
        before = records.get(key)
        if record is None:
            if before is not None:
                del records[key]
                self.remove[name].append(before["id"])
        elif record != before:
            records[key] = record
            self.upsert[name].append(record)
