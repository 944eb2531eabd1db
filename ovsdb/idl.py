"""One live replica of an OVSDB database through the `ovs` Python IDL, kept current by a background loop.

The controller runs on eventlet (Ryu), the CLI-free tests on plain threads; both pass a `hub` with
`spawn(fn)`, `sleep(s)`, `Semaphore()` and `Event()` (ryu.lib.hub has exactly these; `ThreadHub` below is the
plain-thread one). The IDL is not thread-safe, so every use of it holds `self.lock`.
"""
import collections
import itertools
import json
import logging
import os
import select
import threading
import time

import ovs.db.idl
import ovs.jsonrpc
import ovs.poller
import ovs.stream

LOG = logging.getLogger("weft.ovsdb")
TXN_DONE = (ovs.db.idl.Transaction.SUCCESS, ovs.db.idl.Transaction.UNCHANGED)
RECONNECT_MAX_BACKOFF_MS = 1000


class ThreadHub:
    """The hub interface on plain threads (for tools and tests that run without eventlet)."""

    @staticmethod
    def spawn(fn, *args):
        thread = threading.Thread(target=fn, args=args, daemon=True)
        thread.start()
        return thread

    sleep = staticmethod(time.sleep)
    Semaphore = threading.Semaphore
    Event = threading.Event


class _Idl(ovs.db.idl.Idl):
    """The IDL, with its per-row change notifications passed on to a listener (see OvsdbConnection)."""
    listener = None

    def notify(self, event, row, updates=None):
        if self.listener is not None:
            self.listener.row_changed(event, row)


class TransactionError(Exception):
    """The database refused a transaction; the message is the server's reason."""


class Unavailable(TransactionError):
    """The transaction was never sent (no connection, no cluster leader, no lock, or the connection is
    stopping): nothing was written, so trying again is safe."""


class OutcomeUnknown(TransactionError):
    """The transaction was sent but its answer never came (the connection was lost, the server
    restarted or lost its leadership), and the replica could not tell whether it committed."""


class _Txn(ovs.db.idl.Transaction):
    """A transaction that remembers whether it was sent and whether the server answered it: the IDL
    reports "try again" both for a verify that failed (answered: nothing committed, so rebuild) and for
    a connection lost with the request in flight (unanswered: it may have committed)."""
    sent = replied = False
    persist_uuids = False

    def insert(self, table, new_uuid=None, persist_uuid=None):
        # A row inserted under the uuid we chose can be looked for after a lost answer: if it is
        # there, the (atomic) transaction committed.
        return super().insert(table, new_uuid, self.persist_uuids if persist_uuid is None else persist_uuid)

    def _process_reply(self, msg):
        self.replied = True
        super()._process_reply(msg)

    def inserted(self):
        """(table, uuid) of the rows this transaction inserts under their own uuid (before commit)."""
        return [(row._table.name, row.uuid) for row in self._txn_rows.values()
                if row._data is None and row._changes is not None and row._persist_uuid]


def use_tls(private_key, certificate, ca_cert):
    """The identity (and the CA it trusts) this process presents on every ssl: OVSDB remote. python-ovs
    keeps one per process; without it, opening an ssl: remote raises TypeError."""
    ovs.stream.Stream.ssl_set_private_key_file(private_key)
    ovs.stream.Stream.ssl_set_certificate_file(certificate)
    ovs.stream.Stream.ssl_set_ca_cert_file(ca_cert)


def fetch_schema(remote, database, timeout=10.0):
    """Asks a server for a database's schema, so the IDL matches whatever OVS version a host runs."""
    error, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(remote), timeout * 1000)
    if error:
        raise OSError(error, f"cannot connect to {remote}: {os.strerror(error)}")
    rpc = ovs.jsonrpc.Connection(stream)
    try:
        error, reply = rpc.transact_block(ovs.jsonrpc.Message.create_request("get_schema", [database]))
    finally:
        rpc.close()
    if error or reply.error:
        raise OSError(error or 0, f"get_schema {database} from {remote} failed: {reply and reply.error}")
    return reply.result


