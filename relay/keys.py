"""Every Redis key and channel name Relay uses, in one place."""

PREFIX = "relay"

# Each task's changes go to its own channel, and an owned task's also to its owner's: an
# instance subscribes only to what its open streams watch (its one pub/sub connection
# holds those subscriptions), so it never receives another instance's traffic. This
# channel carries nothing; it stays subscribed so that a reconnect is noticed even with
# no stream open.
EVENTS_CHANNEL = f"{PREFIX}:events"


def events_channel(name: str) -> str:
    """The channel of one task id, or of one owner (`fanout.owner_key`)."""
    return f"{PREFIX}:events:{name}"

# Sorted set of task ids scored by creation time (ms), for history.
TASK_INDEX = f"{PREFIX}:tasks"


def task(task_id: str) -> str:
    return f"{PREFIX}:task:{task_id}"


def early_callbacks(task_id: str) -> str:
    """Callbacks that arrived before their task record was written."""
    return f"{PREFIX}:early:{task_id}"


def park_budget(scope: str) -> str:
    """How many callbacks were parked lately: per callback token (`scope` is its hash),
    or `all`."""
    return f"{PREFIX}:parked:{scope}"


def idempotency(digest: str) -> str:
    """The first task created for one caller's Idempotency-Key (or identical request)."""
    return f"{PREFIX}:idem:{digest}"


def lease(task_id: str) -> str:
    """Held by the one instance that polls this task's provider status this interval."""
    return f"{PREFIX}:lease:{task_id}"


def rate(scope: str, client: str, window_index: int) -> str:
    """A fixed-window request counter, shared by every instance."""
    return f"{PREFIX}:rate:{scope}:{client}:{window_index}"


# Outbound webhooks (relay/webhooks/): messages waiting to be sent, by when they are due.
OUTBOX_DUE = f"{PREFIX}:outbox:due"
# Messages that gave up, by when they did (listable, redeliverable).
OUTBOX_FAILED = f"{PREFIX}:outbox:failed"
# Endpoints that answered 410 Gone: URL -> when and why.
WEBHOOKS_DISABLED = f"{PREFIX}:webhooks:disabled"


def outbox_message(delivery_id: str) -> str:
    """One outbound message to one endpoint, with its attempts."""
    return f"{PREFIX}:outbox:msg:{delivery_id}"


def task_deliveries(task_id: str) -> str:
    """The ids of a task's outbound messages, oldest first."""
    return f"{PREFIX}:task:{task_id}:deliveries"


def share(share_id: str) -> str:
    """One public share (relay/backends/shares.py)."""
    return f"{PREFIX}:share:{share_id}"


def shares_index(mode: str | None) -> str:
    """Shares by creation time: all of them, or one mode's (the gallery filter)."""
    return f"{PREFIX}:shares:{mode or 'all'}"


# Credits (relay/backends/ledger.py): holds still waiting to settle or be refunded.
OPEN_HOLDS = f"{PREFIX}:holds:open"


def credits(user: str) -> str:
    """A user's balance (an integer)."""
    return f"{PREFIX}:credits:{{{user}}}"


def ledger(user: str) -> str:
    """A user's ledger entries, newest first."""
    return f"{PREFIX}:ledger:{{{user}}}"


def hold(hold_id: str) -> str:
    """One reservation: user, amount, state (held, settle, refund), task."""
    return f"{PREFIX}:hold:{hold_id}"


def welcomed(user: str) -> str:
    """Set once a user has had RELAY_WELCOME_CREDITS."""
    return f"{PREFIX}:welcomed:{{{user}}}"


def delivery_seen(provider: str, digest: str) -> str:
    """A provider's callback delivery id, once applied (a replay of it changes nothing)."""
    return f"{PREFIX}:seen:{provider}:{digest}"
