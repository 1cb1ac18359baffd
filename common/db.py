"""PostgreSQL access: one pg8000 connection per thread, reused, replaced after a failure.

Every pg8000 error is translated here: a lost or refused connection becomes `Unavailable`
(503), a unique-index violation becomes `UniqueViolation` for the store to name, and anything
else is a bug that surfaces as a 500. Sessions run in UTC because the engine's timestamps are
`without time zone` filled with NOW().
"""

from __future__ import annotations

import logging
import os
import select
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pg8000.core as pgcore
import pg8000.native as pg

from common import metrics
from common.config import Settings
from common.errors import Conflict, Unavailable

log = logging.getLogger(__name__)

# SQLSTATE classes that mean "the server is not there for us right now", not "your query is bad":
# 08 connection exception, 53 insufficient resources, 57 operator intervention (shutdown,
# cannot connect now), 40 serialization failure / deadlock (retryable by the caller).
UNAVAILABLE_CLASSES = ("08", "53", "57", "40")
CONNECT_TIMEOUT_SECONDS = 5
STATEMENT_TIMEOUT_MS = 15_000
Row = list[Any]


class UniqueViolation(Exception):
    """An INSERT hit a unique index; `constraint` names it so the store can explain which."""

    def __init__(self, constraint: str) -> None:
        super().__init__(constraint)
        self.constraint = constraint


class Session:
    """One connection and the statements prepared on it. Preparing once makes every later run
    of a statement a single round trip, instead of parse, describe and execute."""

    def __init__(self, conn: pg.Connection) -> None:
        self.conn = conn
        self.prepared: dict[str, pg.PreparedStatement] = {}

    def run(self, sql: str, params: dict[str, Any]) -> list[Row]:
        if not params:  # simple protocol: several statements may share one call
            return self.conn.run(sql) or []
        statement = self.prepared.get(sql)
        if statement is None:
            statement = self.prepared[sql] = self.conn.prepare(sql)
        return statement.run(**params) or []

    def close(self) -> None:
        try:
            self.conn.close()
        except (pg.Error, OSError):
            pass


class PooledSession(Session):
    """For a pooler in transaction mode (PgBouncer's pool_mode=transaction): outside a
    transaction, the pooler may hand whatever follows a Sync to another server connection,
    where a named statement does not exist, and pg8000's own unnamed run sends three Syncs.
    So each run parses an unnamed statement, binds, describes and executes it behind a single
    Sync: one round trip, like a prepared run, at the price of planning every time.
    It speaks pg8000's protocol layer directly; the PgBouncer tests catch a change there."""

    def __init__(self, conn: pg.Connection) -> None:
        super().__init__(conn)
        self.statements: dict[str, tuple[str, Callable[[dict[str, Any]], Any]]] = {}

    def run(self, sql: str, params: dict[str, Any]) -> list[Row]:
        if not params:
            return self.conn.run(sql) or []
        found = self.statements.get(sql)
        if found is None:
            found = self.statements[sql] = pg.to_statement(sql)
        statement, make_values = found
        conn = self.conn
        context = pgcore.Context(statement)
        conn.send_PARSE(pgcore.NULL_BYTE, statement)
        conn.send_BIND(pgcore.NULL_BYTE, pgcore.make_params(conn.py_types, make_values(params)))
        conn._send_message(pgcore.DESCRIBE, pgcore.PORTAL + pgcore.NULL_BYTE)
        conn.send_EXECUTE()
        pgcore._write(conn._sock, pgcore.SYNC_MSG)
        pgcore._flush(conn._sock)
        conn.handle_messages(context)
        return context.rows or []


