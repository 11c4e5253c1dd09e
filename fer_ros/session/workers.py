"""Where a batch's per-session tasks run: this process, local worker processes, or a Dask cluster.

Each runner takes a task function ``function(task, emit, threads) ->
outcome`` (a module-level function, so it pickles by reference) and tasks
(picklable, each with a unique ``key``), and yields
``(task, outcome)`` as tasks finish, in any order; ``outcome`` is a
:class:`WorkerLost` when the task's process died (killed, out of memory,
a crash in native code) or an exception the task raised.  ``emit(event)``
sends a small dict to the caller's ``on_event`` while the task runs
(progress; a task's first event has ``"task": task.key``);
``threads`` is how many CPU threads the task may use where it
runs (its share of its machine's cores).

- :class:`InProcessWorkers`: one task after another, in this process.
- :class:`LocalWorkers`: ``jobs`` worker processes (spawned, so each loads
  its own models and sets its thread counts before any numeric library
  is imported).  A worker that dies takes the pool with it: unfinished
  tasks are run again, those that were running one at a time, and a task
  whose worker died while it ran alone is given up (:class:`WorkerLost`).
- :class:`DaskWorkers`: a Dask distributed cluster (``dask`` and
  ``distributed`` are optional; :class:`RunnerError` says how to install
  them).  Dask itself reschedules the tasks of a lost worker.

Only the standard library is imported at module level: a spawned worker
imports this module before its initializer sets the thread environment.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import re
import signal
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Dict, Generator, Iterator, List, Optional, Sequence, Tuple

#: Seconds between looks at the progress events while waiting for tasks.
POLL_S = 0.2

#: Seconds to wait for a Dask scheduler to answer.
CONNECT_TIMEOUT_S = 10

#: A scheduler address: protocol://host:port.
SCHEDULER_ADDRESS = re.compile(r"^[a-z]+://[^\s/]+:\d+/?$")

Event = Dict[str, Any]
Emit = Callable[[Event], None]
TaskFunction = Callable[[Any, Emit, Optional[int]], Any]
Finished = Tuple[Any, Any]

#: In a local worker process: the queue its events go to, and its thread count.
_EVENTS: Optional[Any] = None
_THREADS: Optional[int] = None


class RunnerError(RuntimeError):
    """The workers cannot be used (no scheduler, dask missing); one line."""


@dataclass
class WorkerLost:
    """A task whose worker process died (or was lost) while it ran.

    :param reason: what happened, in words.
    """

    reason: str


def cores() -> int:
    """CPU cores this process may use (its affinity where the system tells it)."""
    with contextlib.suppress(AttributeError, OSError):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class InProcessWorkers:
    """Run the tasks one after another in this process.

    :param threads: CPU threads each task may use.
    """

    description = "this process"

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def run(self, function: TaskFunction, tasks: Sequence[Any],
            on_event: Emit) -> Iterator[Finished]:
        """Yield ``(task, outcome)`` for each task, in order."""
        for task in tasks:
            yield task, function(task, on_event, self.threads)

    def close(self) -> None:
        """Nothing to release."""


def _start_local_worker(events: Any, threads: int, environment: Dict[str, str]) -> None:
    """Initialise a local worker process: environment, events, Ctrl-C, orphan guard."""
    global _EVENTS, _THREADS
    os.environ.update(environment)
    _EVENTS, _THREADS = events, threads
    # Ctrl-C reaches the whole process group: the parent stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # tqdm's default lock is a multiprocessing semaphore, which a worker
    # stopped by the parent would leave to the resource tracker's warning.
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
    parent = multiprocessing.parent_process()
    if parent is not None:  # a parent killed with SIGKILL leaves no orphan working on
        threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: Any) -> None:
    """End this worker process when its parent has ended."""
    parent.join()
    os._exit(1)


def _run_local(function: TaskFunction, task: Any) -> Any:
    """Run one task in a local worker process."""
    events = _EVENTS
    return function(task, (lambda event: events.put(event)) if events is not None
                    else (lambda event: None), _THREADS)


class LocalWorkers:
    """Run the tasks in ``jobs`` spawned worker processes.

    A worker that dies (killed, out of memory, a crash in native code)
    breaks the whole pool.  The tasks it had not started go back to the
    queue; those that were running are suspects and are run again one at a
    time, each alone in a pool of one worker, so that a task is given up
    (:class:`WorkerLost`) only when its worker died while it ran alone.

    :param jobs: worker processes.
    :param threads: CPU threads of each.
    :param environment: environment variables set in each worker before
        its first import (thread counts of numeric libraries).
    """

    def __init__(self, jobs: int, threads: int, environment: Dict[str, str]) -> None:
        self.jobs, self.threads, self.environment = jobs, threads, dict(environment)
        self.description = f"{jobs} worker processes, {threads} thread(s) each"
        self._context = multiprocessing.get_context("spawn")
        self._executor: Optional[ProcessPoolExecutor] = None

    def run(self, function: TaskFunction, tasks: Sequence[Any],
            on_event: Emit) -> Iterator[Finished]:
        """Yield ``(task, outcome)`` as tasks finish."""
        events = self._context.Queue()
        waiting: List[Any] = list(tasks)
        suspects: List[Any] = []
        try:
            while waiting or suspects:
                alone = bool(suspects)
                batch = [suspects.pop(0)] if alone else waiting
                if not alone:
                    waiting = []
                unfinished, started = yield from self._generation(function, batch, events,
                                                                  on_event)
                if not unfinished:
                    continue
                if alone:
                    yield batch[0], WorkerLost("its worker process died while analysing it "
                                               "(killed, out of memory, or a crash)")
                    continue
                # A first event may not have left a worker killed at once: then all
                # unfinished tasks are suspects.
                running = [t for t in unfinished if t.key in started] or unfinished
                suspects += running
                waiting += [t for t in unfinished if t.key not in {r.key for r in running}]
        finally:
            self.close()
            events.close()

    def _generation(self, function: TaskFunction, batch: List[Any], events: Any,
                    on_event: Emit) -> Generator[Finished, None, Tuple[List[Any], set]]:
        """Run tasks in a new pool until done or broken; return (unfinished, started keys)."""
        self._executor = ProcessPoolExecutor(
            min(self.jobs, len(batch)), mp_context=self._context,
            initializer=_start_local_worker, initargs=(events, self.threads, self.environment))
        futures: Dict[Future, Any] = {self._executor.submit(_run_local, function, task): task
                                      for task in batch}
        started: set = set()

        def forward(event: Event) -> None:
            started.add(event.get("task"))
            on_event(event)

        while futures:
            done, _ = wait(futures, timeout=POLL_S, return_when=FIRST_COMPLETED)
            _drain(events, forward)
            if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                break
            for future in done:
                yield futures.pop(future), _outcome(future)
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._executor = None
        _drain(events, forward)
        unfinished = []
        for future, task in futures.items():
            if (future.done() and not future.cancelled()
                    and not isinstance(future.exception(), BrokenProcessPool)):
                yield task, _outcome(future)  # finished before the pool broke
            else:
                unfinished.append(task)
        return unfinished, started

    def close(self) -> None:
        """Stop the workers now (Ctrl-C, a fatal error): their tasks stay unfinished."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        # ProcessPoolExecutor has no public way to stop running tasks (3.14's
        # terminate_workers); its processes are terminated directly.
        for process in list(getattr(executor, "_processes", {}).values()):
            with contextlib.suppress(Exception):
                process.terminate()
        executor.shutdown(wait=True, cancel_futures=True)


