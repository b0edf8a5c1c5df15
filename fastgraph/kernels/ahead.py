"""Compiling ahead: on an empty cache, a second process compiles half of what a pass needs.

Numba compiles a kernel the first time it is called with new argument types, in the calling
thread, one function after another: on an empty cache the MNIST MLP's first training step
compiles about twenty, 4-5 s of CPU on one core. They do not depend on one another. So when
the compiled engine is about to record the first pass of a process and finds its replay
loop in no cache (:func:`decide`), it lists what the pass will compile (it *surveys* the pass:
its operators run with every kernel call written down and none made, see
``engines.compiled``), with what the process said it runs next (an optimizer's update,
:func:`expect`), and :func:`compile_ahead` compiles the list on two cores: this process from
the front, and a *worker*, a second Python process (``python -m fastgraph.kernels.ahead``),
from the back, until they meet. The worker is started earlier, at the first compile of a
fastgraph function in the process (:func:`_on_compile`: on an empty cache, a model's
first), so that it has imported fastgraph when the pass comes, and is given at once what
the process said it runs (:func:`expect`: the replay loop, an optimizer's update), which it
compiles first while this process compiles the first feed's kernels. It writes what it
compiles into Numba's disk cache, from which this process loads each function the first
time it calls it, as it loads what an earlier process compiled. Nothing is compiled that
the pass would not have compiled.

Then the worker compiles, in the background, what the process said it may run later
(:func:`expect_later`: an optimizer's parallel update, which steps on more than one thread
run and the thread chooser's first steps, on one thread, do not), while this process runs
its steps on the other core; the chooser's first trial of more threads waits until
:func:`background_done` (``kernels.optimizers.compile_parallel_forms``). A worker that
takes longer than ``FINISH_TIMEOUT`` is stopped and what it did not compile is compiled
here when called; one still compiling when the process exits is stopped.

The worker is only a head start. If it cannot start, fails, is killed or is slower, this
process compiles what it did not, when it first calls it, as it would have without it; this
process waits for the worker only while it finishes the function it is compiling, never for
its start. Functions are given out by dispatcher (every signature of one function in one
process): two processes that add signatures of one function to Numba's cache at once could
each number their file 1 and write over the other's.

``FASTGRAPH_COMPILE_WORKER=0`` turns it off (``auto``, the default, or ``1``: on); so does a
process that runs on one thread (``FASTGRAPH_THREADS=1``, one core, an MPI rank with a core
of its own), which keeps to its core, and a system without ``MSG_NOSIGNAL`` (Linux has it).
"""

import atexit
import importlib
import os
import pickle
import select
import socket
import struct
import subprocess
import sys
import time
import weakref

import numba
import numba.core.event
from numba.core.compiler_lock import global_compiler_lock

from . import Kernel

#: The most bytes of functions and signatures sent to a worker: what a pipe holds, so that
#: writing them never waits for the worker (a pass of more than a few hundred distinct
#: kernel signatures compiles in this process alone).
MOST_SENT = 60000

#: Seconds this process waits for the worker to finish the function it is compiling when
#: this process has compiled the rest (a function takes 0.05-1.2 s here): then it is killed.
FINISH_TIMEOUT = 60.0

#: Seconds a worker waits for its work (the first pass) before it exits: a program that
#: compiles a kernel and records no pass for that long (a model loaded and evaluated a few
#: nodes at a time, by the walker) does not keep an idle process; one that records a pass
#: later starts another.
IDLE_TIMEOUT = 30.0

_decided = False  # the first pass of the process has come (compiled ahead or not)
_spare = None  # a worker started at the first compile, before the first pass (_on_compile)
_expected = []  # weak references to callables that list (kernel, arguments) pairs
_later = []  # the same, for what the worker compiles after the pass (see expect_later)
_background = None  # the worker compiling it while this process runs (see background_done)
_first_ready = []  # the names of what the worker compiled first (see _Worker)

#: What the process compiled ahead, once it has: ``{"here": names, "worker": names}``, the
#: functions (by qualified name) each process compiled (``benchmarks.startup`` prints it).
report = None


