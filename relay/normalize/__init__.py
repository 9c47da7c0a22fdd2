"""Turn every KIE payload shape into one `ProviderReport`.

KIE has one envelope (`{code, msg|message, data}`) but a different `data` per API family:
`taskId` vs `task_id`, `resultJson` as a JSON string vs `info.result_urls` vs
`info.resultImageUrl`, string states vs integer `successFlag`s (see KIE-API.md §3, §4, §9).
This package is the only place that knows those shapes (tables: what states and codes
mean; shared: the envelope, ids, URLs; callbacks and status: one reader per family). It is pure: no I/O, no clock, and
every malformed input ends in `InvalidPayload` (or `ProviderError` for a status query KIE
itself refused), never in a KeyError/TypeError/ValueError.

Public API:
- `callback_task_id(payload)`: just the task id, for HMAC verification before anything else.
- `normalize_callback(payload)`: a callback body POSTed by KIE; the family is found by shape.
- `normalize_status(payload, family=..., task_id=...)`: a status-query answer; the caller
  knows which endpoint it asked, so it names the family.
"""

from relay.normalize.callbacks import normalize_callback
from relay.normalize.shared import callback_task_id, is_record_pending
from relay.normalize.status import normalize_status
from relay.normalize.tables import FAMILIES

__all__ = ["FAMILIES", "callback_task_id", "is_record_pending", "normalize_callback", "normalize_status"]
