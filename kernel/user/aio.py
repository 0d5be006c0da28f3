"""The asyncio task library: `AsyncL4`, one L4 thread whose system calls are coroutines.

Same methods, arguments, results and exceptions as the synchronous `kernel.user.client.L4` (both
build requests and shape answers in `client._Api`); only the transport differs: a
`zmq.asyncio` DEALER socket, so a blocked `wait` or `call` suspends the coroutine, not the
event loop. Works on the default asyncio loop and on uvloop (`uvloop.install()` or
`asyncio.Runner(loop_factory=uvloop.new_event_loop)`).

Contracts:
- An L4 thread is sequential: one call in flight per `AsyncL4`. Starting a second call
  while one is pending raises `errors.Busy` at once (nothing is sent). Coroutines that must
  block independently each need their own thread: `await l4.spawn_thread()`.
- The kernel answers every call exactly once. If the coroutine awaiting a call is cancelled,
  the kernel's answer is still owed: the next call on this `AsyncL4` first waits for it and
  throws it away, so answers never get out of step. (Cancelling a call with an infinite
  timeout therefore makes the next call wait until that call ends; use finite timeouts when
  you plan to cancel.)
- While waiting, the kernel's process is checked every `POLL_MS`: if it is gone, the call
  raises `errors.KernelGone` instead of hanging.

Ownership: an `AsyncL4` belongs to the event loop it was connected on.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import zmq
import zmq.asyncio

from . import errors
from .client import (ENV_KERNEL, NewThread, _Api, caps_from_env, close_connection,
                     connect_remote, hello_frames, parse_answer, secrets_from_env,
                     trouble_text)
from ..osutil import pid_alive


class AsyncL4(_Api):
    """One L4 thread for asyncio. Construct with `await AsyncL4.connect(...)` or `from_env()`."""

    POLL_MS = 1000   # how often a blocked call checks that the kernel still lives

    def __init__(self, kernel_sock: str, caps: dict[str, int] | None = None,
                 ctx: zmq.asyncio.Context | None = None, server_key: bytes | None = None) -> None:
        """Not connected yet: use `AsyncL4.connect` (HELLO needs an await). `kernel_sock`
        and `server_key` as for `L4`: a path, or `tcp://` with the kernel's public key."""
        self.ctx = ctx or zmq.asyncio.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.routing_id = os.urandom(16)     # unguessable: nobody can take our place
        self.sock.linger = 0
        self.server_key = server_key
        self._trouble: Any = None
        self._gone: str | None = None
        if kernel_sock.startswith("tcp://"):
            self.server_key, self._trouble = connect_remote(self.sock, kernel_sock, server_key)
        else:
            self.sock.connect("ipc://" + kernel_sock)
        self.kernel_sock = kernel_sock
        self.caps = dict(caps or {})
        self.kernel_pid = 0
        self.task_id = self.thread_id = 0
        self.task_name = ""
        self._in_flight = False   # a coroutine is inside _do
        self._owed = 0            # answers of cancelled calls still to be read and dropped

    @classmethod
    async def connect(cls, kernel_sock: str, secret: bytes, caps: dict[str, int] | None = None,
                      ctx: zmq.asyncio.Context | None = None,
                      server_key: bytes | None = None) -> "AsyncL4":
        """Connect to the kernel and prove which thread we are with its one-time secret."""
        self = cls(kernel_sock, caps, ctx, server_key)
        try:
            self.task_id, self.thread_id, self.task_name, self.kernel_pid = await self._do(
                hello_frames(secret))
        except BaseException:
            self.close()
            raise
        return self

    @classmethod
    async def from_env(cls) -> "AsyncL4":
        """Inside a task started by the launcher: the main thread, from L4_KERNEL/L4_SECRET."""
        if ENV_KERNEL not in os.environ:
            raise errors.NotAuthenticated(f"environment variable {ENV_KERNEL} is not set: "
                                          f"this process was not started as an L4 task")
        return await cls.connect(os.environ[ENV_KERNEL], secrets_from_env()[0], caps_from_env())

    async def spawn_thread(self) -> "AsyncL4":
        """A new L4 thread in this task with its own connection (for another coroutine)."""
        new: NewThread = await self.create_thread()
        return await AsyncL4.connect(self.kernel_sock, new.secret, self.caps, self.ctx,
                                     self.server_key)

    # -- transport -------------------------------------------------------------
    async def _recv(self) -> list[bytes]:
        """One whole answer; raises KernelGone if the kernel dies while we wait."""
        sock = self.sock
        if self._gone is not None:
            raise errors.KernelGone(f"kernel at {self.kernel_sock}: {self._gone}")
        while not await sock.poll(self.POLL_MS, zmq.POLLIN):  # type: ignore[call-arg]
            if self._trouble is not None:       # a remote kernel: only the connection tells
                if self._gone is None and self._trouble.get(zmq.EVENTS) & zmq.POLLIN:
                    self._gone = trouble_text((await self._trouble.recv_multipart())[0])
                if self._gone is not None:
                    raise errors.KernelGone(f"kernel at {self.kernel_sock}: {self._gone}")
                continue
            if self.kernel_pid and not pid_alive(self.kernel_pid):
                raise errors.KernelGone(f"the kernel (pid {self.kernel_pid}) is gone")
            if not os.path.exists(self.kernel_sock):
                raise errors.KernelGone("the kernel's socket is gone")
        return await sock.recv_multipart()

    async def _do(self, frames: list[bytes], receiving: bool = False,
                  shape: Callable[[Any], Any] | None = None) -> Any:
        if self._in_flight:
            raise errors.Busy("this AsyncL4 thread already has a call in flight; "
                              "use spawn_thread() for concurrent calls")
        self._in_flight = True
        try:
            while self._owed:             # answers of cancelled calls come first, in order
                await self._recv()
                self._owed -= 1
            await self.sock.send_multipart(frames)
            self._owed += 1               # until we have read it, this answer is owed
            got = await self._recv()
            self._owed -= 1
        finally:
            self._in_flight = False
        result = parse_answer(got, receiving)
        return shape(result) if shape is not None else result

    def close(self) -> None:
        close_connection(self.sock, self._trouble)
        self._trouble = None

    async def __aenter__(self) -> "AsyncL4":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["AsyncL4"]
