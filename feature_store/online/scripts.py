"""The Lua scripts :class:`~feature_store.online.redis_histories.RedisHistories` runs inside
Redis, read once from the package's ``lua/`` folder.

Each script's contract (keys, arguments, reply) is in its file's header. ``protobuf.lua`` (a
varint and a ``google.protobuf.Timestamp`` reader) is prepended to the scripts that read stored
values. Redis caches a script by the SHA1 of its text: clients register them once and call
them with ``EVALSHA``.
"""

from __future__ import annotations

from importlib import resources
from typing import Final


def _lua(*names: str) -> str:
    folder = resources.files(__package__).joinpath("lua")
    return "".join(folder.joinpath(name).read_text(encoding="utf-8") for name in names)


#: Compare-and-set of a customer's TX_IDS-guarded history.
CAS: Final = _lua("cas.lua")
#: Appends scored transactions to a customer's history in place.
APPEND: Final = _lua("protobuf.lua", "append.lua")
#: Loads customer snapshot rows, skipping keys appended to after the snapshot's cutoff.
SNAPSHOT: Final = _lua("protobuf.lua", "snapshot.lua")
#: Loads terminal snapshot rows.
TERMINALS: Final = _lua("terminals.lua")
#: Event times the append script takes exactly (Lua numbers are doubles).
APPEND_TIME_US: Final = range(0, 1 << 53)
