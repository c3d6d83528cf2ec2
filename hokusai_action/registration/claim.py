"""The claim on a token: which states may be registered, one run at a time (draft -> registering, one
winner), a heartbeat that keeps the claim alive while the model uploads, and the claim given back
(registering -> draft) when the registration fails before its commit.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from types import TracebackType
from typing import Any

from hokusai_action.db.owner import (
    claim_owner_id,
    owner_is_dead_here,
)
from hokusai_action.db.store import (
    Database,
    Token,
    UnitOfWork,
    get_token,
    mark_registered,
    release_claim,
    renew_claim,
    token_claimed,
    token_missing,
    try_claim,
)
from hokusai_action.domain.statuses import DONE_STATUSES, DRAFT, REGISTERED, REGISTERING
from hokusai_action.errors import TokenStateError
from hokusai_action.failpoints import failpoint
from hokusai_action.registration.request import RegistrationRequest

log = logging.getLogger(__name__)

TOKEN_NOT_DRAFT = "Token {token} is '{status}'; only a draft token can be registered."
TOKEN_NOT_DRAFT_HINT = "Create a new token for a new model, or ask the Hokusai team to reset this one."
TOKEN_OTHER_BYTES = (
    "Token {token} is already registered with other model bytes ({registered}, version {version}); "
    "this model is {digest}."
)
TOKEN_OTHER_BYTES_HINT = "A token holds one model: create a new token for this one."
TOKEN_CLAIMED_HINT = "Wait for that run to finish, then re-run: a finished registration of the same bytes exits 0."
CLAIM_LOST = "The claim on token {token} expired and was taken by another run while uploading."
CLAIM_LOST_HINT = "Re-run: the uploaded version is reused. Raise HOKUSAI_CLAIM_TTL for very large models."


def check_token_state(request: RegistrationRequest, token: Token | None, database: Database) -> Token:
    """``token`` if ``request`` may go on with it: a draft (or claimed) token, or a re-run of these very
    bytes; exit 3 otherwise."""
    if token is None:
        raise token_missing(request.token_id, database.display_url)
    if token.model_status in DONE_STATUSES and token.artifact_digest == request.model.digest:
        return token  # an idempotent re-run of this very registration
    if token.model_status in DONE_STATUSES and token.artifact_digest:
        raise TokenStateError(
            TOKEN_OTHER_BYTES.format(
                token=request.token_id,
                registered=token.artifact_digest,
                version=token.model_version,
                digest=request.model.digest,
            ),
            hint=TOKEN_OTHER_BYTES_HINT,
        )
    if token.model_status not in (DRAFT, REGISTERING):
        raise TokenStateError(
            TOKEN_NOT_DRAFT.format(token=request.token_id, status=token.model_status),
            hint=TOKEN_NOT_DRAFT_HINT,
        )
    return token


class Claim:
    """This run's claim on the request's token, as a context manager.

    Entering takes the claim (exit 3 while another live run holds it; a claim left by a run killed on
    this host is taken over) and starts its heartbeat; leaving stops the heartbeat and, when the block
    failed (an error, SIGTERM's ``SystemExit``), gives the claim back so the token is a draft again.
    ``token`` is the row once claimed: ``finished_by_another`` when a run registered it meanwhile.
    """

    token: Token  # set on entering

    def __init__(self, database: Database, request: RegistrationRequest) -> None:
        self._database = database
        self._request = request
        self.owner = claim_owner_id()
        self._heartbeat = ClaimHeartbeat(database, request.token_id, self.owner, request.claim_ttl)

    @property
    def finished_by_another(self) -> bool:
        return self.token.model_status in DONE_STATUSES

    def __enter__(self) -> Claim:
        with contextlib.ExitStack() as undo:
            undo.push(self)  # a failure from here on gives the claim back, as one inside the block does
            self.token = self._take()
            failpoint("after_claim")
            if not self.finished_by_another:
                self._heartbeat.start()
            undo.pop_all()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._heartbeat.stop()
        if exc_type is not None:
            self._release_quietly()

    def last_transaction(self) -> UnitOfWork:
        """The unit of work that ends the claim. The heartbeat stops first: a beat after the commit would
        find the claim gone and warn that it was lost."""
        self._heartbeat.stop()
        return self._database.unit_of_work()

    def mark_registered(self, uow: UnitOfWork, values: dict[str, Any]) -> None:
        """token -> registered with ``values`` in ``uow``, if this run still holds the claim (exit 3 if not)."""
        token_id = self._request.token_id
        if not mark_registered(uow, token_id, owner=self.owner, values=values):
            raise TokenStateError(CLAIM_LOST.format(token=token_id), hint=CLAIM_LOST_HINT)

    def _take(self) -> Token:
        """draft -> registering for this run; the token as it then is (registered: another run finished)."""
        won = self._try_claim()
        token = self._read()
        if won:
            return token
        dead_here = token.model_status == REGISTERING and owner_is_dead_here(token.claim_owner)
        # a run on this host was killed mid-registration: take over its claim (still one winner)
        if dead_here and self._try_claim(stale_owner=token.claim_owner):
            log.warning("took over the claim of %s from a dead run (%s)", token.token_id, token.claim_owner)
            return self._read()
        if token.model_status == REGISTERING:
            raise token_claimed(token, hint=TOKEN_CLAIMED_HINT)
        if token.model_status == REGISTERED:
            return token
        check_token_state(self._request, token, self._database)
        raise token_claimed(token, hint=TOKEN_CLAIMED_HINT)

    def _try_claim(self, *, stale_owner: str | None = None) -> bool:
        request = self._request
        with self._database.unit_of_work() as uow:
            won = try_claim(
                uow, request.token_id, owner=self.owner, ttl_seconds=request.claim_ttl, stale_owner=stale_owner
            )
            uow.commit()
        return won

    def _read(self) -> Token:
        with self._database.unit_of_work() as uow:
            token = get_token(uow, self._request.token_id)
        if token is None:  # deleted while this run claimed it
            raise token_missing(self._request.token_id, self._database.display_url)
        return token

    def _release_quietly(self) -> None:
        """Give the claim back (token -> draft) after a failure; never hide the original error."""
        token_id = self._request.token_id
        try:
            with self._database.unit_of_work() as uow:
                release_claim(uow, token_id, owner=self.owner)
                uow.commit()
        except Exception as exc:  # the original error matters more; the claim expires on its own
            log.warning("could not release the claim on %s (%s); it expires on its own", token_id, type(exc).__name__)


class ClaimHeartbeat:
    """Keeps a claim alive while a long upload runs, so its TTL can be short.

    A run killed on another host (a CI job cancelled) then frees the token within one TTL, and a live
    upload is never mistaken for a dead one. If the claim is lost anyway, ``mark_registered`` notices.
    """

    def __init__(self, database: Database, token_id: str, owner: str, ttl: float) -> None:
        self._database, self._token_id, self._owner, self._ttl = database, token_id, owner, ttl
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="claim-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopped.wait(self._ttl / 4):
            try:
                with self._database.unit_of_work() as uow:
                    renewed = renew_claim(uow, self._token_id, owner=self._owner, ttl_seconds=self._ttl)
                    uow.commit()
            except Exception as exc:  # a blip: the next beat tries again, within the TTL
                log.warning("could not renew the claim on %s (%s)", self._token_id, type(exc).__name__)
                continue
            if not renewed:
                log.warning("the claim on %s was lost; the registration will stop before committing", self._token_id)
                return
