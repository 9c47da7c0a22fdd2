"""Every Redis key and channel name Relay uses, in one place.

Keys that one script touches together must share a hash slot on a Redis Cluster. Those
are named by a `Keyspace`: on one server (or Sentinel) the names carry no hash tag and are
what they always were; on a cluster each task belongs to one of `SHARDS` tags, and its
record, its entries in the indexes, its channel and its webhook messages all carry that
tag, so each write stays one atomic script on one node. The indexes are then per shard and
merged on read. Money and shares each keep to one tag of their own. Keys touched alone
(leases, rate counters, idempotency, early callbacks) are plain functions below.
"""

import itertools
import zlib

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

PREFIX = "relay"

# Fixed, not configurable: a task's shard is part of its key names, so every instance of
# a deployment, now and later, must compute the same one.
SHARDS = 16


def _spread_tags() -> tuple[str, ...]:
    """One hash tag per shard, the n-th hashing into the n-th sixteenth of the slot space:
    nodes serve contiguous slot ranges (as `redis-cli --cluster create` splits them), so
    each gets its share of the shards. `{t0}`..`{t15}` put 8, 4 and 4 on three nodes."""
    width = REDIS_CLUSTER_HASH_SLOTS // SHARDS
    tags = []
    for n in range(SHARDS):
        name = next(f"s{n}.{i}" for i in itertools.count() if key_slot(f"s{n}.{i}".encode()) // width == n)
        tags.append(f"{{{name}}}:")
    return tuple(tags)

# Each task's changes go to its own channel, and an owned task's also to its owner's: an
# instance subscribes only to what its open streams watch (its one pub/sub connection
# holds those subscriptions), so it never receives another instance's traffic. This
# channel carries nothing; it stays subscribed so that a reconnect is noticed even with
# no stream open.
EVENTS_CHANNEL = f"{PREFIX}:events"


def events_channel(name: str) -> str:
    """The channel of one task id, or of one owner (`fanout.owner_key`), on one server."""
    return f"{PREFIX}:events:{name}"

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


# Endpoints that answered 410 Gone: URL -> when and why.
WEBHOOKS_DISABLED = f"{PREFIX}:webhooks:disabled"


def delivery_seen(provider: str, digest: str) -> str:
    """A provider's callback delivery id, once applied (a replay of it changes nothing)."""
    return f"{PREFIX}:seen:{provider}:{digest}"


class Keyspace:
    """The names of the keys and channels that scripts touch together (see the module's
    docstring): untagged on one server, hash-tagged by shard on a cluster."""

    def __init__(self, *, cluster: bool) -> None:
        self.cluster = cluster
        # Every shard's tag, with its separator: the indexes are read through these.
        self.tags: tuple[str, ...] = _spread_tags() if cluster else ("",)
        self._money = "{credits}:" if cluster else ""
        self._shares = "{shares}:" if cluster else ""

    def tag(self, task_id: str) -> str:
        """The hash tag (with separator) of every key and channel of one task."""
        if not self.cluster:
            return ""
        return self.tags[zlib.crc32(task_id.encode()) % SHARDS]

    # Tasks (relay/backends/redis.py).
    def task(self, task_id: str) -> str:
        return f"{PREFIX}:{self.tag(task_id)}task:{task_id}"

    def task_index(self, tag: str) -> str:
        """Task ids scored by creation time (ms), for history: one shard's."""
        return f"{PREFIX}:{tag}tasks"

    def open_tasks(self, tag: str) -> str:
        """Unfinished task ids scored by their last update (ms): one shard's."""
        return f"{PREFIX}:{tag}open"

    def channel(self, task_id: str, name: str | None = None) -> str:
        """Where a change of `task_id` is published: its own channel, or (with `name`, an
        owner key) its owner's channel in the task's shard."""
        return f"{PREFIX}:{self.tag(task_id)}events:{name or task_id}"

    def watch_channels(self, name: str, *, owner: bool) -> list[str]:
        """What a stream watching `name` subscribes to: a task's one channel, or an owner's
        channel in every shard (an owner's tasks live in all of them)."""
        if not owner:
            return [self.channel(name)]
        return [f"{PREFIX}:{tag}events:{name}" for tag in self.tags]

    # Outbound webhooks (relay/webhooks/, relay/backends/redis_outbox.py): messages are
    # queued by the task's write script, so they live in the task's shard.
    def outbox_due(self, tag: str) -> str:
        """Messages waiting to be sent, by when they are due."""
        return f"{PREFIX}:{tag}outbox:due"

    def outbox_failed(self, tag: str) -> str:
        """Messages that gave up, by when they did (listable, redeliverable)."""
        return f"{PREFIX}:{tag}outbox:failed"

    def outbox_message(self, tag: str, delivery_id: str) -> str:
        """One outbound message to one endpoint, with its attempts."""
        return f"{PREFIX}:{tag}outbox:msg:{delivery_id}"

    def task_deliveries(self, task_id: str) -> str:
        """The ids of a task's outbound messages, oldest first."""
        return f"{PREFIX}:{self.tag(task_id)}task:{task_id}:deliveries"

    # Shares (relay/backends/shares.py): one record and two indexes per write.
    def share(self, share_id: str) -> str:
        return f"{PREFIX}:{self._shares}share:{share_id}"

    def shares_index(self, mode: str | None) -> str:
        """Shares by creation time: all of them, or one mode's (the gallery filter)."""
        return f"{PREFIX}:{self._shares}shares:{mode or 'all'}"

    # Credits (relay/backends/ledger.py). A reserve or a refund moves a user's balance, a
    # hold and the index of open holds in one script: on a cluster all money shares one
    # slot (one create per task is far below what one node serves).
    @property
    def open_holds(self) -> str:
        """Holds still waiting to settle or be refunded."""
        return f"{PREFIX}:{self._money}holds:open"

    def credits(self, user: str) -> str:
        """A user's balance (an integer)."""
        return f"{PREFIX}:{self._money}credits:{{{user}}}"

    def ledger(self, user: str) -> str:
        """A user's ledger entries, newest first."""
        return f"{PREFIX}:{self._money}ledger:{{{user}}}"

    def hold(self, hold_id: str) -> str:
        """One reservation: user, amount, state (held, settle, refund), task."""
        return f"{PREFIX}:{self._money}hold:{hold_id}"

    def welcomed(self, user: str) -> str:
        """Set once a user has had RELAY_WELCOME_CREDITS."""
        return f"{PREFIX}:{self._money}welcomed:{{{user}}}"


SINGLE = Keyspace(cluster=False)
