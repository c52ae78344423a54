"""The session activity: fill a job's `$Session{tag}{key}` placeholders from its verified token
(jobs/sessions.py) right before the job body runs."""

from __future__ import annotations

from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.models import ResolveSession
from jobs.sessions import SessionError, resolve_placeholders, verify_token


class SessionActivities:
    """Bound to the session secret for the worker's lifetime."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    @activity.defn(name="resolve_session")
    def resolve_session(self, req: ResolveSession) -> Any:
        token = req.session.token if req.session else None
        try:
            if req.session is not None:
                verify_token(self._secret, req.session.token, tag=req.session.tag)
            return resolve_placeholders(req.input, token=token, secret=self._secret)
        except SessionError as exc:
            raise ApplicationError(
                exc.message, type=f"Session_{exc.kind}", non_retryable=True
            ) from None
