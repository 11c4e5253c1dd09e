"""A batch of sessions (a study) on all cores or a Dask cluster, resumable.

``fer-analyze`` with several inputs.

Each session is one task (:class:`SessionTask`, :func:`analyze_task`): it
opens its input, runs the node's pipeline with its own models, writes the
session's outputs exactly as an analysis in this process does (the same
:func:`~fer_ros.session.analysis._analyze_one`), and last a completion
marker (:mod:`~fer_ros.session.completion`).  Tasks run in this process
(``--jobs 1``), in worker processes (``--jobs N``) or on a Dask cluster
(``--scheduler``) (:mod:`~fer_ros.session.workers`); a session that fails
is reported and the others go on, while a problem that would fail every
session (a model that cannot be loaded, an output that cannot be written)
stops the batch.  The results are gathered in input order, so faces.csv,
summary.json (except ``processing_s``) and the reports are the same
whichever way the tasks ran.  Then the study overview
(:mod:`~fer_ros.session.study`) and the top-level report are written.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from fer_ros.model_files import ModelLoadError
from fer_ros.parameters import default_of
from fer_ros.session.analysis import (INPUT_ERRORS, AnalysisRequest, AnalysisResult, _analyze_one,
                                      analyze_and_report, check_start, prepare_inputs,
                                      unique_names)
from fer_ros.session.completion import (analysis_settings, clear_marker, completed_files,
                                        input_fingerprint, write_marker)
from fer_ros.session.data import FrameSelection, SessionOutputs
from fer_ros.session.persons import PersonOptions
from fer_ros.session.figures import FIGURE_FILES
from fer_ros.session.html import write_comparison_report
from fer_ros.session.progress import StudyProgress
from fer_ros.session.recording import is_recording
from fer_ros.session.safe_output import OutputError, inside, write_text
from fer_ros.session.sources import open_source
from fer_ros.session.study_report import write_study
from fer_ros.session.workers import (DaskWorkers, InProcessWorkers, LocalWorkers, RunnerError,
                                     WorkerLost, cores)

#: Peak resident memory of one worker, MB.  Measured (ru_maxrss of a worker
#: of --jobs 2): 237 MB for short 640x360 sessions without annotated.mp4,
#: 275 MB with it and a 1920x1080 input; the rows add about 1.4 kB per face
#: and processed frame (about 115 MB for 45 minutes at 30 fps with one face).
WORKER_PEAK_RSS_MB = 450

#: Seconds between a worker's progress events.
EVENT_INTERVAL_S = 0.5

#: Environment variables that size numeric libraries' thread pools; set in
#: each local worker before its first import (OpenCV's video decoder reads
#: OPENCV_FFMPEG_THREADS when it opens a file).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "OPENCV_FFMPEG_THREADS")

#: Fatal in any session: stops the batch (one line), as in a single analysis.
FATAL_ERRORS = (ModelLoadError, OutputError, OSError)


@dataclass
class BatchOptions:
    """How a batch runs.

    :param jobs: worker processes (None: cores, capped by memory; 1: this process).
    :param scheduler: a Dask scheduler address (``tcp://HOST:PORT``) instead.
    :param resume: skip sessions whose outputs are complete.
    :param group_by: regular expression with named groups over input file names.
    """

    jobs: Optional[int] = None
    scheduler: Optional[str] = None
    resume: bool = False
    group_by: Optional[str] = None


@dataclass(frozen=True)
class SessionTask:
    """One session of a batch, as sent to a worker.

    :param key: its position among the batch's inputs.
    :param path: the input as given.
    :param location: its absolute path (workers may have another working folder).
    :param name: the session's (safe) name.
    :param folder: its output folder, absolute.
    :param recording: an emotions.jsonl (no model is run).
    :param values: pipeline parameter values.
    :param selection: which frames to process.
    :param topic: rosbag2 image topic.
    :param annotated_video: write annotated.mp4.
    :param persons: ``--only`` and ``--anonymize`` (``--save-people`` is for one session).
    """

    key: int
    path: Path
    location: Path
    name: str
    folder: Path
    recording: bool
    values: Dict[str, Any]
    selection: FrameSelection
    topic: Optional[str]
    annotated_video: bool
    persons: PersonOptions = PersonOptions()

    def settings(self) -> Dict[str, Any]:
        """Return the settings recorded in the completion marker."""
        return analysis_settings(self.values, self.selection, self.topic, self.annotated_video,
                                 self.persons.only, self.persons.anonymize)


@dataclass
class SessionOutcome:
    """What a task sends back.

    :param key: the task's key.
    :param outputs: the session's outputs (None when it failed).
    :param failure: one line: why the session could not be analysed.
    :param fatal: an error that stops the batch.
    :param frames_read: frames read from the input.
    :param peak_rss_mb: the worker process's peak resident memory so far, MB.
    """

    key: int
    outputs: Optional[SessionOutputs] = None
    failure: str = ""
    fatal: Optional[BaseException] = None
    frames_read: int = 0
    peak_rss_mb: float = 0.0


@dataclass
class BatchResult(AnalysisResult):
    """What a batch wrote, beyond :class:`AnalysisResult`.

    :param resumed: names of sessions whose complete outputs were kept.
    :param study_files: study.csv and, with ``--group-by``, study_groups.csv.
    :param workers: where the tasks ran, in words.
    :param peak_rss_mb: the highest peak resident memory of a worker, MB.
    """

    resumed: List[str] = field(default_factory=list)
    study_files: List[Path] = field(default_factory=list)
    workers: str = ""
    peak_rss_mb: float = 0.0


class CountingSource:
    """A session source that reports how many frames it has given.

    :param source: the source.
    :param report: called with the count after each frame.
    """

    def __init__(self, source: Any, report: Callable[[int], None]) -> None:
        self._source, self._report = source, report
        self.description = source.description
        self.count = 0

    @property
    def damage(self) -> str:
        """Why the source stopped early ("" when it did not)."""
        return str(getattr(self._source, "damage", ""))

    def frames(self) -> Iterator[Any]:
        """Yield the source's frames, counting them."""
        for frame in self._source.frames():
            self.count += 1
            self._report(self.count)
            yield frame

    def close(self) -> None:
        """Close the source."""
        self._source.close()


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def peak_rss_mb() -> float:
    """Return this process's peak resident memory, MB (0 where unknown)."""
    try:
        import resource
    except ImportError:
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def analyze_task(task: SessionTask, emit: Callable[[Dict[str, Any]], None],
                 threads: Optional[int]) -> SessionOutcome:
    """Analyse one session and write its outputs, then its completion marker.

    Runs where the task was sent (this process, a worker process, a Dask
    worker); never raises for a problem of the session.

    :param task: the session.
    :param emit: sends progress events to the batch.
    :param threads: CPU threads it may use (None: as configured).
    :return: its outputs, or why it failed.
    """
    emit({"task": task.key, "total": 0})
    values = dict(task.values)
    if threads is not None:
        import cv2

        values["threads"] = max(1, min(int(values.get("threads", default_of("threads"))),
                                       threads))
        cv2.setNumThreads(int(values["threads"]))
        os.environ["OPENCV_FFMPEG_THREADS"] = str(values["threads"])
    # As given when that is the same file here (the same outputs as in one
    # process); a worker with another working folder uses the absolute path.
    path = task.path if task.path.resolve() == task.location else task.location
    sent = [0.0]

    def report(count: int) -> None:
        now = time.monotonic()
        if now - sent[0] >= EVENT_INTERVAL_S:
            sent[0] = now
            emit({"task": task.key, "read": count})

    source: Any = None
    try:
        fingerprint = input_fingerprint(path)
        clear_marker(task.folder)
        if not task.recording:
            source = open_source(path, task.topic)
            check_start(source.description, task.selection)
            emit({"task": task.key, "total": source.description.frame_count})
            source = CountingSource(source, report)
        request = AnalysisRequest([path], task.folder, task.selection, task.topic,
                                  annotated_video=task.annotated_video, show_progress=False,
                                  persons=task.persons)
        outputs = _analyze_one(path, task.name, task.folder, source, values, request)
        write_marker(task.folder, fingerprint, task.settings(), outputs.files)
    except INPUT_ERRORS as error:
        return SessionOutcome(task.key, failure=_one_line(error), peak_rss_mb=peak_rss_mb())
    except FATAL_ERRORS as error:
        return SessionOutcome(task.key, fatal=error)
    except Exception as error:  # a bug met by one input must not stop a study
        return SessionOutcome(task.key, failure=f"{task.path}: unexpected error "
                              f"({type(error).__name__}): {_one_line(error)}")
    finally:
        if source is not None:
            source.close()
    frames = source.count if source is not None else int(outputs.summary["frames_processed"])
    return SessionOutcome(task.key, outputs, frames_read=frames, peak_rss_mb=peak_rss_mb())


def available_memory_mb() -> Optional[float]:
    """Memory available to new processes, MB (Linux MemAvailable; None where unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (AttributeError, ValueError, OSError):
        return None


def default_jobs(sessions: int, core_count: int, memory_mb: Optional[float]) -> int:
    """Workers by default: one per core, as many as fit in memory, at most one per session.

    :param sessions: sessions to analyse.
    :param core_count: CPU cores.
    :param memory_mb: available memory, MB (None: not a limit).
    :return: at least 1.
    """
    jobs = min(core_count, sessions)
    if memory_mb is not None:
        jobs = min(jobs, int(memory_mb // WORKER_PEAK_RSS_MB))
    return max(1, jobs)


def worker_threads(requested: int, core_count: int, jobs: int) -> int:
    """CPU threads per worker: the configured ``threads``, at most its share of the cores."""
    return max(1, min(requested, core_count // max(1, jobs)))


def make_workers(options: BatchOptions, requested_threads: int, sessions: int) -> Any:
    """Choose where the tasks run.

    :param options: ``--jobs`` / ``--scheduler``.
    :param requested_threads: the pipeline's ``threads`` parameter.
    :param sessions: sessions to analyse.
    :return: a runner of :mod:`~fer_ros.session.workers`.
    :raises RunnerError: when the Dask cluster cannot be used.
    """
    if options.scheduler:
        return DaskWorkers(options.scheduler, requested_threads)
    core_count = cores()
    jobs = options.jobs or default_jobs(sessions, core_count, available_memory_mb())
    jobs = min(jobs, sessions)
    threads = worker_threads(requested_threads, core_count, jobs)
    if jobs <= 1:
        return InProcessWorkers(threads)
    return LocalWorkers(jobs, threads, {name: str(threads) for name in THREAD_VARIABLES})


def resumed_outputs(task: SessionTask) -> Optional[SessionOutputs]:
    """Return the outputs of a session that an earlier run completed (None: analyse it)."""
    files = completed_files(task.folder, input_fingerprint(task.location), task.settings())
    if files is None:
        return None
    summary = json.loads((task.folder / "summary.json").read_text(encoding="utf-8"))
    figures = {key: task.folder / name for key, name in FIGURE_FILES.items()
               if task.folder / name in files}
    return SessionOutputs(task.name, task.folder, summary, figures, files)


def check_shared_folder(workers: DaskWorkers, output: Path) -> None:
    """Fail with one line when Dask workers cannot see the output folder."""
    probe = write_text(output / f".fer-analyze-probe-{os.getpid()}", "probe\n")
    try:
        blind = workers.check_paths(str(probe))
    finally:
        probe.unlink()
    if blind:
        raise RunnerError(f"Dask worker(s) {', '.join(blind)} cannot see {output}: inputs "
                          "and --output must be on a file system shared by all workers")


def analyze_all(request: AnalysisRequest, options: BatchOptions) -> BatchResult:
    """Analyse every session of the request: a batch in parallel, else as before.

    One input or ``--compare`` runs in this process
    (:func:`~fer_ros.session.analysis.analyze_and_report`).

    :param request: inputs, output folder and options.
    :param options: jobs, scheduler, resume, grouping.
    :return: the outputs, failures, resumed sessions and study files.
    :raises SessionError, BagError, ModelLoadError, OutputError, RunnerError:
        one line each, for problems that stop the batch.
    """
    values, paths, batch = prepare_inputs(request)
    if not batch:
        single = analyze_and_report(request, checked=True)
        return BatchResult(single.report, single.sessions, single.failures)
    output = request.output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    if values.get("people_dir"):  # workers may run in another folder
        values["people_dir"] = str(Path(values["people_dir"]).expanduser().resolve())
    tasks = [SessionTask(key, path, path.resolve(), name, inside(output, output / name),
                         path in request.recordings or is_recording(path), values,
                         request.selection, request.topic, request.annotated_video,
                         request.persons)
             for key, (path, name) in enumerate(zip(paths, unique_names(paths)))]
    result = BatchResult(None)
    sessions: Dict[int, SessionOutputs] = {}
    failures: Dict[int, str] = {}
    todo = []
    for task in tasks:
        kept = resumed_outputs(task) if options.resume else None
        if kept is None:
            todo.append(task)
        else:
            sessions[task.key] = kept
            result.resumed.append(task.name)
    if todo:
        requested = int(values.get("threads", default_of("threads")))
        workers = make_workers(options, requested, len(todo))
        result.workers = workers.description
        progress = StudyProgress(len(tasks), request.show_progress)
        try:
            for key in sessions:
                progress.finished(key)
            if isinstance(workers, DaskWorkers):
                check_shared_folder(workers, output)
            _run(workers, todo, progress, sessions, failures, result)
        finally:
            progress.close()
            workers.close()
    result.sessions = [sessions[key] for key in sorted(sessions)]
    result.failures = [failures[key] for key in sorted(failures)]
    overview = ""
    if len(result.sessions) > 1:  # a study: several sessions analysed
        study = write_study(result.sessions, result.failures, output, options.group_by)
        result.study_files, overview = study.files, study.overview_html
    if result.sessions:
        result.report = write_comparison_report(result.sessions, request.output, overview)
    return result


def _run(workers: Any, tasks: List[SessionTask], progress: StudyProgress,
         sessions: Dict[int, SessionOutputs], failures: Dict[int, str],
         result: BatchResult) -> None:
    """Run the tasks on the workers, gathering outputs and failures by key."""
    for task, outcome in workers.run(analyze_task, tasks, progress.event):
        key, outcome = _session_outcome(task, outcome)
        if outcome.fatal is not None:
            raise outcome.fatal
        result.peak_rss_mb = max(result.peak_rss_mb, outcome.peak_rss_mb)
        if outcome.outputs is not None:
            sessions[key] = outcome.outputs
            progress.finished(key, outcome.frames_read)
        else:
            failures[key] = outcome.failure
            progress.finished(key)


def _session_outcome(task: SessionTask, outcome: Any) -> Tuple[int, SessionOutcome]:
    """Turn what a runner returned for a task into a :class:`SessionOutcome`."""
    if isinstance(outcome, SessionOutcome):
        return task.key, outcome
    if isinstance(outcome, WorkerLost):
        return task.key, SessionOutcome(task.key, failure=f"{task.path}: {outcome.reason}")
    return task.key, SessionOutcome(  # raised outside analyze_task (e.g. unpickling)
        task.key, failure=f"{task.path}: could not be analysed on the worker "
                          f"({type(outcome).__name__}: {_one_line(outcome)})")
