"""`SystemdManager`: restarts units through systemd's D-Bus API, and `connect` to get one.

jeepney is used because it speaks D-Bus in pure Python over any unix socket, including systemd's
private peer-to-peer socket (`/run/systemd/private`), where there is no bus daemon: updock can
restart units on a host without dbus-daemon, as systemctl does. jeepney's blocking
`DBusConnection` cannot be used there (its constructor sends `Hello`, which the private socket
answers with an error), so this module keeps its own small loop over jeepney's pieces: the
EXTERNAL authentication lines, `Parser` and `Message.serialise`.

jeepney's untyped values (`Any`) stay inside this module; so do its exceptions, which become
`ServiceError` in `_translate`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from jeepney import (
    DBusAddress,
    HeaderFields,
    MatchRule,
    MessageType,
    Parser,
    Properties,
    new_method_call,
)
from jeepney.auth import BEGIN, AuthenticationError, make_auth_external
from jeepney.bus import get_bus
from jeepney.bus_messages import message_bus
from jeepney.wrappers import DBusErrorResponse

from updock.errors import ServiceError

SYSTEMD = DBusAddress(
    "/org/freedesktop/systemd1",
    bus_name="org.freedesktop.systemd1",
    interface="org.freedesktop.systemd1.Manager",
)
SERVICE_INTERFACE = "org.freedesktop.systemd1.Service"
UNIT_INTERFACE = "org.freedesktop.systemd1.Unit"
SYSTEM_PRIVATE_SOCKET = "/run/systemd/private"
SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"

# Matched here, on every message read. On the private socket signals carry no sender, so the
# rule names none; on a bus, the AddMatch rule (`_join_bus`) adds the sender.
_JOB_REMOVED = MatchRule(
    type="signal", interface=SYSTEMD.interface, member="JobRemoved", path=SYSTEMD.object_path
)

# Results of jobs nobody waits for (every job of the manager is signalled) are kept, oldest
# dropped first beyond this many, so a long-lived connection does not grow without bound.
_MAX_UNCLAIMED_RESULTS = 1024

_T = TypeVar("_T")


class SystemdManager:
    """A connection to one systemd manager (system or user), shared by the run's threads.

    systemd sends every signal of every unit to every connection on its private socket, and a
    restart makes dozens (`PropertiesChanged` at each state change, `JobNew`, `JobRemoved`):
    with a connection per thread, systemd would send, and updock parse, each of them once per
    thread. So one connection serves every thread: calls are sent under a lock, and one reader
    thread (`_read_loop`) reads every message and hands it over: a reply to the thread waiting
    for its serial, a `JobRemoved` signal's result to the thread waiting for that job (kept
    until claimed, so a signal that arrives before the reply naming its job is not missed).

    Args:
        sock: an authenticated D-Bus socket (see `connect`).
        address: where it is connected, for error messages.
        timeout: seconds each `restart` or `active_state` may take in all.
    """

    def __init__(self, sock: socket.socket, address: str, timeout: float) -> None:
        self._sock = sock
        self._address = address
        self._timeout = timeout
        self._parser = Parser()
        self._serials = itertools.count(1)
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._waiting: set[int] = set()  # serials of calls whose reply a thread waits for
        self._replies: dict[int, Any] = {}
        self._job_results: dict[str, str] = {}
        self._failure: BaseException | None = None  # why the reader stopped
        self._closed = False
        sock.settimeout(None)  # the reader waits for as long as the connection lives
        self._reader = threading.Thread(target=self._read_loop, name=f"dbus {address}", daemon=True)
        self._reader.start()

    def __enter__(self) -> SystemdManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def restart(self, unit: str) -> None:
        """Restart `unit` (job mode "replace") and wait until its job is removed.

        Raises:
            ServiceError: the job's result is not "done", systemd refused the restart (no such
                unit, access denied), the connection failed, or no result came within the
                timeout.
        """
        what = f'restarting systemd unit "{unit}"'
        deadline = time.monotonic() + self._timeout
        with self._translate(what):
            restart = new_method_call(SYSTEMD, "RestartUnit", "ss", (unit, "replace"))
            (job,) = self._call(restart, deadline)
            result = self._wait(lambda: self._job_results.pop(job, None), deadline)
        if result != "done":
            raise ServiceError(f'{what} failed: expected "done" but received "{result}"')

    def active_state(self, unit: str) -> str:
        """The unit's `ActiveState`: "active", "failed", "inactive", "activating", ...

        Raises:
            ServiceError: systemd refused the request, the connection failed, or timed out.
        """
        return str(self._properties(unit, [(UNIT_INTERFACE, "ActiveState")])[0])

    def job_pending(self, unit: str) -> bool:
        """Whether a job of the unit is queued or running (its `Job` property names one).

        Raises:
            ServiceError: systemd refused the request, the connection failed, or timed out.
        """
        (job,) = self._properties(unit, [(UNIT_INTERFACE, "Job")])
        if not isinstance(job, tuple) or not job:  # D-Bus `(uo)`: (job id, object path)
            raise ServiceError(f'systemd unit "{unit}" has a malformed Job property: {job!r}')
        return int(job[0]) != 0

    def describe(self, unit: str) -> str:
        """What systemd says of the unit, for error messages: states, result, main exit status.

        Raises:
            ServiceError: systemd refused the request, the connection failed, or timed out.
        """
        active, sub, result, status = self._properties(
            unit,
            [
                (UNIT_INTERFACE, "ActiveState"),
                (UNIT_INTERFACE, "SubState"),
                (SERVICE_INTERFACE, "Result"),
                (SERVICE_INTERFACE, "ExecMainStatus"),
            ],
        )
        return f"{active} ({sub}), result {result}, main process exit status {status}"

    def _properties(self, unit: str, names: list[tuple[str, str]]) -> list[object]:
        deadline = time.monotonic() + self._timeout
        values = []
        with self._translate(f'reading the state of systemd unit "{unit}"'):
            (path,) = self._call(new_method_call(SYSTEMD, "LoadUnit", "s", (unit,)), deadline)
            for interface, name in names:
                unit_object = DBusAddress(path, bus_name=SYSTEMD.bus_name, interface=interface)
                ((_signature, value),) = self._call(Properties(unit_object).get(name), deadline)
                values.append(value)
        return values

    def close(self) -> None:
        """Close the connection; jobs already started go on."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the reader
        self._reader.join(timeout=5)
        self._sock.close()

    def _join_bus(self) -> None:
        """On a message bus (not the private socket): say Hello and ask for JobRemoved."""
        deadline = time.monotonic() + self._timeout
        with self._translate(f"joining the bus at {self._address}"):
            self._call(message_bus.Hello(), deadline)
            rule = MatchRule(
                type="signal",
                sender=SYSTEMD.bus_name,
                interface=SYSTEMD.interface,
                member="JobRemoved",
                path=SYSTEMD.object_path,
            )
            self._call(message_bus.AddMatch(rule), deadline)
            # systemd emits its signals on a bus only while some client is subscribed.
            self._call(new_method_call(SYSTEMD, "Subscribe"), deadline)

    def _call(self, message: Any, deadline: float) -> tuple[Any, ...]:
        """Send a method call and return the body of its reply.

        Raises:
            DBusErrorResponse: the reply is an error.
        """
        with self._cond:
            serial = next(self._serials)
            self._waiting.add(serial)
        try:
            with self._send_lock:  # one message at a time on the socket
                self._sock.sendall(message.serialise(serial=serial))
            reply = self._wait(lambda: self._replies.pop(serial, None), deadline)
        finally:
            with self._cond:
                self._waiting.discard(serial)
                self._replies.pop(serial, None)
        if reply.header.message_type is MessageType.error:
            raise DBusErrorResponse(reply)
        return tuple(reply.body)

    def _wait(self, claim: Callable[[], _T | None], deadline: float) -> _T:
        """What `claim` takes (under the lock) once the reader has handed it over.

        Raises:
            TimeoutError: nothing by the deadline.
            ConnectionError: the connection failed or was closed meanwhile.
        """
        with self._cond:
            while (value := claim()) is None:
                if self._failure is not None or self._closed:
                    why = self._failure or "the connection was closed"
                    raise ConnectionError(str(why)) from self._failure
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                self._cond.wait(remaining)
            return value

    def _read_loop(self) -> None:
        """Read every message of the connection until it ends; hand each over (`_dispatch`)."""
        try:
            while True:
                data = self._sock.recv(65536)
                if not data:
                    raise ConnectionResetError("systemd closed the connection")
                self._parser.add_data(data)
                while (message := self._parser.get_next_message()) is not None:
                    self._dispatch(message)
        except Exception as exc:  # OSError, a message jeepney cannot parse: no waiter may hang
            with self._cond:
                self._failure = None if self._closed else exc
                self._closed = True
                self._cond.notify_all()

    def _dispatch(self, message: Any) -> None:
        with self._cond:
            serial = message.header.fields.get(HeaderFields.reply_serial)
            if serial in self._waiting:
                self._replies[serial] = message
            elif _JOB_REMOVED.matches(message):
                _id, job, _unit, result = message.body
                self._job_results[job] = result
                if len(self._job_results) > _MAX_UNCLAIMED_RESULTS:
                    del self._job_results[next(iter(self._job_results))]
            else:
                return  # a signal nobody waits for
            self._cond.notify_all()

    @contextlib.contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        """The one boundary where D-Bus, jeepney and socket errors become `ServiceError`."""
        try:
            yield
        except DBusErrorResponse as exc:
            detail = exc.data[0] if exc.data else ""
            raise ServiceError(f"{what} failed: {exc.name}: {detail}") from exc
        except TimeoutError as exc:
            raise ServiceError(f"{what} timed out after {self._timeout:g} s") from exc
        except Exception as exc:  # OSError, a message jeepney cannot parse: no waiter may hang
            raise ServiceError(f"{what} failed: {self._address}: {exc}") from exc


