"""`Services`: everything one Relay process holds, as the endpoints see it. A plain
record, low in the house: the endpoint modules import it from here, and only
relay/lifespan.py builds one (and opens and closes what it holds)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from relay.backends.base import Coordination, Hub, Outbox, Shares, TaskStore
from relay.backends.objects import ObjectStorage
from relay.background import Supervisor
from relay.catalogue import Catalogue
from relay.credits import Accounts
from relay.idempotency import Settler
from relay.ingest import Ingestor
from relay.limits import RateLimit, StreamCap
from relay.mirror import Mirror
from relay.providers.registry import Providers
from relay.recovery import Recovery
from relay.settings import Settings
from relay.webhooks.sender import Sender


@dataclass
class Services:
    settings: Settings
    catalogue: Catalogue
    store: TaskStore
    coordination: Coordination
    hub: Hub
    provider: Providers
    ingestor: Ingestor
    storage: ObjectStorage
    mirror: Mirror
    recovery: Recovery
    background: Supervisor
    settler: Settler
    draining: asyncio.Event
    create_limit: RateLimit
    callback_limit: RateLimit
    streams: StreamCap
    outbox: Outbox
    webhooks: Sender | None  # None when no webhook secret is configured
    shares: Shares
    accounts: Accounts | None  # RELAY_CREDITS=on