class Database:
    """Thread-safe by construction: each thread talks over its own connection."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._local = threading.local()
        self._sessions: set[Session] = set()  # every thread's, so that close() reaches them all
        self._sessions_lock = threading.Lock()
        # TLS over a Unix socket buys nothing, and libpq ignores sslmode there too.
        self._tls = False if self._is_socket_dir() else tls_context(settings)
        self._startup_params = {"TimeZone": "UTC"}
        if settings.postgres_pooler == "none":
            # PgBouncer refuses a startup parameter it does not track: through a pooler, the
            # limit is the role's (docs/deploying.md: PgBouncer).
            self._startup_params["statement_timeout"] = str(STATEMENT_TIMEOUT_MS)

    def query(self, sql: str, **params: Any) -> list[Row]:
        """One statement in its own transaction. Reads are retried once on a fresh connection,
        so a server restart between requests costs no error; use `transaction` for writes."""
        try:
            return self._run(self._connection(), sql, params)
        except Unavailable:
            return self._run(self._connection(), sql, params)

    def execute(self, sql: str, **params: Any) -> list[Row]:
        """One write statement in its own transaction; never retried, since it may have run."""
        return self._run(self._connection(), sql, params)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        conn = self._connection()
        try:
            self._run(conn, "BEGIN", {})
        except Unavailable:  # a stale connection: nothing ran yet, so a fresh one is safe
            conn = self._connection()
            self._run(conn, "BEGIN", {})
        try:
            yield Transaction(self, conn)
        except BaseException:
            self._rollback(conn)
            raise
        self._run(conn, "COMMIT", {})

    def close(self) -> None:
        """Close every thread's connection, at shutdown or the end of a test; a later call
        reconnects."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, set()
        self._local = threading.local()
        for session in sessions:
            session.close()

    def release(self) -> None:
        """Close the calling thread's connection, if it has one: a thread about to end calls
        this, or its connection would stay open, unused, for the life of the process."""
        session: Session | None = getattr(self._local, "session", None)
        if session is None:
            return
        self._local.session = None
        with self._sessions_lock:
            self._sessions.discard(session)
        session.close()

    def _connection(self) -> Session:
        session: Session | None = getattr(self._local, "session", None)
        if session is None:
            pooled = self._settings.postgres_pooler == "transaction"
            connection = self._connect()
            session = PooledSession(connection) if pooled else Session(connection)
            self._local.session = session
            with self._sessions_lock:
                self._sessions.add(session)
        return session

    def listen(self, *channels: str) -> Listener:
        """A connection of its own that LISTENs on `channels`: a waiter wakes when a
        notification arrives instead of polling. Raises `Unavailable` like every call."""
        sock, conn = self._open()
        listener = Listener(self, sock, Session(conn))
        for channel in channels:
            listener.session.run(f'LISTEN "{channel}"', {})
        return listener

    def _connect(self) -> pg.Connection:
        return self._open()[1]

    def _open(self) -> tuple[socket.socket, pg.Connection]:
        s = self._settings
        try:
            sock = self._socket()
        except OSError as exc:
            log.warning("cannot connect to PostgreSQL at %s: %s", s.postgres_host, exc)
            raise _unavailable() from None
        return sock, self._handshake(sock)

    def _handshake(self, sock: socket.socket) -> pg.Connection:
        s = self._settings
        try:
            return pg.Connection(
                user=s.postgres_user,
                password=s.postgres_password or None,
                database=s.postgres_db,
                sock=sock,
                host=s.postgres_host,  # the name a verified certificate must carry
                ssl_context=self._tls,
                application_name="operator-service",
                startup_params=self._startup_params,
            )
        except (pg.InterfaceError, OSError) as exc:  # reset or cut mid-handshake
            sock.close()
            log.warning("cannot connect to PostgreSQL at %s: %s", s.postgres_host, exc)
            raise _unavailable() from None
        except pg.DatabaseError as exc:
            sock.close()
            # Wrong password, unknown database: an operator's fault, reported as unavailable.
            log.error("PostgreSQL refused the connection: %s", _describe(exc))
            raise _unavailable() from None

    def _is_socket_dir(self) -> bool:
        return self._settings.postgres_host.startswith("/")

    def _socket(self) -> socket.socket:
        """Our own socket, so that whatever fails later, we are the ones who close it."""
        s = self._settings
        if self._is_socket_dir():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(CONNECT_TIMEOUT_SECONDS)
                sock.connect(f"{s.postgres_host}/.s.PGSQL.{s.postgres_port}")
            except OSError:
                sock.close()
                raise
        else:
            sock = socket.create_connection(
                (s.postgres_host, s.postgres_port), timeout=CONNECT_TIMEOUT_SECONDS
            )
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        # After the handshake, a statement may run up to its limit before the socket gives up.
        sock.settimeout(CONNECT_TIMEOUT_SECONDS + STATEMENT_TIMEOUT_MS / 1000)
        return sock

    def _run(self, conn: Session, sql: str, params: dict[str, Any]) -> list[Row]:
        try:
            return conn.run(sql, params)
        except pg.DatabaseError as exc:
            fields = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
            code = str(fields.get("C", ""))
            if code == "23505":
                raise UniqueViolation(str(fields.get("n", ""))) from None
            if code == "P0001":  # RAISE EXCEPTION in our own schema: its message is for people
                raise Conflict(str(fields.get("M", "conflict"))) from None
            # 0A000: a prepared plan outlived a schema upgrade; a fresh connection re-prepares.
            if code[:2] in UNAVAILABLE_CLASSES or code == "0A000":
                self._discard(conn)
                log.warning("PostgreSQL unavailable: %s", _describe(exc))
                raise _unavailable() from None
            if code in ("42P01", "42883", "42703"):  # undefined table / function / column
                log.error("database schema missing: %s", _describe(exc))
                raise _unavailable("database not initialised: POST /pgsqlinit first") from None
            raise
        except (pg.InterfaceError, OSError) as exc:
            self._discard(conn)
            log.warning("PostgreSQL connection lost: %s", exc)
            raise _unavailable() from None

    def _rollback(self, conn: Session) -> None:
        if getattr(self._local, "session", None) is conn:
            try:
                conn.run("ROLLBACK", {})
            except (pg.Error, OSError):
                self._discard(conn)

    def _discard(self, conn: Session) -> None:
        if getattr(self._local, "session", None) is conn:
            self._local.session = None
        with self._sessions_lock:
            self._sessions.discard(conn)
        conn.close()