def setting():
    """``FASTGRAPH_COMPILE_WORKER`` as True or False (``auto``: True)."""
    text = os.environ.get("FASTGRAPH_COMPILE_WORKER", "auto").strip().lower() or "auto"
    if text in ("auto", "1"):
        return True
    if text == "0":
        return False
    raise ValueError(f"FASTGRAPH_COMPILE_WORKER={text!r}: give 'auto', '1' (a worker process "
                     "compiles half of a first pass on an empty cache) or '0' (none)")


setting()  # (a bad value stops the import, as a bad FASTGRAPH_THREADS does)


def enabled():
    """Whether a worker may compile beside this process (see the module's text)."""
    from ..threads import threads

    return (setting() and threads.most > 1 and os.name == "posix"
            and hasattr(socket, "MSG_NOSIGNAL"))


def pending():
    """True until the first pass of the process has been recorded (cheap: a global)."""
    return not _decided


def expect(calls):
    """``calls()`` lists the calls this process will make soon, as ``(kernel, arguments,
    None)``: the replay loop that every pass runs, an optimizer's update (whose first call
    comes after the first pass). Sent to the worker as soon as there is one, to compile
    before the pass's functions (it has nothing else to do until the pass comes), or else
    compiled ahead with the first pass. ``calls()`` may fail until its object is complete
    (an optimizer's states are made after the base class calls this): it is asked again at
    the next compile. Kept weakly (a bound method of an optimizer does not keep it)."""
    if not _decided:
        _keep(_expected, calls)
        _first_of_all()


def expect_later(calls):
    """``calls()`` lists calls this process may make later, as :func:`expect`'s: what only
    steps on more than one thread run (an optimizer's parallel update, which its first
    steps, on one thread, do not). On an empty cache the worker compiles them after its
    share of the first pass, while this process runs its steps, and
    :func:`background_done` says when it has. Kept weakly."""
    if not _decided:
        _keep(_later, calls)


def _keep(references, calls):
    """Keep ``calls`` in ``references``, weakly if it is a bound method."""
    try:
        references.append(weakref.WeakMethod(calls))
    except TypeError:  # (not a bound method)
        references.append(lambda: calls)


def background_done(wait=False):
    """Whether what :func:`expect_later` listed is compiled (into the disk cache, from
    which the calls load it), or left for this process to compile when it calls it (no
    worker was started, it failed, or it took ``FINISH_TIMEOUT``): True then, the worker
    stopped. False while the worker compiles; with ``wait``, waits for it instead."""
    global _background
    worker = _background
    if worker is None:
        return True
    if worker.owner != os.getpid():  # (a forked child's copy: the parent's worker)
        _background = None
        return True
    worker.read()
    while (not worker.ended and len(worker.ready | worker.missed) < len(worker.first)
           and time.monotonic() < worker.deadline):
        if not wait:
            return False
        worker.read(timeout=max(0.0, worker.deadline - time.monotonic()))
    _background = None
    worker.close()
    return True


def decide(survey, dispatcher, argtypes):
    """Called by the first pass of the process: when ``dispatcher`` (the replay loop) has no
    code for ``argtypes`` here or in the disk cache, or a worker was started (a function of
    fastgraph's was compiled), compile it, what ``survey()`` lists and what :func:`expect`
    was told, on two processes. Each is ``(function, its arguments or their Numba types,
    the kinds and dtype of its program adapter or None)``. Never raises for the compiling (a
    function that fails to compile fails again where it is called)."""
    global _decided, _spare, report
    if _decided:
        return
    on = enabled()  # (a bad setting is refused at every first pass it stops, not once)
    _decided = True
    expected = _calls(_expected) if on else []
    later = _calls(_later) if on else []
    _expected[:], _later[:] = [], []
    if not on or (_spare is None and _loaded(dispatcher, argtypes)):
        spare, _spare = _spare, None
        _closed(spare)
        return
    # This process starts from the front, the worker (once it has compiled what it was sent
    # first) from the back: the replay loop and the pass's calls in order, the next update
    # last (Adam's is the longest to compile).
    jobs = [(dispatcher, argtypes, None)]
    try:
        jobs.extend(survey())
    except Exception:  # (a hint that failed: what it names compiles when called)
        pass
    groups = _groups(jobs + expected)
    sent = _spare.sent if _spare is not None else set()
    for group in groups:  # (what the worker compiles first is not the pass's to share)
        group.signatures = [(argtypes, calling) for argtypes, calling in group.signatures
                            if (id(_dispatcher(group.function)), argtypes) not in sent]
    groups = [group for group in groups if group.signatures]
    theirs = compile_ahead(groups, _groups(later))
    report = {"here": [_name(group) for k, group in enumerate(groups) if k not in theirs],
              "worker": _first_ready + [_name(group) for k, group in enumerate(groups)
                                        if k in theirs]}