class _Job:
    def __init__(self, build, attempts, done, unlocked=False):
        self.build, self.attempts, self.done = build, attempts, done
        self.unlocked = unlocked  # may commit without the connection's lock (in a transaction of its own)
        self.result = self.error = None
        self.lost_at = None  # when the answer to the transaction carrying it was lost


PATIENCE = 5.0  # seconds a write waits for a usable connection, or for one to check a lost answer on


class OvsdbConnection:
    """Monitors `tables` ({table: [columns] or None for all}) of a database and calls `on_change(self)`
    whenever its contents or its connectedness change.

    One loop owns the IDL and its socket: eventlet forbids two green threads waiting on one socket,
    and the IDL is not thread-safe. Writers queue a job and wake the loop through a pipe; readers
    take `self.lock`, which the loop holds only while it updates the replica (never while it waits).
    `on_change` runs on the loop, so it must not call `transact` itself (it would wait on itself).

    `listener`, if given, keeps its own model of the contents up to date row by row, so that a change
    costs what it touches and not a walk of the database: `listener.row_changed(event, row)` for each
    row the server created, updated or deleted ("create"/"update"/"delete"; a deleted row has only
    its uuid to go by), and `listener.reload(tables)` to rebuild from scratch whenever the replica was
    loaded anew (first connection, reconnection: the IDL then clears its rows without notifications)
    or `listener.row_counts()` disagrees with the replica. Both run on the loop, under `self.lock`.
    """

    def __init__(self, hub, remote, schema_json, tables, on_change=None, name=None, listener=None,
                 persist_uuids=False, patience=PATIENCE, probe_interval=None, lock_name=None):
        helper = ovs.db.idl.SchemaHelper(schema_json=schema_json)
        for table, columns in tables.items():
            if columns is None:
                helper.register_table(table)
            else:
                helper.register_columns(table, columns)
        self.hub = hub
        self.remote = remote
        self.name = name or remote
        # `remote` may list a Raft cluster's members (comma-separated): the IDL then talks only to the
        # leader, following it when it changes (it watches each server's _Server database), and keeps
        # its replica across the move (monitor_cond_since: only what it missed is sent).
        self.idl = _Idl(remote, helper, leader_only=True)
        # After trying each remote once the session backs off, by default up to 8 s: an election
        # takes about one election timer (1 s), so look again at least every second.
        self.idl._session.reconnect.set_backoff(1000, RECONNECT_MAX_BACKOFF_MS)
        if probe_interval:  # ms of silence before an echo, and as long again before giving up
            # Set on the session itself: the IDL's own argument is ignored for unix: remotes, and a
            # hung server behind a unix socket would then look connected forever.
            self.idl._session.reconnect.set_probe_interval(probe_interval)
        self.idl.listener = self.listener = listener
        # An OVSDB lock (as ovn-northd takes one): the server grants it to one client at a time, and
        # drops it with that client's session. `has_lock` follows the server's word.
        self.lock_name = lock_name
        self.has_lock = False
        if lock_name:
            self.idl.set_lock(lock_name)
        self.lock = hub.Semaphore()
        self.on_change = on_change
        self.connected = False
        self._running = False
        self._seen_seqno = 0
        self._reload_pending = False
        self._jobs = collections.deque()
        self._txn, self._batch = None, []  # the transaction in flight and the jobs it carries
        self._solo = 0  # after a refused batch: how many jobs to commit one by one
        # Jobs whose transaction was sent but not answered, waiting for a connection to check on: (txn, jobs)
        self._lost = []
        # Inserts under uuids we choose (the server must know the insert's "uuid" member: OVSDB 3.1),
        # so that a lost answer can be checked against the replica.
        self.persist_uuids = persist_uuids
        self.patience = patience
        self._down_since = time.monotonic()  # when the connection was last seen unusable (None: usable)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_pending = False
        self._wake_writing = hub.Semaphore()

    def start(self):
        self._running = True
        self.hub.spawn(self._loop)
        return self

    def stop(self):
        self._running = False
        self._wakeup()

    @property
    def synced(self):
        """True once the replica holds the database's contents and the session is up."""
        return self.connected and self.idl.has_ever_connected()

    @property
    def change_seqno(self):
        """Changes whenever the replica's contents do."""
        return self.idl.change_seqno

    def _wakeup(self):
        # One byte in the pipe is enough to wake the loop. Eventlet's os.write waits for the pipe to be
        # writable before it writes, and a second green thread waiting on the same pipe meanwhile is an
        # error (it was a 500 for a write that then committed): whoever finds a wake-up being written
        # leaves it to that one, which lands after both callers queued their jobs.
        if self._wake_pending or not self._wake_writing.acquire(blocking=False):
            return
        try:
            self._wake_pending = True
            os.write(self._wake_w, b"x")
        except OSError:  # closed (the loop ended) or full (a wake-up is already there)
            pass
        finally:
            self._wake_writing.release()

    def _loop(self):
        try:
            while self._running:
                self._drain_wakeups()
                with self.lock:
                    self.idl.run()
                    # The IDL has no public "is the session up" call; its session object has one.
                    connected = (self.idl._session.is_connected()
                                 and self.idl.state == self.idl.IDL_S_MONITORING)
                    has_lock = connected and self.idl.has_lock
                    changed = (self.idl.change_seqno != self._seen_seqno or connected != self.connected
                               or has_lock != self.has_lock)
                    if self.listener is not None:
                        self._reload_pending |= connected and not self.connected
                        if connected and (changed or self._reload_pending):
                            self._check_listener()
                    self._seen_seqno = self.idl.change_seqno
                    self.connected, self.has_lock = connected, has_lock
                    if connected:
                        self._down_since = None
                    elif self._down_since is None:
                        self._down_since = time.monotonic()
                    self._advance_jobs()
                if changed and self.on_change:
                    self.on_change(self)
                poller = ovs.poller.Poller()
                self.idl.wait(poller)
                if self._txn is not None:
                    self._txn.wait(poller)
                elif self._jobs and self.connected:
                    poller.immediate_wake()
                poller.fd_wait(self._wake_r, ovs.poller.POLLIN)
                poller.timer_wait(1000)  # also how often waiting writes are checked against `patience`
                poller.block()
        finally:
            self.idl.close()
            closed = f"the connection to {self.remote} was closed"
            for job in self._batch:
                self._finish(job, error=OutcomeUnknown(f"{closed} with the write in flight: whether it "
                                                       "committed is unknown"))
            for _, jobs in self._lost:
                for job in jobs:
                    self._finish(job, error=OutcomeUnknown(f"{closed} before the write could be checked: "
                                                           "whether it committed is unknown"))
            for job in list(self._jobs):
                self._finish(job, error=Unavailable(f"{closed} before the write was sent: nothing was written"))
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _check_listener(self):
        """Rebuilds the listener's model after a (re)load, or if it lost track of the replica. Only
        between transactions: rows of a transaction in flight sit in the replica before they commit."""
        if self.idl.txn is not None:
            return
        actual = {name: len(table.rows) for name, table in self.idl.tables.items()}
        if not self._reload_pending and self.listener.row_counts() != actual:
            LOG.warning("%s: the row-by-row model disagreed with the replica (%s != %s); rebuilding it",
                        self.name, self.listener.row_counts(), actual)
            self._reload_pending = True
        if self._reload_pending:
            self.listener.reload(self.idl.tables)
            self._reload_pending = False

    def _drain_wakeups(self):
        # Read only what select says is there: eventlet's green os.read would park on an empty pipe.
        self._wake_pending = False
        while select.select([self._wake_r], [], [], 0)[0]:
            os.read(self._wake_r, 512)

    def _advance_jobs(self):
        """Commits the queued writes: all that are waiting go in one transaction (a burst of API calls
        costs one round trip, not one each). If the database refuses that batch, its jobs are retried
        one by one, so only the write at fault fails, with the database's reason.

        A write is re-run only when that is known to be safe: it was never sent, or the server answered
        that it did not commit (a verify failed). One whose answer was lost with the connection is
        checked against the replica once connected again (see _check_lost), never sent twice."""
        Txn = ovs.db.idl.Transaction
        self._check_lost()
        self._give_up()
        while self._jobs or self._txn:
            if self._txn is None and not self._start_batch():
                return
            txn = self._txn
            status = self._commit()
            if status == Txn.INCOMPLETE:
                txn.sent = True
                return
            batch, self._txn, self._batch = self._batch, None, []
            if status in TXN_DONE:
                for job in batch:
                    self._finish(job, result=job.result(txn) if callable(job.result) else job.result)
            elif status == Txn.TRY_AGAIN and txn.sent and not txn.replied:
                self._lose(txn, batch)
            elif status == Txn.TRY_AGAIN and not txn.sent:
                return  # the connection broke as it was sent: the jobs wait for the next one
            elif status == Txn.TRY_AGAIN:  # a concurrent write changed what the builds read: rebuild
                for job in batch:
                    job.attempts -= 1
                    if job.attempts < 1:
                        self._finish(job, error=TransactionError(
                            "the database kept changing under the transaction; try again"))
                return  # rebuild on the next pass, from the replica's fresh contents
            elif status == Txn.NOT_LOCKED:
                for job in batch:
                    self._finish(job, error=Unavailable(
                        f"{self.name}: this controller does not hold the database's lock (it is not the active "
                        "one, or just stopped being it): nothing was written; try again"))
            elif len(batch) > 1:
                self._solo += len(batch)
            else:
                self._finish(batch[0], error=TransactionError(_describe_error(txn, status)))

    def _start_batch(self):
        """Builds the next transaction from the queue; False when there is nothing to commit yet (or
        no usable connection to commit it on: built on a stale replica, it would be refused or wrong)."""
        if not self._jobs or not self.connected:
            return False
        batch = [self._jobs[0]] if self._solo or self._jobs[0].unlocked else \
            list(itertools.takewhile(lambda job: not job.unlocked, self._jobs))
        txn = _Txn(self.idl)
        txn.persist_uuids = self.persist_uuids
        # Where the builds of one batch leave what they picked (a key, an address), so the next build
        # in the same transaction does not pick it too: the replica has neither until the commit.
        txn.scratch = {}
        for job in batch:
            try:
                job.result = job.build(txn, self.idl.tables)
            except Exception as err:  # a failing build fails its caller, not its batch or the loop
                txn.abort()
                self._finish(job, error=err)
                return bool(self._jobs) and self._start_batch()
        txn.checkable = txn.inserted()  # what tells, after a lost answer, whether it committed
        self._txn, self._batch = txn, batch
        return True

    def _lose(self, txn, batch):
        """The connection went with the transaction's answer: it may have committed or not."""
        LOG.warning("%s: the connection was lost with a transaction in flight (%d write(s)); %s", self.name,
                    len(batch), "checking the replica for it once connected again" if txn.checkable else
                    "its outcome is unknown")
        now = time.monotonic()
        for job in batch:
            self._take(job)
            job.lost_at = now
        self._lost.append((txn, batch))

    def _check_lost(self):
        """Settles the writes whose answer was lost, once the replica is the server's again: a
        transaction is atomic, so one row it inserted (under the uuid we chose) being there means all of
        it committed. Without such a row, or with it absent (it may not have committed, or may yet, if a
        cluster leader changed meanwhile), the outcome is reported unknown."""
        if not self.connected:
            return
        for txn, jobs in self._lost:
            committed = any(uuid in self.idl.tables[table].rows for table, uuid in txn.checkable)
            for job in jobs:
                if committed:
                    self._finish(job, result=job.result(txn) if callable(job.result) else job.result)
                else:
                    self._finish(job, error=OutcomeUnknown(
                        f"the connection to {self.remote} was lost before the database answered, and the "
                        f"replica cannot tell whether the write committed{' (it is not there now)' if txn.checkable else ''}"))
        self._lost = []

    def _give_up(self):
        """Writes do not wait forever for a usable connection: after `patience` seconds without one,
        a write not sent fails as Unavailable (nothing written), one sent as OutcomeUnknown."""
        now = time.monotonic()
        for txn, jobs in list(self._lost):
            if now - jobs[0].lost_at > self.patience:
                self._lost.remove((txn, jobs))
                for job in jobs:
                    self._finish(job, error=OutcomeUnknown(
                        f"the connection to {self.remote} was lost before the database answered, and did not "
                        f"come back within {self.patience:.0f} s to check: whether the write committed is unknown"))
        if self._down_since is None or now - self._down_since <= self.patience:
            return
        for job in self._batch:  # sent on a connection that has been down since
            self._finish(job, error=OutcomeUnknown(
                f"no answer from {self.remote}, down for {self.patience:.0f} s with the write in flight: "
                "whether it committed is unknown"))
        self._txn, self._batch = None, []
        for job in list(self._jobs):
            self._finish(job, error=Unavailable(
                f"no usable connection to {self.remote} for {self.patience:.0f} s (is it up? a cluster electing "
                "its leader?): nothing was written; try again"))

    def _take(self, job):
        """Takes a job off the queue."""
        if job in self._jobs:
            if self._solo:
                self._solo -= 1
            self._jobs.remove(job)

    def _commit(self):
        """Commits the transaction in flight. The IDL puts the lock (when one is configured) in every
        transaction, so that one sent after losing the lock fails; a job marked `unlocked` (what a
        controller records about itself while another holds the lock) goes without it."""
        if not (self._batch and self._batch[0].unlocked and self.lock_name):
            return self._txn.commit()
        self.idl.lock_name = None  # only the first commit() reads it: it is the one that sends
        try:
            return self._txn.commit()
        finally:
            self.idl.lock_name = self.lock_name

    def _finish(self, job, result=None, error=None):
        self._take(job)
        job.result, job.error = result, error
        job.done.set()

    def server(self):
        """Which remote the session is on (the leader, for a cluster) and whether the database is
        clustered there: {"remote": ..., "clustered": bool}, from the server's _Server database."""
        with self.lock:
            remote = self.idl._session.reconnect.get_name() if self.idl._session.is_connected() else None
            databases = (self.idl.server_tables or {}).get("Database")
            clustered = any(row.name == self.idl._db.name and row.model == "clustered"
                            for row in (databases.rows.values() if databases else ()))
        return {"remote": remote, "clustered": clustered}

    def wait_synced(self, timeout):
        deadline = time.monotonic() + timeout
        while not self.synced:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no connection to the OVSDB server at {self.remote}")
            self.hub.sleep(0.02)

    def rows(self, table):
        return self.idl.tables[table].rows.values()

    def transact(self, build, attempts=5, timeout=30.0, unlocked=False):
        """Runs `build(txn, tables)` in a transaction on the loop and waits for the commit, retrying
        when a concurrent write changed what it read. Returns build's result (or, if that is callable,
        its result called with the committed txn, so it can resolve inserted uuids). `unlocked`:
        it may commit without holding the connection's lock.

        Raises TransactionError with the database's reason when it refused; Unavailable when the write
        was never sent (safe to retry); OutcomeUnknown when it was sent and may or may not have
        committed (check, then retry)."""
        if not self._running:
            raise Unavailable(f"not connected to {self.remote}: nothing was written")
        job = _Job(build, attempts, self.hub.Event(), unlocked)
        self._jobs.append(job)
        self._wakeup()
        job.done.wait(timeout)
        if not job.done.is_set():
            with self.lock:  # the loop holds it while it sends: the job cannot leave the queue meanwhile
                if not job.done.is_set():
                    if job in self._jobs and job not in self._batch:
                        self._take(job)
                        raise Unavailable(f"no answer from {self.remote} within {timeout:.0f} s; the write was "
                                          "not sent and is withdrawn: nothing was written")
                    raise OutcomeUnknown(f"no answer from {self.remote} within {timeout:.0f} s to a write it was "
                                         "sent: whether it committed is unknown")
        if job.error:
            raise job.error
        return job.result


def _describe_error(txn, status):
    detail = txn.get_error()
    try:
        parsed = json.loads(detail)
        detail = parsed.get("details") or parsed.get("error") or detail
    except (TypeError, ValueError, AttributeError):
        pass
    return f"{status}: {detail}" if detail else status