class Listener:
    """A LISTENing connection. `wait` blocks on the socket itself until the server sends
    something or the timeout passes, then collects what arrived with one round trip."""

    def __init__(self, db: Database, sock: socket.socket, session: Session) -> None:
        self._db = db
        self._sock = sock
        self.session = session

    def wait(self, timeout: float, *, wake: int | None = None) -> list[tuple[str, str]]:
        """(channel, payload) of every notification since the last call; may be empty.
        A byte written to the pipe `wake` (a read end) ends the wait early."""
        conn = self.session.conn
        if not conn.notifications and not self._buffered():
            readable, _, _ = select.select(
                [self._sock] + ([wake] if wake is not None else []), [], [], timeout
            )
            if wake is not None and wake in readable:
                os.read(wake, 4096)
        self._db._run(self.session, "SELECT 1", {})  # reads whatever the server sent
        arrived = [(channel, payload) for _, channel, payload in conn.notifications]
        conn.notifications.clear()
        return arrived

    def _buffered(self) -> bool:
        """Whether bytes already wait in pg8000's read buffer, where select() cannot see them:
        a notification the server sent just after answering the last SELECT 1 lands there."""
        stream = getattr(self.session.conn, "_sock", None)
        if stream is None or getattr(self.session.conn, "_usock", None) is not self._sock:
            return False  # TLS wraps our socket: select() alone, and the fallback poll
        timeout = self._sock.gettimeout()
        self._sock.setblocking(False)  # peek then reads only what is there, never waits
        try:
            return bool(stream.peek(1))
        except OSError:
            return False
        finally:
            self._sock.settimeout(timeout)

    def close(self) -> None:
        self.session.close()


class Transaction:
    """Statements inside one BEGIN ... COMMIT on the calling thread's connection."""

    def __init__(self, db: Database, conn: Session) -> None:
        self._db = db
        self._conn = conn

    def run(self, sql: str, **params: Any) -> list[Row]:
        return self._db._run(self._conn, sql, params)

    # Inside a transaction, a read is a statement like any other: the same name as
    # Database.query lets a query serve both.
    query = run


def _describe(exc: pg.DatabaseError) -> str:
    fields = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    return f"{fields.get('C', '?')} {fields.get('M', exc)}"


def tls_context(settings: Settings) -> ssl.SSLContext | bool | None:
    """pg8000's `ssl_context` for POSTGRES_SSLMODE: False is plain text, None tries TLS and
    falls back to plain text, True is TLS unverified, a context is TLS as the context says."""
    mode = settings.postgres_sslmode
    if mode == "disable":
        return False
    if mode == "prefer":
        return None
    if mode == "require":
        return True
    cafile = settings.postgres_sslrootcert
    return ssl.create_default_context(cafile=str(cafile) if cafile else None)


def _unavailable(message: str = "database unavailable") -> Unavailable:
    metrics.dependency_failed("database")
    return Unavailable(message)