def _loaded(dispatcher, argtypes):
    """Whether ``dispatcher`` has code for ``argtypes``, loading it from Numba's disk cache
    if it is there (what ``Dispatcher.compile`` does before it compiles)."""
    if argtypes in dispatcher.overloads:
        return True
    try:
        with global_compiler_lock:
            found = dispatcher._cache.load_overload(argtypes, dispatcher.targetctx)
            if found is None:
                return False
            dispatcher.targetctx.insert_user_function(found.entry_point, found.fndesc,
                                                      [found.library])
            dispatcher.add_overload(found)
            return True
    except Exception:  # pragma: no cover - another Numba's internals: compile as usual
        return True


class Group:
    """What one process compiles of one function: its signatures, each with the kinds and
    dtype of the program adapter that calls it (``kernels.program.adapter``) or None.
    ``where``: ``(module, attribute, variant)`` by which another process finds it."""

    def __init__(self, function, where):
        self.function, self.where, self.signatures = function, where, []

    def compile(self):
        """Compile (or load) every signature and its adapter; whether all did. Failures are
        left for the call that needs them."""
        from .program import adapter

        dispatcher, whole = _dispatcher(self.function), True
        for argtypes, calling in self.signatures:
            try:
                dispatcher.compile(argtypes)
                if calling is not None:
                    result = dispatcher.overloads[argtypes].signature.return_type
                    adapter(*calling, result)
            except Exception:
                whole = False
        return whole


def _name(group):
    return getattr(_dispatcher(group.function), "__qualname__", repr(group.function))


def _dispatcher(function):
    return function.dispatcher if isinstance(function, Kernel) else function


def _groups(jobs):
    """``jobs`` (``(function, argument types or arguments, adapter kinds and dtype or
    None)``) as one :class:`Group` per function, in the order each first appears, without
    what this process has already."""
    groups = {}
    for function, arguments, calling in jobs:
        try:
            dispatcher = _dispatcher(function)
            argtypes = tuple(argument if isinstance(argument, numba.types.Type)
                             else dispatcher.typeof_pyval(argument) for argument in arguments)
        except Exception:  # (left to the call that needs it)
            continue
        if argtypes in dispatcher.overloads:
            continue
        group = groups.get(id(dispatcher))
        if group is None:
            group = groups[id(dispatcher)] = Group(function, _where(function))
        if (argtypes, calling) not in group.signatures:
            group.signatures.append((argtypes, calling))
    return list(groups.values())


def _where(function):
    """``(module, attribute, variant)`` naming ``function`` for another process, or None
    when it is not reachable that way (made in ``__main__``, or by a factory)."""
    module = sys.modules.get(getattr(function, "__module__", None) or "")
    if module is None or module.__name__ == "__main__":
        return None
    name = function.__name__.removesuffix("_one_core")
    found = getattr(module, name, None)
    if found is function:
        return module.__name__, name, None
    for variant in ("every_core", "one_core"):
        if getattr(found, variant, None) is function:
            return module.__name__, name, variant
    return None


def _find(where):
    module, name, variant = where
    found = getattr(importlib.import_module(module), name)
    return found if variant is None else getattr(found, variant)


