"""MORI-IO's TransferStatus and WaitAll on ringxfer's statuses.

A TransferStatus starts in INIT. A transfer the engine starts binds it to ringxfer's
status of that transfer (IN_PROGRESS at once; its final code and message are taken over
when ringxfer's status is final); results known at the call (a size of 0, bad
arguments, no backend) are set before the call returns. Statuses made by the caller are
driven with SetCode/SetMessage/Update, and Wait/WaitFor wait for those too. Every wait
releases the GIL."""

import threading
import time

from ._enums import _ERR_BEGIN, StatusCode, _from_ringxfer

_cond_lock = threading.Lock()  # creates the per-status condition variables
_OPEN = (StatusCode.INIT, StatusCode.IN_PROGRESS)  # codes that do not end a status


class TransferStatus:
    """The state of one transfer: MORI-IO's ``mori.cpp.TransferStatus``."""

    __slots__ = ("_code", "_message", "_inner", "_cond", "__weakref__")

    def __init__(self):
        self._code = StatusCode.INIT
        self._message = ""
        self._inner = None  # ringxfer's status while the transfer it stands for runs
        self._cond = None  # made when somebody waits for a code set by the caller

    # -- the engine's side --
    def _attach(self, inner) -> None:
        """Binds the status to a started ringxfer transfer. A thread already waiting on
        it (a status the caller had set IN_PROGRESS) is woken to wait for the transfer."""
        self._inner = inner  # before the code: a waiter that sees IN_PROGRESS finds it
        self._message = ""
        self._code = StatusCode.IN_PROGRESS
        self._notify()
        self._sync()

    def _sync(self) -> None:
        inner = self._inner
        if inner is not None and inner.done():
            code, message = _from_ringxfer(inner.Code(), inner.Message())
            if self._inner is inner:  # a caller's SetCode/Update meanwhile wins
                self._message = message
                self._code = code
                self._inner = None

    def _notify(self) -> None:
        cond = self._cond
        if cond is not None:
            with cond:
                cond.notify_all()

    # -- MORI's methods --
    def Code(self) -> StatusCode:
        self._sync()
        return self._code

    def Message(self) -> str:
        self._sync()
        return self._message

    def Init(self) -> bool:
        return self.Code() is StatusCode.INIT

    def InProgress(self) -> bool:
        return self.Code() is StatusCode.IN_PROGRESS

    def Succeeded(self) -> bool:
        return self.Code() is StatusCode.SUCCESS

    def Failed(self) -> bool:
        return self.Code().value > _ERR_BEGIN

    def SetCode(self, code: StatusCode) -> None:
        """Sets the code, whatever it was. A final code ends the status (a transfer
        still bound to it finishes unseen); INIT or IN_PROGRESS leaves a bound transfer
        to finish it, as MORI's backend does."""
        code = StatusCode(code)
        self._sync()
        if code not in _OPEN:
            self._inner = None
        self._code = code
        self._notify()

    def SetMessage(self, message: str) -> None:
        self._sync()
        self._message = str(message)

    def Update(self, code: StatusCode, message: str) -> None:
        """Sets code and message unless the status already failed (the first error
        stays)."""
        code = StatusCode(code)
        self._sync()
        if self._code.value > _ERR_BEGIN:
            return
        if code not in _OPEN:
            self._inner = None
        self._message = str(message)
        self._code = code
        self._notify()

    def Wait(self) -> None:
        """Blocks until the status is no longer IN_PROGRESS (the GIL is released)."""
        self.WaitFor(-1)

    def WaitFor(self, timeout_ms: int = -1) -> StatusCode:
        """The code once it is not IN_PROGRESS, or IN_PROGRESS after ``timeout_ms``
        (negative: no limit; 0: look once). A status never started returns INIT at once."""
        timeout_ms = int(timeout_ms)
        code = self.Code()
        if code is not StatusCode.IN_PROGRESS or timeout_ms == 0:
            return code
        inner = self._inner
        if inner is not None:
            inner.WaitFor(timeout_ms)  # ringxfer's wait: GIL released
            return self.Code()
        # IN_PROGRESS set by the caller: wait for its SetCode/Update, or for a transfer
        # the engine binds to it meanwhile (_attach wakes this wait).
        if self._cond is None:
            with _cond_lock:
                if self._cond is None:
                    self._cond = threading.Condition(threading.Lock())
        deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000.0
        while self.Code() is StatusCode.IN_PROGRESS:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            inner = self._inner
            if inner is not None:
                inner.WaitFor(-1 if left is None else max(1, int(left * 1000)))
                continue
            with self._cond:
                if self._inner is None and self._code is StatusCode.IN_PROGRESS:
                    self._cond.wait(left)
        return self.Code()

    def WaitBusy(self, timeout_ms: int = -1) -> StatusCode:
        """MORI's busy-polling wait; the same as WaitFor here."""
        return self.WaitFor(timeout_ms)

    def __repr__(self) -> str:
        code = self.Code()
        tail = f", {self._message!r}" if self._message else ""
        return f"TransferStatus({code.name}{tail})"


def wait_all(statuses, timeout_ms: int = -1) -> StatusCode:
    """MORI-IO's IOEngine.WaitAll: SUCCESS when every status succeeded; otherwise the
    first status (in list order) that is not SUCCESS once waited for, where a failure
    outranks IN_PROGRESS; IN_PROGRESS when ``timeout_ms`` (one deadline for all; 0:
    look once; negative: no limit) ran out first. None entries are skipped."""
    timeout_ms = int(timeout_ms)
    live = [s for s in statuses if s is not None]
    if not live:
        return StatusCode.SUCCESS
    if timeout_ms != 0:
        inners = [s._inner for s in live if s._inner is not None]
        if inners:
            import ringxfer

            ringxfer.wait_all(inners, timeout_ms)  # one shared deadline, GIL released
        deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000.0
        for s in live:  # statuses driven by their callers
            if s._inner is None and s.Code() is StatusCode.IN_PROGRESS:
                left = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
                s.WaitFor(left)
    pending = False
    for s in live:
        code = s.Code()
        if code is StatusCode.IN_PROGRESS:
            pending = True
        elif code is not StatusCode.SUCCESS:
            return code
    return StatusCode.IN_PROGRESS if pending else StatusCode.SUCCESS
