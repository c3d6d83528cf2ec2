"""The outbox's per-row statements on ``event_deliveries``, built once.

The relay runs them thousands of times, and building a SQLAlchemy statement costs more than
executing it. Parameters are prefixed ``b_`` (an ``UPDATE`` reserves the column names for its
``SET`` clause). Every ``WHERE`` repeats the condition the row was read under: another relay may
have taken or finished the row since (PostgreSQL re-checks the ``WHERE`` after that relay's commit;
SQLite serialises the writers), so a row count of 1 says the write happened to the row as it was.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from hokusai_action.db.schema import event_deliveries
from hokusai_action.domain.statuses import CANCELLED, DEAD_LETTER, PENDING

_rows = event_deliveries.c
_THIS_ROW = sa.and_(_rows.event_id == sa.bindparam("b_event_id"), _rows.sink == sa.bindparam("b_sink"))
_KEY = sa.and_(_THIS_ROW, _rows.status == PENDING)
_LEASE_FREE = sa.or_(_rows.lease_until.is_(None), _rows.lease_until < sa.bindparam("b_now"))
_DUE = sa.or_(_rows.next_attempt_at.is_(None), _rows.next_attempt_at <= sa.bindparam("b_now"))
# a lease taken from a killed relay drops its in-flight mark: this relay has not sent it yet
_TAKE: dict[str, Any] = {
    "lease_owner": sa.bindparam("b_owner"),
    "lease_until": sa.bindparam("b_until"),
    "sending_since": None,
}

LEASE = event_deliveries.update().where(_KEY, _LEASE_FREE).values(**_TAKE)
LEASE_IF_DUE = event_deliveries.update().where(_KEY, _LEASE_FREE, _DUE).values(**_TAKE)
# a lease whose holder is provably dead (killed on this machine and PID namespace) is taken at once,
# only if that holder still has it
_HELD_BY_DEAD = _rows.lease_owner == sa.bindparam("b_stale")
TAKE_OVER = event_deliveries.update().where(_KEY, _HELD_BY_DEAD).values(**_TAKE)
TAKE_OVER_IF_DUE = event_deliveries.update().where(_KEY, _HELD_BY_DEAD, _DUE).values(**_TAKE)

_MINE = sa.and_(_KEY, _rows.lease_owner == sa.bindparam("b_owner"))
RELEASE = event_deliveries.update().where(_MINE).values(lease_owner=None, lease_until=None, sending_since=None)
RENEW = event_deliveries.update().where(_MINE).values(lease_until=sa.bindparam("b_until"))
CLEAR_TO_SEND = (
    event_deliveries.update()
    .where(_MINE)
    .values(lease_until=sa.bindparam("b_until"), sending_since=sa.bindparam("b_now"))
)
FINISH = (
    event_deliveries.update()
    .where(_MINE)
    .values(
        lease_owner=None,
        lease_until=None,
        sending_since=None,
        attempts=_rows.attempts + 1,
        last_attempt_at=sa.bindparam("b_now"),
        last_error=sa.bindparam("b_error"),
        status=sa.bindparam("b_status"),
        delivered_at=sa.bindparam("b_delivered_at"),
        next_attempt_at=sa.bindparam("b_next_attempt_at"),
    )
)

_CANCEL: dict[str, Any] = {
    "status": CANCELLED,
    "cancel_reason": sa.bindparam("b_reason"),
    "cancelled_at": sa.bindparam("b_now"),
    "lease_owner": None,
    "lease_until": None,
    "sending_since": None,
    "next_attempt_at": None,
}
CANCEL_MINE = event_deliveries.update().where(_MINE).values(**_CANCEL)
_UNDELIVERED = sa.and_(_THIS_ROW, _rows.status.in_((PENDING, DEAD_LETTER)))
CANCEL_ANY = event_deliveries.update().where(_UNDELIVERED).values(**_CANCEL)
_NOT_SENDING = sa.or_(
    _rows.sending_since.is_(None), _rows.lease_until.is_(None), _rows.lease_until < sa.bindparam("b_now")
)
CANCEL_UNLESS_SENDING = event_deliveries.update().where(_UNDELIVERED, _NOT_SENDING).values(**_CANCEL)
REQUEUE = (
    event_deliveries.update()
    .where(_THIS_ROW, _rows.status == DEAD_LETTER)
    .values(status=PENDING, next_attempt_at=None, lease_owner=None, lease_until=None, sending_since=None)
)