def compile_ahead(groups, background=()):
    """Compile ``groups``: this process from the front, a worker from the back (those it
    can find), until they meet. Returns the indices the worker compiled. The worker is then
    given ``background`` (groups too), which it compiles while this process goes on (see
    :func:`background_done`); with none, it is stopped."""
    # A function the worker was sent first (another signature of it) is compiled here once
    # the worker has stopped: never by both processes at once (see the module's text).
    first = {sent[0] for sent in _spare.sent} if _spare is not None else set()
    later = [k for k, group in enumerate(groups)
             if id(_dispatcher(getattr(group, "function", None))) in first]
    shared = [k for k, group in enumerate(groups) if group.where is not None and k not in later]
    worker = _Worker.start([groups[k].where for k in shared],
                           [groups[k].signatures for k in shared], len(shared) > 1)
    if worker is None:
        for group in groups:
            group.compile()
        return set()
    try:
        position = {k: i for i, k in enumerate(shared)}
        met = False  # the worker compiled (or compiles) every shared group from here on
        for k, group in enumerate(groups):
            if k in later:
                continue
            if k in position:
                if not met:
                    worker.read()
                    met = position[k] in worker.started
                if met:
                    continue
                worker.take(position[k])
            group.compile()
        worker.finish()
        done = {shared[i] for i in worker.done}
        _first_ready[:] = dict.fromkeys(worker.first[n] for n in sorted(worker.ready)
                                        if n < len(worker.first))  # (a name once)
        _in_background(worker, background)
    finally:
        if _background is not worker:
            worker.close()
    for k in later:
        groups[k].compile()
    return done


def _in_background(worker, groups):
    """Give ``worker``, done with the pass, the ``groups`` it can find, to compile while
    this process goes on: it is then :func:`background_done`'s. Only a worker that has
    compiled all it was sent first: this process compiles what it has not (the replay loop,
    the first update) as soon as it calls them, and one function is never compiled by two
    processes at once."""
    global _background
    sent = len(worker.first)
    worker.read()
    if groups and not worker.ended and len(worker.ready | worker.missed) == sent:
        worker.first_of_all(groups)
    if len(worker.first) > sent:
        worker.deadline, worker.owner = time.monotonic() + FINISH_TIMEOUT, os.getpid()
        _background = worker
        atexit.register(_stop_background)


def _stop_background():
    """At exit: stop a worker still compiling in the background (what it compiled so far
    is in the cache; the rest is compiled by the next process that needs it), never one
    that a forked child's copy of this module holds."""
    global _background
    worker, _background = _background, None
    if worker is not None and worker.owner == os.getpid():
        worker.close()