def _outcome(future: Future) -> Any:
    """Return a finished task's result, or the exception it raised."""
    error = future.exception()
    return future.result() if error is None else error


def _drain(events: Any, on_event: Emit) -> None:
    """Hand every queued event to ``on_event``."""
    while True:
        try:
            on_event(events.get_nowait())
        except (queue.Empty, OSError, ValueError, EOFError):
            return


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise RunnerError("--scheduler needs the optional packages dask and distributed: "
                          "pip install 'dask[distributed]' (on this machine and every "
                          "worker)") from None
    return distributed


def _run_on_dask(function: TaskFunction, task: Any, topic: str,
                 threads_by_worker: Dict[str, int]) -> Any:
    """Run one task on a Dask worker; its events go to the client as log events."""
    from distributed import get_worker

    worker = get_worker()
    return function(task, lambda event: worker.log_event(topic, event),
                    threads_by_worker.get(worker.address, 1))


def _machine_cores() -> Tuple[str, int]:
    """(host name, cores) of the machine a Dask worker runs on."""
    import socket

    return socket.gethostname(), cores()


class DaskWorkers:
    """Run the tasks on a Dask distributed cluster.

    :param address: the scheduler, e.g. ``tcp://10.0.0.5:8786``.
    :param threads: the most CPU threads one task may use.
    :raises RunnerError: when dask is missing or the scheduler cannot be reached.
    """

    def __init__(self, address: str, threads: int) -> None:
        if not SCHEDULER_ADDRESS.match(address):
            raise RunnerError(f"--scheduler wants an address like tcp://HOST:PORT, "
                              f"got {address!r}")
        distributed = _import_distributed()
        self.address, self.max_threads = address, threads
        try:
            self.client = distributed.Client(address, timeout=CONNECT_TIMEOUT_S,
                                             set_as_default=False)
        except (OSError, TimeoutError, ValueError) as error:
            raise RunnerError(f"cannot reach the Dask scheduler at {address}: "
                              f"{' '.join(str(error).split()) or type(error).__name__}"
                              ) from None
        try:
            self.threads_by_worker = self._threads_by_worker()
        except RunnerError:
            raise
        except Exception as error:  # e.g. a worker without fer_ros
            raise RunnerError(f"the Dask workers at {address} cannot run fer_ros "
                              f"(install it on every worker): {type(error).__name__}: "
                              f"{' '.join(str(error).split())}") from None
        slots = sum(info.get("nthreads", 1) for info in self._workers().values())
        self.description = f"Dask cluster {address}: {len(self.threads_by_worker)} workers, " \
                           f"{slots} task slots"

    def _workers(self) -> Dict[str, Dict[str, Any]]:
        try:
            info = self.client.scheduler_info(n_workers=-1)  # all of them (2025+)
        except TypeError:
            info = self.client.scheduler_info()
        return dict(info.get("workers", {}))

    def _threads_by_worker(self) -> Dict[str, int]:
        """Share each machine's cores among the task slots of its workers."""
        machines = self.client.run(_machine_cores)
        if not machines:
            raise RunnerError(f"the Dask scheduler at {self.address} has no workers")
        slots: Dict[str, int] = {}
        workers = self._workers()
        for address, (host, _) in machines.items():
            slots[host] = slots.get(host, 0) + workers.get(address, {}).get("nthreads", 1)
        return {address: max(1, min(self.max_threads, count // max(1, slots[host])))
                for address, (host, count) in machines.items()}

    def check_paths(self, probe: str) -> List[str]:
        """Workers that do not see a file this process wrote (no shared file system).

        :param probe: an absolute path of an existing file.
        :return: the addresses of workers that cannot see it.
        """
        seen = self.client.run(os.path.exists, probe)
        return sorted(address for address, exists in seen.items() if not exists)

    def run(self, function: TaskFunction, tasks: Sequence[Any],
            on_event: Emit) -> Iterator[Finished]:
        """Yield ``(task, outcome)`` as tasks finish."""
        topic = f"fer-analyze-{uuid.uuid4().hex}"
        events: "queue.Queue[Event]" = queue.Queue()
        self.client.subscribe_topic(topic, lambda event: events.put(event[1]))
        futures = {self.client.submit(_run_on_dask, function, task, topic,
                                      self.threads_by_worker, key=f"{topic}-{number}",
                                      pure=False): task
                   for number, task in enumerate(tasks)}
        try:
            while futures:
                time.sleep(POLL_S)
                _drain(events, on_event)
                for future in [f for f in futures if f.done()]:
                    task = futures.pop(future)
                    try:
                        outcome = future.result()
                    except Exception as error:  # KilledWorker, or raised by the task
                        outcome = (WorkerLost(f"its Dask worker was lost ({error})")
                                   if type(error).__name__ == "KilledWorker" else error)
                    yield task, outcome
            _drain(events, on_event)
        finally:
            for future in futures:
                future.cancel()
            with contextlib.suppress(Exception):
                self.client.unsubscribe_topic(topic)

    def close(self) -> None:
        """Disconnect from the scheduler (the cluster keeps running)."""
        with contextlib.suppress(Exception):
            self.client.close()