def connect(user: bool | None = None, timeout: float = 300) -> SystemdManager:
    """Connect to the system's systemd (as root) or to the user's own systemd manager.

    The manager's private socket is preferred; when it does not exist, the system bus (or, for
    the user manager, the session bus) is used instead.

    Args:
        user: the user manager (`$XDG_RUNTIME_DIR/systemd/private`) instead of the system one
            (`/run/systemd/private`). By default, the user manager unless running as root.
        timeout: seconds each restart (from the request to the job's result) may take.

    Raises:
        ServiceError: no connection could be made.
    """
    if user is None:
        user = os.geteuid() != 0
    if user:
        runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.geteuid()}"
        private = Path(runtime_dir, "systemd", "private")
        bus = os.environ.get("DBUS_SESSION_BUS_ADDRESS") or f"unix:path={runtime_dir}/bus"
    else:
        private = Path(SYSTEM_PRIVATE_SOCKET)
        bus = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or SYSTEM_BUS
    on_bus = not private.exists()
    address = bus if on_bus else str(private)
    try:
        sock = _open_authenticated(get_bus(bus) if on_bus else address, timeout)
    except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: a non-unix bus address
        why = f" (there is no {private})" if on_bus else ""
        raise ServiceError(f"cannot connect to systemd at {address}{why}: {exc}") from exc
    manager = SystemdManager(sock, address, timeout)
    if on_bus:
        try:
            manager._join_bus()
        except BaseException:
            manager.close()
            raise
    return manager


def _open_authenticated(path: str, timeout: float) -> socket.socket:
    """Connect to a D-Bus unix socket and authenticate with EXTERNAL (our uid).

    AUTH and BEGIN go out in one write, as sd-bus's own clients (systemctl) send them; the first
    message only after the server's OK. systemd's sd-bus server keeps whatever arrives in the same
    read as BEGIN in its buffer and looks at it only when the socket is readable again. jeepney's
    `prep_socket` sends BEGIN after the OK, right before the first message, so now and then that
    message (a RestartUnit, in the lab) sat unanswered until the connection closed.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(b"\0" + make_auth_external() + BEGIN)
        # Byte by byte: whatever follows the OK line is already a message (a signal).
        line = b""
        while not line.endswith(b"\r\n"):
            byte = sock.recv(1)
            if not byte:
                raise ConnectionResetError("the server closed the connection during AUTH")
            line += byte
        if not line.startswith(b"OK "):
            raise AuthenticationError(line)
    except BaseException:
        sock.close()
        raise
    return sock