class _Worker:
    """The worker process, as this process sees it. It is sent frames: ``E``, functions to
    compile first, in order (what the process expects to run: the replay loop, an
    optimizer's update; sent as soon as both the worker and they are there); ``M``, the
    pass's functions, which it compiles from the last; ``T``, the index of one this process
    takes. It answers in lines: ``b n`` / ``e n`` (``x n``: failed) as it begins and ends
    the n-th function sent first, ``s i`` / ``d i`` (``f i``) for the pass's.

    Its input is one end of a socket pair written with ``MSG_NOSIGNAL``: a worker that has
    gone (killed, or unable to import) makes a write fail with BrokenPipeError, never send
    SIGPIPE, which ends a program that restored its default action (as a tool piped into
    ``head`` does) with no word."""

    #: How the worker is started (the pickled functions are then written to its input).
    #: ``-P``: the current directory is not put first on its path (a directory that holds
    #: another fastgraph, an older checkout, would be imported instead of this one).
    command = (sys.executable, "-P", "-m", __name__)

    @classmethod
    def spawn(cls):
        """A worker process, started (it imports fastgraph meanwhile), or None."""
        package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [package, *filter(None, [environment.get("PYTHONPATH")])])
        environment["FASTGRAPH_COMPILE_WORKER"] = "0"  # (its own compiles start none)
        if numba.config.CACHE_DIR:  # (set in this process: the worker must write there)
            environment["NUMBA_CACHE_DIR"] = numba.config.CACHE_DIR
        mine, theirs = socket.socketpair()
        try:
            process = subprocess.Popen(list(cls.command), stdin=theirs, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, env=environment, bufsize=0)
        except (OSError, ValueError):
            mine.close()
            return None
        finally:
            theirs.close()
        return cls(process, mine)

    @classmethod
    def start(cls, where, signatures, new=True):
        """The spare worker (see :func:`_on_compile`), or a new one if ``new``, sent the
        pass's functions; None if there is none."""
        global _spare
        worker, _spare = _spare, None
        if worker is not None and worker.process.poll() is not None:
            worker = _closed(worker)
        if worker is None:
            worker = cls.spawn() if new and where else None
            if worker is None:
                return None
        if not worker.frame(b"M", (where, signatures)):
            return _closed(worker)
        return worker

    def __init__(self, process, to):
        self.process, self.to = process, to
        self.source = process.stdout.fileno()
        self.started, self.done, self.failed = set(), set(), set()  # the pass's, by index
        self.first = []  # the names of the functions sent to compile first
        self.sent = set()  # (id of their dispatcher, argument types)
        self.begun, self.ready, self.missed = set(), set(), set()  # theirs, by number
        self.ended = False
        self.deadline = self.owner = None  # (set once it compiles in the background)
        self._partial = b""

    def send(self, data):
        """Write ``data`` to the worker (OSError if it has gone: no SIGPIPE)."""
        view = memoryview(data)
        while view:
            view = view[self.to.send(view, socket.MSG_NOSIGNAL):]

    def frame(self, kind, functions):
        """Send ``(where, signatures)`` as a frame of ``kind``; False if it cannot be."""
        body = pickle.dumps((list(sys.path), *functions))
        if len(body) > MOST_SENT or self.ended:
            return False
        try:
            self.send(struct.pack("<cQ", kind, len(body)) + body)
        except OSError:
            self.ended = True
            return False
        return True

    def first_of_all(self, groups):
        """Send ``groups`` (those it can find, the signatures not sent yet) to be compiled
        before the pass."""
        new = []
        for group in groups:
            if group.where is not None:
                key = id(_dispatcher(group.function))
                signatures = [(argtypes, calling) for argtypes, calling in group.signatures
                              if (key, argtypes) not in self.sent]
                if signatures:
                    new.append((group, key, signatures))
        if new and self.frame(b"E", ([group.where for group, _, _ in new],
                                     [signatures for _, _, signatures in new])):
            self.first.extend(_name(group) for group, _, _ in new)
            self.sent.update((key, argtypes) for _, key, signatures in new
                             for argtypes, _ in signatures)

    def read(self, timeout=0.0):
        """Take in what the worker said (waiting up to ``timeout`` seconds for something)."""
        said = {b"s": self.started, b"d": self.done, b"f": self.failed, b"b": self.begun,
                b"e": self.ready, b"x": self.missed}
        while not self.ended:
            ready, _, _ = select.select([self.source], [], [], timeout)
            if not ready:
                return
            chunk = os.read(self.source, 4096)
            if not chunk:
                self.ended = True
                return
            lines = (self._partial + chunk).split(b"\n")
            self._partial = lines.pop()
            for line in lines:
                word, _, index = line.partition(b" ")
                if word in said and index.isdigit():
                    said[word].add(int(index))
            timeout = 0.0

    def take(self, index):
        """Tell the worker that this process compiles ``index`` (it stops before it)."""
        if not self.ended:
            try:
                self.send(struct.pack("<cQQ", b"T", 8, index))
            except OSError:
                self.ended = True

    def finish(self):
        """Wait while the worker completes the function it is compiling; stop it."""
        deadline = time.monotonic() + FINISH_TIMEOUT
        self.read()
        while not self.ended and (self.started - self.done - self.failed
                                  or self.begun - self.ready - self.missed):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.read(timeout=left)

    def close(self):
        """Stop the worker (at once if it is not compiling) and collect it."""
        self.to.close()
        if self.process.poll() is None:  # importing still, or stopped by an error here
            self.process.kill()
        self.process.wait()
        self.process.stdout.close()


def _closed(worker):
    if worker is not None:
        worker.close()


def _on_compile(dispatcher):
    """Numba is about to compile ``dispatcher``: if it is fastgraph's and no pass has been
    recorded yet, the cache is missing what this process runs, so a worker is started now,
    to import while this process compiles, and given what the process expects to run first
    (see :func:`expect`); the pass's functions come with the first pass. If no pass ever
    comes, it exits (after ``IDLE_TIMEOUT``, or with this process)."""
    global _spare
    if (_decided or _spare is not None
            or not getattr(dispatcher, "__module__", "").startswith("fastgraph.")
            or not enabled()):
        return
    from .. import engines

    if engines._executor() is not engines.compiled:  # (the walker records no pass)
        return
    _spare = _Worker.spawn()
    _first_of_all()


def _first_of_all():
    """Give the spare worker what the process expects to run (compiled first)."""
    if _spare is not None:
        _spare.first_of_all(_groups(_calls(_expected)))


def _calls(references):
    """The calls that the callables kept in ``references`` list now."""
    calls = []
    for reference in references:
        found = reference()
        if found is not None:
            try:
                calls.extend(found())
            except Exception:  # (a hint that failed: what it names compiles when called)
                pass
    return calls


class _Listener(numba.core.event.Listener):
    def on_start(self, event):
        if not _decided:
            try:  # (an optimizer made since the last compile is complete now: see expect)
                _on_compile(event.data["dispatcher"]) if _spare is None else _first_of_all()
            except Exception:  # (a bad setting is said where it is read: at the first pass)
                pass

    def on_end(self, event):
        pass


# (Numba tells it of compiles only, never of functions loaded from the cache: a process
# with a warm cache never hears from it. Not in the worker, which runs this file as
# __main__: see work().)
if __name__ != "__main__":
    numba.core.event.register("numba:compile", _Listener())


class _Frames:
    """The frames this process sends, as the worker reads them from ``descriptor``."""

    def __init__(self, descriptor):
        self.descriptor, self.buffer, self.ended = descriptor, b"", False
        self.queued = []  # frames read and put back, served first

    def next(self, timeout):
        """The next frame, ``(kind, body)``, waiting up to ``timeout`` seconds; None if none
        came (or the other process closed its end: ``ended``)."""
        if self.queued:
            return self.queued.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buffer) >= 9:
                kind, size = struct.unpack("<cQ", self.buffer[:9])
                if len(self.buffer) >= 9 + size:
                    body, self.buffer = self.buffer[9:9 + size], self.buffer[9 + size:]
                    return kind, body
            if self.ended or not select.select([self.descriptor], [], [], max(
                    0.0, deadline - time.monotonic()))[0]:
                return None
            chunk = os.read(self.descriptor, 65536)
            self.ended = not chunk
            self.buffer += chunk


def _compiled(where, signatures):
    """Compile the function at ``where`` for ``signatures``: whether it all compiled."""
    try:
        group = Group(_find(where), where)
    except Exception:  # (not found here: the other process compiles it when it calls it)
        return False
    group.signatures = signatures
    return group.compile()


def work():
    """The worker: compile the functions it is sent first, in order, then the pass's from
    the last, until the next is one the other process took, then what it is sent next (the
    functions to compile in the background), until the other process closes its end. Its
    own compiles start no worker; with no work within ``IDLE_TIMEOUT`` seconds, it exits."""
    global _decided
    _decided = True
    frames, to = _Frames(sys.stdin.fileno()), os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # (what Numba's debug settings print)
    first = 0  # functions compiled first, so far
    while (frame := frames.next(IDLE_TIMEOUT)) is not None:
        kind, body = frame
        if kind not in (b"E", b"M"):
            continue
        path, where, signatures = pickle.loads(body)
        sys.path[:] = path
        if kind == b"E":
            for k in range(len(where)):
                os.write(to, b"b %d\n" % first)
                # Said done only once compiled (a Ctrl-C to the process group stops it unsaid).
                os.write(to, b"%s %d\n" % (b"e" if _compiled(where[k], signatures[k]) else b"x",
                                           first))
                first += 1
            continue
        taken, aside = -1, []  # (aside: what came with the takes, served after the pass)
        for index in reversed(range(len(where))):
            while (frame := frames.next(0.0)) is not None:
                if frame[0] == b"T":
                    taken = max(taken, struct.unpack("<Q", frame[1])[0])
                else:
                    aside.append(frame)
            if frames.ended or index <= taken:
                break
            os.write(to, b"s %d\n" % index)
            os.write(to, b"%s %d\n" % (b"d" if _compiled(where[index], signatures[index])
                                       else b"f", index))
        frames.queued.extend(aside)


if __name__ == "__main__":
    from fastgraph.kernels import ahead  # (the package's module, whose state its kernels see)

    try:
        ahead.work()
    except (KeyboardInterrupt, BrokenPipeError, EOFError):
        pass
